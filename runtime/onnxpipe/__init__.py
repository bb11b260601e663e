"""onnxpipe: Hugging Face transformer pipelines on onnxruntime, without PyTorch.

    >>> from onnxpipe import pipeline
    >>> pipeline("sentiment-analysis")("I love this!")
    [{'label': 'POSITIVE', 'score': 0.99...}]

This package imports onnxruntime, tokenizers and numpy only; the export stage is a separate package
(the ``onnxpipe[export]`` extra).
"""

from __future__ import annotations

from . import errors
from ._batch_encoding import BatchEncoding
from ._factory import pipeline
from ._manifest import FORMAT_VERSION
from ._model import (
    AutoModel,
    AutoModelForMaskedLM,
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    ModelOutput,
)
from ._pipelines import Pipeline
from ._session_options import SessionOptions
from ._tasks import TASKS
from ._tokenizer import AutoTokenizer

__version__ = "0.1.0"

__all__ = [
    "pipeline",
    "AutoTokenizer",
    "AutoModel",
    "AutoModelForSequenceClassification",
    "AutoModelForTokenClassification",
    "AutoModelForQuestionAnswering",
    "AutoModelForMaskedLM",
    "BatchEncoding",
    "ModelOutput",
    "Pipeline",
    "SessionOptions",
    "TASKS",
    "FORMAT_VERSION",
    "errors",
    "__version__",
]
