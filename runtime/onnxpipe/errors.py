"""Every error onnxpipe raises on purpose. Catch ``OnnxpipeError`` to catch them all.

Hierarchy::

    OnnxpipeError
    ├── ModelFolderError              a model folder cannot be used as it is
    │   ├── ModelNotFoundError        no folder for that name or path
    │   ├── ManifestError             manifest.json missing, malformed, or of an unknown format_version
    │   ├── IntegrityError            a file is missing, has the wrong size or sha256, or escapes the folder
    │   ├── TaskMismatchError         the folder was not exported for the requested task
    │   ├── PrecisionUnavailableError the folder has no variant of the requested precision
    │   └── ModelLoadError            onnxruntime rejected an ONNX file, or tokenizers rejected tokenizer.json
    ├── ProviderUnavailableError      the requested execution provider is not installed or failed
    ├── UnknownTaskError              a task name that no pipeline implements (also a ValueError)
    ├── InputTooLongError             an input over the maximum, with truncation=False or a strategy that cannot
    │                                 cut it ('only_second' without a pair...) (also a ValueError)
    ├── ChatTemplateError             chat messages without a chat template, or one that fails (also a ValueError)
    │   └── ChatExtraMissingError     chat messages, and jinja2 (the chat extra) is not installed (also an
    │                                 ImportError)
    ├── GenerationArgumentError       a text-generation argument outside its valid range (also a ValueError)
    ├── InferenceError                onnxruntime failed while running a batch
    │   └── NonFiniteOutputError      the model computed NaN or inf (``.output``, ``.rows``: where)
    ├── BatchJobError                 `onnxpipe batch` cannot run as asked (format, column, a bad row with fail)
    ├── OutputFileError               a file a command writes (bench --json-out) is a folder, or exists without
    │                                 --force (also a ValueError)
    └── ExportError                   the export stage could not produce a model folder
        ├── ExportExtraMissingError   the export extra (torch, transformers, optimum-onnx, onnx) is not installed
        ├── UnsupportedArchitectureError  no export settings for that model type
        ├── UnsafeCheckpointError     pickled weights or remote code without the flag that allows them
        ├── OutputExistsError         the output folder exists and --force was not given
        └── ValidationError           an exported variant disagrees with PyTorch beyond tolerance

Bad Python types in the input (None, bytes, numbers, nested lists) raise the built-in ``TypeError``, naming
the index and the type; docs/reliability.md, "What each kind of input does", says what every kind of text does.
"""

from __future__ import annotations

__all__ = [
    "OnnxpipeError",
    "ModelFolderError",
    "ModelNotFoundError",
    "ManifestError",
    "IntegrityError",
    "TaskMismatchError",
    "PrecisionUnavailableError",
    "ModelLoadError",
    "ProviderUnavailableError",
    "UnknownTaskError",
    "InputTooLongError",
    "ChatTemplateError",
    "ChatExtraMissingError",
    "GenerationArgumentError",
    "InferenceError",
    "NonFiniteOutputError",
    "BatchJobError",
    "OutputFileError",
    "ExportError",
    "ExportExtraMissingError",
    "UnsupportedArchitectureError",
    "UnsafeCheckpointError",
    "OutputExistsError",
    "ValidationError",
]


class OnnxpipeError(Exception):
    """Base class of every error onnxpipe raises on purpose."""


class ModelFolderError(OnnxpipeError):
    """A model folder cannot be used as it is."""


class ModelNotFoundError(ModelFolderError):
    """No model folder exists for the given name or path."""


class ManifestError(ModelFolderError):
    """manifest.json is missing, malformed, or has an unknown format_version."""


class IntegrityError(ModelFolderError):
    """A listed file is missing, has the wrong size or sha256, or points outside the folder."""


class TaskMismatchError(ModelFolderError):
    """The model folder was not exported for the requested task."""


class PrecisionUnavailableError(ModelFolderError):
    """The model folder holds no ONNX variant of the requested precision."""


class ModelLoadError(ModelFolderError):
    """onnxruntime refused an ONNX file of the folder, or the tokenizers library refused its tokenizer.json."""


class ProviderUnavailableError(OnnxpipeError):
    """The requested execution provider is not available or failed to initialise."""


class UnknownTaskError(OnnxpipeError, ValueError):
    """No pipeline implements the requested task."""


class InputTooLongError(OnnxpipeError, ValueError):
    """An input has more tokens than allowed and truncation was turned off, or cannot cut it (only_first/second)."""


class InferenceError(OnnxpipeError):
    """onnxruntime failed while running a batch."""


class NonFiniteOutputError(InferenceError):
    """The model computed NaN or inf; ``output`` names the output, ``rows`` the batch rows (or inputs)."""

    output: str = ""
    rows: list[int] = []


class BatchJobError(OnnxpipeError, ValueError):
    """A batch job cannot run as asked: unknown input format, missing column, or a bad row with on_error='fail'."""


class ExportError(OnnxpipeError):
    """The export stage could not produce a model folder."""


class ExportExtraMissingError(ExportError, ImportError):
    """The export extra is not installed."""


class UnsupportedArchitectureError(ExportError):
    """The checkpoint's model type has no export settings."""


class UnsafeCheckpointError(ExportError):
    """The checkpoint needs pickled weights or remote code and the user did not allow it."""


class OutputExistsError(ExportError):
    """The output folder already exists and overwriting was not requested."""


class ValidationError(ExportError):
    """An exported variant disagrees with the PyTorch model beyond tolerance."""


class ChatTemplateError(OnnxpipeError, ValueError):
    """Chat messages were given but the folder has no chat template, or the template could not render them."""


class ChatExtraMissingError(ChatTemplateError, ImportError):
    """Chat messages were given and jinja2, which renders chat templates, is not installed (the ``chat``
    extra)."""


class GenerationArgumentError(OnnxpipeError, ValueError):
    """A text-generation argument (max_new_tokens, temperature, top_k, top_p, repetition_penalty, ...) is outside
    its valid range; the message names it and the range."""


class OutputFileError(OnnxpipeError, ValueError):
    """A file a command was told to write is a folder, or exists and --force was not given."""
