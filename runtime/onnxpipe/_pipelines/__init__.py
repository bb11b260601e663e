"""One module per task pipeline; the task table that names them is ``onnxpipe._tasks``."""

from __future__ import annotations

from ._base import Pipeline
from .feature_extraction import FeatureExtractionPipeline
from .fill_mask import FillMaskPipeline
from .question_answering import QuestionAnsweringPipeline
from .sentence_embeddings import SentenceEmbeddingsPipeline
from .summarization import SummarizationPipeline
from .text2text_generation import Text2TextGenerationPipeline
from .text_classification import TextClassificationPipeline
from .text_generation import TextGenerationPipeline
from .token_classification import TokenClassificationPipeline
from .translation import TranslationPipeline
from .zero_shot_classification import ZeroShotClassificationPipeline

__all__ = [
    "Pipeline",
    "FeatureExtractionPipeline",
    "FillMaskPipeline",
    "QuestionAnsweringPipeline",
    "SentenceEmbeddingsPipeline",
    "SummarizationPipeline",
    "Text2TextGenerationPipeline",
    "TextClassificationPipeline",
    "TextGenerationPipeline",
    "TokenClassificationPipeline",
    "TranslationPipeline",
    "ZeroShotClassificationPipeline",
]
