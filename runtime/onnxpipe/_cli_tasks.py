"""Per-task options of ``onnxpipe predict``: what an input line is, and which flags become pipeline arguments.

question-answering reads ``--question/--context`` or JSON lines ``{"question": ..., "context": ...}``;
zero-shot-classification takes ``--candidate-labels a,b,c``; token-classification ``--aggregation-strategy``.
"""

from __future__ import annotations

import argparse
import json
from typing import Any, Iterable, Iterator


def add_task_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("task options")
    g.add_argument("--question", help="question-answering: the question (with --context)")
    g.add_argument("--context", help="question-answering: the context (with --question)")
    g.add_argument("--candidate-labels", help="zero-shot-classification: comma-separated labels (implies the task)")
    g.add_argument("--hypothesis-template", help="zero-shot-classification: e.g. 'This example is {}.'")
    g.add_argument("--multi-label", action="store_true", help="zero-shot-classification: labels scored independently")
    g.add_argument("--aggregation-strategy", choices=["none", "simple", "first", "average", "max"],
                   help="token-classification: how sub-word tokens become entities (default none)")


def implied_task(args: argparse.Namespace) -> str | None:
    """The task the flags name, when --task is not given."""
    if args.candidate_labels is not None:
        return "zero-shot-classification"
    if args.question is not None or args.context is not None:
        return "question-answering"
    return None


def question_answer_inputs(args: argparse.Namespace, lines: Iterable[str] | None) -> Iterable[Any]:
    if (args.question is None) != (args.context is None):
        raise ValueError("question-answering needs both --question and --context (or JSON lines on input)")
    if args.question is not None:
        if lines is not None:
            raise ValueError("give --question/--context or JSON lines as input, not both")
        return [{"question": args.question, "context": args.context}]
    if lines is None:
        raise ValueError('no input: pass --question Q --context C, or JSON lines {"question": ..., "context": ...}')
    return _json_lines(lines)


def _json_lines(lines: Iterable[str]) -> Iterator[Any]:
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f'input line {n} is not JSON ({e}); question-answering reads one '
                             '{"question": ..., "context": ...} object per line') from None
        yield item


def task_kwargs(task: str, args: argparse.Namespace) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    if task == "zero-shot-classification":
        if args.candidate_labels is None:
            raise ValueError("zero-shot-classification needs --candidate-labels a,b,c")
        kwargs["candidate_labels"] = args.candidate_labels
        if args.hypothesis_template is not None:
            kwargs["hypothesis_template"] = args.hypothesis_template
        kwargs["multi_label"] = args.multi_label
    elif args.candidate_labels is not None or args.hypothesis_template is not None or args.multi_label:
        raise ValueError(f"--candidate-labels, --hypothesis-template and --multi-label are for "
                         f"zero-shot-classification, not {task}")
    if args.aggregation_strategy is not None:
        if task not in ("token-classification", "ner"):
            raise ValueError(f"--aggregation-strategy is for token-classification, not {task}")
        kwargs["aggregation_strategy"] = args.aggregation_strategy
    return kwargs
