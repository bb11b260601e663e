"""One module per task pipeline; the task table that names them is ``onnxpipe._tasks``."""

from __future__ import annotations

from ._base import Pipeline
from .feature_extraction import FeatureExtractionPipeline
from .fill_mask import FillMaskPipeline
from .question_answering import QuestionAnsweringPipeline
from .sentence_embeddings import SentenceEmbeddingsPipeline
from .text_classification import TextClassificationPipeline
from .text_generation import TextGenerationPipeline
from .token_classification import TokenClassificationPipeline
from .zero_shot_classification import ZeroShotClassificationPipeline

__all__ = [
    "Pipeline",
    "FeatureExtractionPipeline",
    "FillMaskPipeline",
    "QuestionAnsweringPipeline",
    "SentenceEmbeddingsPipeline",
    "TextClassificationPipeline",
    "TextGenerationPipeline",
    "TokenClassificationPipeline",
    "ZeroShotClassificationPipeline",
]
