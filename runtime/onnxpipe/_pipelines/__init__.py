"""The task registry: task name -> pipeline class, and the aliases transformers users type."""

from __future__ import annotations

from ..errors import UnknownTaskError
from ._base import Pipeline
from .feature_extraction import FeatureExtractionPipeline
from .fill_mask import FillMaskPipeline
from .question_answering import QuestionAnsweringPipeline
from .sentence_embeddings import SentenceEmbeddingsPipeline
from .text_classification import TextClassificationPipeline
from .token_classification import TokenClassificationPipeline
from .zero_shot_classification import ZeroShotClassificationPipeline

TASKS: dict[str, type[Pipeline]] = {
    "text-classification": TextClassificationPipeline,
    "feature-extraction": FeatureExtractionPipeline,
    "sentence-embeddings": SentenceEmbeddingsPipeline,
    "fill-mask": FillMaskPipeline,
    "token-classification": TokenClassificationPipeline,
    "question-answering": QuestionAnsweringPipeline,
    "zero-shot-classification": ZeroShotClassificationPipeline,
}

ALIASES: dict[str, str] = {
    "sentiment-analysis": "text-classification",
    "embeddings": "sentence-embeddings",
    "ner": "token-classification",
}

# Which exported graph serves a task (a sentence-embeddings pipeline reads a feature-extraction folder).
EXPORT_TASK: dict[str, str] = {
    "text-classification": "text-classification",
    "feature-extraction": "feature-extraction",
    "sentence-embeddings": "feature-extraction",
    "fill-mask": "fill-mask",
    "token-classification": "token-classification",
    "question-answering": "question-answering",
    # An NLI text-classification graph; the export lists this task only when a label starts with "entail".
    "zero-shot-classification": "zero-shot-classification",
}


def canonical_task(task: str) -> str:
    name = ALIASES.get(task, task)
    if name not in TASKS:
        raise UnknownTaskError(f"unknown task {task!r}; valid tasks: {sorted([*TASKS, *ALIASES])}")
    return name
