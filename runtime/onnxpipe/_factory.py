"""pipeline(): resolve the model folder for a task, check it serves that task, build the task's pipeline."""

from __future__ import annotations

import importlib
import logging
import os
import sys
from pathlib import Path

from ._manifest import load_manifest
from ._model import OnnxModel
from ._pipelines import EXPORT_TASK, TASKS, Pipeline, canonical_task
from ._pipelines._base import DEFAULT_BATCH_TOKENS
from ._resolve import DEFAULT_MODELS, find_model, resolve_model
from ._tokenizer import AutoTokenizer
from .errors import ModelNotFoundError, TaskMismatchError

log = logging.getLogger("onnxpipe")


def _export_default(task: str, name: str, source: str) -> Path | None:
    """With the export extra installed, export a missing default model into $ONNXPIPE_HOME (said on stderr)."""
    try:
        export = importlib.import_module("onnxpipe_export")
        export.require_extra()
    except ImportError:
        return None
    home = Path(os.environ.get("ONNXPIPE_HOME") or Path.home() / ".cache" / "onnxpipe")
    out = home / name
    print(f"onnxpipe: no local {name!r} model; exporting {source} into {out} (export extra installed)",
          file=sys.stderr)
    export.export(source, task=task, out=out)
    return out


def pipeline(task: str, model: str | os.PathLike | None = None, device: str = "cpu", precision: str | None = None,
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
    export_task = EXPORT_TASK[name]
    if model is None:
        default, source = DEFAULT_MODELS[export_task]
        folder = find_model(default) or _export_default(export_task, default, source)
        if folder is None:
            raise ModelNotFoundError(
                f"the default {export_task} model {default!r} is not exported yet. Run `make demo` in a source "
                f"checkout, or: pip install 'onnxpipe[export]' && onnxpipe export {source} --task {export_task} "
                f"--out DIR, then pipeline({task!r}, model=DIR)"
            )
    else:
        folder = resolve_model(model)
    manifest = load_manifest(folder, verify=verify)
    if export_task not in manifest.tasks:
        raise TaskMismatchError(
            f"{folder} was exported for {manifest.tasks}, not {export_task!r} (needed by {task!r}). "
            f"Export the checkpoint for it: onnxpipe export SOURCE --task {export_task} --out DIR"
        )
    onnx_model = OnnxModel(manifest, device=device, precision=precision, threads=threads)
    return TASKS[name](onnx_model, AutoTokenizer.from_manifest(manifest), batch_size=batch_size,
                       max_batch_tokens=max_batch_tokens)
