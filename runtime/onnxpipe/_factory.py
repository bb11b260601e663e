"""pipeline(): resolve the model folder for a task, check it serves that task, build the task's pipeline.

Nothing is exported or downloaded here: a missing default model is an error that says how to export it.
"""

from __future__ import annotations

import os
from pathlib import Path

from ._manifest import load_manifest
from ._model import OnnxModel
from ._pipelines import Pipeline
from ._pipelines._base import DEFAULT_BATCH_TOKENS
from ._resolve import find_model, resolve_model
from ._tasks import TABLE, canonical_task, folder_task
from ._tokenizer import AutoTokenizer
from .errors import ModelNotFoundError, TaskMismatchError


def _default_folder(task: str) -> Path:
    t = TABLE[task]
    found = find_model(t.default_model) if t.default_model else None
    if found is None:
        export_as = folder_task(task)
        raise ModelNotFoundError(
            f"the default {task} model {t.default_model!r} is not exported yet. Run `make demo` in a source "
            f"checkout, or: pip install 'onnxpipe[export]' && onnxpipe export {t.default_source} --task {export_as} "
            f"--out DIR, then pipeline({task!r}, model=DIR)"
        )
    return found


def pipeline(task: str, model: str | os.PathLike[str] | None = None, device: str = "cpu", precision: str | None = None,
             batch_size: int = 32, max_batch_tokens: int = DEFAULT_BATCH_TOKENS, threads: int | None = None,
             verify: bool = True) -> Pipeline:
    """Build a pipeline like ``transformers.pipeline``, running on onnxruntime.

    ``model``: a model folder path or name (default: the embedded model for the task). ``device``: "cpu",
    "cuda" or "auto". ``precision``: "int8", "fp32" or "fp16" (default int8 on CPU, fp16 else fp32 on CUDA).
    ``verify=False`` skips the sha256 check at load.

    Example:
        >>> classifier = pipeline("sentiment-analysis")
        >>> classifier(["I've been waiting for a HuggingFace course my whole life.", "I hate this so much!"])
        [{'label': 'POSITIVE', 'score': 0.84...}, {'label': 'NEGATIVE', 'score': 0.99...}]
    """
    name = canonical_task(task)
    folder = _default_folder(name) if model is None else resolve_model(model)
    manifest = load_manifest(folder, verify=verify)
    needed = folder_task(name)
    if needed not in manifest.tasks:
        raise TaskMismatchError(
            f"{folder} was exported for {manifest.tasks}, not {needed!r} (needed by {task!r}). "
            f"Export the checkpoint for it: onnxpipe export SOURCE --task {needed} --out DIR"
        )
    onnx_model = OnnxModel(manifest, device=device, precision=precision, threads=threads)
    return TABLE[name].pipeline(onnx_model, AutoTokenizer.from_manifest(manifest), batch_size=batch_size,
                                max_batch_tokens=max_batch_tokens)
