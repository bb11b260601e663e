"""Per-task options of ``onnxpipe predict``, derived from the task table (``_tasks.TABLE``).

A task's flags become its pipeline arguments; a flag marked ``implies_task`` selects the task when --task
is not given. question-answering reads ``--question/--context`` or JSON lines ``{"question", "context"}``.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable, Iterator
from typing import Any

from ._tasks import TABLE, Option


def _options() -> list[tuple[str, Option]]:
    return [(name, o) for name, t in TABLE.items() for o in t.options]


def add_task_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("task options")
    for task, o in _options():
        kw: dict[str, Any] = {"help": f"{task}: {o.help}", "dest": o.kwarg}
        if o.store_true:
            kw["action"] = "store_true"
            kw["default"] = None
        if o.choices:
            kw["choices"] = list(o.choices)
        g.add_argument(o.flag, **kw)


def _given(args: argparse.Namespace, o: Option) -> bool:
    return getattr(args, o.kwarg, None) not in (None, False)


def implied_task(args: argparse.Namespace) -> str | None:
    """The task the flags name, when --task is not given."""
    return next((task for task, o in _options() if o.implies_task and _given(args, o)), None)


def task_inputs(task: str, args: argparse.Namespace, lines: Iterable[str] | None) -> Iterable[Any] | None:
    """What the pipeline iterates over: the lines themselves, or one object per line for structured tasks."""
    if TABLE[task].cli_input == "question-context":
        return _question_answer_inputs(args, lines)
    return lines


def _question_answer_inputs(args: argparse.Namespace, lines: Iterable[str] | None) -> Iterable[Any]:
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
            raise ValueError(
                f"input line {n} is not JSON ({e}); question-answering reads one "
                '{"question": ..., "context": ...} object per line'
            ) from None
        yield item


def task_kwargs(task: str, args: argparse.Namespace) -> dict[str, Any]:
    """The pipeline arguments of ``task``'s flags; a flag of another task is an error naming its task."""
    kwargs: dict[str, Any] = {}
    for o in TABLE[task].options:
        if o.required and not _given(args, o):
            raise ValueError(f"{task} needs {o.flag} ({o.help})")
    for owner, o in _options():
        if not _given(args, o):
            continue
        if owner != task:
            raise ValueError(f"{o.flag} is for {owner}, not {task}")
        if TABLE[task].cli_input == "question-context" and o.kwarg in ("question", "context"):
            continue  # inputs, not arguments
        kwargs[o.kwarg] = getattr(args, o.kwarg)
    return kwargs
