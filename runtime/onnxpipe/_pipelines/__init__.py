"""The task registry: task name -> pipeline class, and the aliases transformers users type."""

from __future__ import annotations

from ..errors import UnknownTaskError
from ._base import Pipeline
from .feature_extraction import FeatureExtractionPipeline
from .sentence_embeddings import SentenceEmbeddingsPipeline
from .text_classification import TextClassificationPipeline

TASKS: dict[str, type[Pipeline]] = {
    "text-classification": TextClassificationPipeline,
    "feature-extraction": FeatureExtractionPipeline,
    "sentence-embeddings": SentenceEmbeddingsPipeline,
}

ALIASES: dict[str, str] = {
    "sentiment-analysis": "text-classification",
    "embeddings": "sentence-embeddings",
}

# Which exported graph serves a task (a sentence-embeddings pipeline reads a feature-extraction folder).
EXPORT_TASK: dict[str, str] = {
    "text-classification": "text-classification",
    "feature-extraction": "feature-extraction",
    "sentence-embeddings": "feature-extraction",
}


def canonical_task(task: str) -> str:
    name = ALIASES.get(task, task)
    if name not in TASKS:
        raise UnknownTaskError(f"unknown task {task!r}; valid tasks: {sorted([*TASKS, *ALIASES])}")
    return name
