"""The one task table: a record per task, from which every other task table of both halves is derived.

Adding a task is one pipeline module plus one ``Task`` entry here; when it needs a new kind of graph, also one
``Graph`` entry here and the transformers class that loads it in the export stage's ``_registry.MODEL_CLASSES``.
``tests/test_task_table.py`` checks that the two halves, the CLI and the test checkpoints agree.

Two kinds of name: a *graph* is what the export stage writes (``onnxpipe export --task``: the head on top of
the encoder and its outputs); a *task* is what ``pipeline(task)`` runs. A folder lists the tasks it serves in
its manifest (``tasks``): a classification graph serves text-classification and feature-extraction, and
zero-shot-classification too when its labels name an entailment class.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from ._pipelines import (
    FeatureExtractionPipeline,
    FillMaskPipeline,
    Pipeline,
    QuestionAnsweringPipeline,
    SentenceEmbeddingsPipeline,
    SummarizationPipeline,
    Text2TextGenerationPipeline,
    TextClassificationPipeline,
    TextGenerationPipeline,
    TokenClassificationPipeline,
    TranslationPipeline,
    ZeroShotClassificationPipeline,
)
from .errors import UnknownTaskError


@dataclass(frozen=True)
class Graph:
    """A kind of exported graph: its head outputs (every graph also outputs ``last_hidden_state``) and how
    the export checks it against PyTorch."""

    name: str
    outputs: tuple[str, ...]
    # Whether head outputs have a token axis (compared on real tokens only) or one row per sequence.
    per_token: bool = False
    labels: bool = False  # the manifest records id2label (classification heads)
    # An encoder graph also outputs last_hidden_state (so its folder serves feature-extraction); a decoder
    # graph outputs logits and its key/value cache only.
    encoder: bool = True


@dataclass(frozen=True)
class Option:
    """One ``onnxpipe predict`` flag that becomes a pipeline argument of its task."""

    flag: str
    kwarg: str
    help: str
    choices: tuple[str, ...] | None = None
    store_true: bool = False
    implies_task: bool = False  # giving the flag selects the task when --task is not given
    required: bool = False  # the task cannot run without it


@dataclass(frozen=True)
class Task:
    """A pipeline task: its class, the graph that serves it, its aliases, default model and CLI options."""

    name: str
    pipeline: type[Pipeline]
    graph: str
    aliases: tuple[str, ...] = ()
    # The embedded model name (looked up like model=NAME) and the checkpoint the export builds it from.
    default_model: str | None = None
    default_source: str | None = None
    # A folder serves the task only when one of its labels starts with this (zero-shot needs an NLI head).
    needs_label: str | None = None
    options: tuple[Option, ...] = ()
    # What one input line of `onnxpipe predict` is: a text, or a {"question", "context"} JSON object.
    cli_input: str = "text"


GRAPHS: dict[str, Graph] = {
    g.name: g
    for g in (
        Graph("text-classification", ("logits",), labels=True),
        Graph("feature-extraction", ()),
        Graph("fill-mask", ("logits",), per_token=True),
        Graph("token-classification", ("logits",), per_token=True, labels=True),
        Graph("question-answering", ("start_logits", "end_logits"), per_token=True),
        Graph("text-generation", ("logits",), per_token=True, encoder=False),
        # An encoder graph (last_hidden_state) plus a merged decoder graph with past key values (the variant's
        # ``decoder``); not an encoder task's graph, so feature-extraction is not claimed.
        Graph("text2text-generation", ("logits",), per_token=True, encoder=False),
    )
}

_MINILM_FE = ("all-minilm-l6-v2", "sentence-transformers/all-MiniLM-L6-v2")

TABLE: dict[str, Task] = {
    t.name: t
    for t in (
        Task(
            "text-classification",
            TextClassificationPipeline,
            "text-classification",
            aliases=("sentiment-analysis",),
            default_model="minilm-sst2",
            default_source="../shared/checkpoints/minilm-sst2",
        ),
        Task(
            "feature-extraction",
            FeatureExtractionPipeline,
            "feature-extraction",
            default_model=_MINILM_FE[0],
            default_source=_MINILM_FE[1],
        ),
        Task(
            "sentence-embeddings",
            SentenceEmbeddingsPipeline,
            "feature-extraction",
            aliases=("embeddings",),
            default_model=_MINILM_FE[0],
            default_source=_MINILM_FE[1],
        ),
        # transformers' own pipeline defaults where our architectures cover them.
        Task(
            "fill-mask",
            FillMaskPipeline,
            "fill-mask",
            default_model="distilroberta-base",
            default_source="distilbert/distilroberta-base",
        ),
        Task(
            "token-classification",
            TokenClassificationPipeline,
            "token-classification",
            aliases=("ner",),
            default_model="bert-large-cased-finetuned-conll03-english",
            default_source="dbmdz/bert-large-cased-finetuned-conll03-english",
            options=(
                Option(
                    "--aggregation-strategy",
                    "aggregation_strategy",
                    "how sub-word tokens become entities (default none)",
                    choices=("none", "simple", "first", "average", "max"),
                ),
            ),
        ),
        Task(
            "question-answering",
            QuestionAnsweringPipeline,
            "question-answering",
            default_model="distilbert-base-cased-distilled-squad",
            default_source="distilbert/distilbert-base-cased-distilled-squad",
            cli_input="question-context",
            options=(
                Option("--question", "question", "the question (with --context)", implies_task=True),
                Option("--context", "context", "the context (with --question)", implies_task=True),
            ),
        ),
        # transformers' default (BART) is not exportable here: a DeBERTa-v3 NLI cross-encoder instead.
        Task(
            "zero-shot-classification",
            ZeroShotClassificationPipeline,
            "text-classification",
            needs_label="entail",
            default_model="nli-deberta-v3-small",
            default_source="cross-encoder/nli-deberta-v3-small",
            options=(
                Option(
                    "--candidate-labels",
                    "candidate_labels",
                    "comma-separated labels (implies the task)",
                    implies_task=True,
                    required=True,
                ),
                Option("--hypothesis-template", "hypothesis_template", "e.g. 'This example is {}.'"),
                Option("--multi-label", "multi_label", "labels scored independently", store_true=True),
            ),
        ),
        # Causal LM with a key/value cache; `onnxpipe generate` is its own command (_cli_generate.py).
        Task(
            "text-generation",
            TextGenerationPipeline,
            "text-generation",
            default_model="gpt2",
            default_source="openai-community/gpt2",
        ),
        # Encoder-decoders (T5, BART, Marian): one folder serves all three; transformers' defaults.
        Task(
            "text2text-generation",
            Text2TextGenerationPipeline,
            "text2text-generation",
            default_model="t5-base",
            default_source="google-t5/t5-base",
        ),
        Task(
            "summarization",
            SummarizationPipeline,
            "text2text-generation",
            default_model="distilbart-cnn-12-6",
            default_source="sshleifer/distilbart-cnn-12-6",
        ),
        Task(
            "translation",
            TranslationPipeline,
            "text2text-generation",
            default_model="t5-base",
            default_source="google-t5/t5-base",
        ),
    )
}

# Derived tables. ------------------------------------------------------------------------------------------
TASKS: dict[str, type[Pipeline]] = {name: t.pipeline for name, t in TABLE.items()}
ALIASES: dict[str, str] = {alias: t.name for t in TABLE.values() for alias in t.aliases}


def canonical_task(task: str) -> str:
    """The table's name for a task or alias; an unknown name lists the valid ones. ``translation_xx_to_yy`` is
    translation (the pipeline reads the full name's settings, ``Pipeline.use_task``)."""
    if isinstance(task, str) and re.fullmatch(r"translation_[^_]+_to_[^_]+", task):
        return "translation"
    name = ALIASES.get(task, task) if isinstance(task, str) else task
    if name not in TABLE:
        raise UnknownTaskError(f"unknown task {task!r}; valid tasks: {sorted([*TABLE, *ALIASES])}")
    return name


def folder_task(task: str) -> str:
    """The name a model folder lists in its manifest ``tasks`` when it serves ``task``.

    It is also the ``onnxpipe export --task`` that makes such a folder (sentence-embeddings reads a
    feature-extraction folder; zero-shot an NLI classification folder exported as zero-shot-classification).
    """
    t = TABLE[canonical_task(task)]
    return t.name if t.name == t.graph or t.needs_label else t.graph


def graph_of(task: str) -> Graph:
    return GRAPHS[TABLE[canonical_task(task)].graph]


def served_tasks(graph: str, labels: Mapping[int, str] | None = None) -> list[str]:
    """The folder tasks a folder of ``graph`` serves: its own, the conditional ones its labels allow, and
    feature-extraction (every graph also outputs ``last_hidden_state``)."""
    names = {str(v).lower() for v in (labels or {}).values()}
    served = [graph]
    for t in TABLE.values():
        if t.graph == graph and t.needs_label and any(n.startswith(t.needs_label) for n in names):
            served.append(t.name)
    if graph != "feature-extraction" and GRAPHS[graph].encoder:
        served.append("feature-extraction")
    return served


def export_task_names() -> dict[str, str]:
    """Every name ``onnxpipe export --task`` accepts -> the graph it writes."""
    names = {g: g for g in GRAPHS}
    for t in TABLE.values():
        names.setdefault(t.name, t.graph)
        for alias in t.aliases:
            names.setdefault(alias, t.graph)
    return names
