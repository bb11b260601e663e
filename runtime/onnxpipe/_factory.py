"""pipeline(): resolve the model folder for a task, check it serves that task, build the task's pipeline.

Nothing is exported or downloaded here: a missing default model is an error that says how to export it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ._manifest import Manifest, load_manifest
from ._model import OnnxModel
from ._pipelines import Pipeline
from ._pipelines._base import DEFAULT_BATCH_TOKENS
from ._resolve import find_model, resolve_model
from ._session_options import SessionOptions
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


def _device(device: Any) -> str:
    """transformers' device forms: -1 or "cpu" -> cpu; 0 / "cuda" / "cuda:0" -> cuda; "auto" as given."""
    if device is None:
        return "cpu"
    if isinstance(device, int) and not isinstance(device, bool):
        if device == -1:
            return "cpu"
        if device == 0:
            return "cuda"
        raise ValueError(f"device={device}: onnxpipe runs on one GPU (device=0 or 'cuda') or the CPU (device=-1)")
    if isinstance(device, str) and device in ("cpu", "cuda", "auto", "cuda:0"):
        return "cuda" if device == "cuda:0" else device
    raise ValueError(f"device={device!r}: use 'cpu' (or -1), 'cuda' (or 0, 'cuda:0') or 'auto'")


def _construction_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """transformers' pipeline(...) keyword arguments that are call arguments, as the defaults of every call."""
    kwargs = dict(kwargs)
    framework = kwargs.pop("framework", None)
    if framework not in (None, "onnx"):
        raise ValueError(
            f"framework={framework!r}: onnxpipe runs ONNX models on onnxruntime, without "
            "torch/tensorflow; leave framework unset"
        )
    for torch_only in ("device_map", "torch_dtype", "dtype"):
        if torch_only in kwargs:
            raise TypeError(
                f"{torch_only}= is PyTorch's; onnxpipe picks the device with device= and the weights' type with "
                "precision= ('fp32', 'fp16', 'int8', 'int4': the variants the folder has)"
            )
    if kwargs.pop("use_fast", True) is not True:
        raise ValueError("use_fast=False: onnxpipe has only the fast (Rust) tokenizer, which the export validated")
    for ignored in ("trust_remote_code", "revision", "model_kwargs", "num_workers"):
        kwargs.pop(ignored, None)  # no effect here: models are local exported folders, batches are ours
    return kwargs  # grouped_entities / ignore_subwords: token-classification's call arguments, as in transformers


def _model_folder(task: str | None, model: Any) -> tuple[str, Path, OnnxModel | None]:
    if isinstance(model, OnnxModel):
        folder, loaded = model.manifest.folder, model
    elif model is None:
        if task is None:
            raise TypeError("pipeline() needs a task or a model (a folder, whose manifest names its task)")
        return canonical_task(task), _default_folder(canonical_task(task)), None
    elif isinstance(model, (str, os.PathLike)):
        folder, loaded = resolve_model(model), None
    else:
        raise TypeError(
            f"model={type(model).__name__}: pass a model folder path or name, or an onnxpipe model "
            "(AutoModel*.from_pretrained); transformers/PyTorch models cannot run here"
        )
    if task is None:
        task = (loaded.manifest if loaded is not None else load_manifest(folder, verify=False)).task
    return canonical_task(task), folder, loaded


def _tokenizer(tokenizer: Any, folder: Path, manifest: Manifest) -> AutoTokenizer:
    if tokenizer is None:
        return AutoTokenizer.from_manifest(manifest)
    if isinstance(tokenizer, AutoTokenizer):
        return tokenizer
    if isinstance(tokenizer, (str, os.PathLike)):
        if Path(resolve_model(tokenizer)).resolve() != Path(folder).resolve():
            raise ValueError(
                f"tokenizer={str(tokenizer)!r} is not the model folder {folder}: an exported folder's "
                "model was validated with its own tokenizer, so onnxpipe uses that one; omit tokenizer="
            )
        return AutoTokenizer.from_manifest(manifest)
    raise TypeError(
        f"tokenizer={type(tokenizer).__name__}: pass an onnxpipe AutoTokenizer or the model folder; "
        "transformers tokenizers are not used (the export validated the folder's tokenizer.json)"
    )


def pipeline(
    task: str | None = None,
    model: Any = None,
    tokenizer: Any = None,
    device: Any = None,
    precision: str | None = None,
    batch_size: int = 32,
    max_batch_tokens: int = DEFAULT_BATCH_TOKENS,
    threads: int | None = None,
    verify: bool = True,
    execution: str = "auto",
    profile: str = "default",
    format: str = "onnx",
    **kwargs: Any,
) -> Pipeline:
    """Build a pipeline like ``transformers.pipeline``, running on onnxruntime.

    ``task``: optional when ``model`` is a folder (its manifest names the task). ``model``: a model folder
    path or name, or a loaded ``AutoModel*`` (default: the embedded model for the task). ``tokenizer``: the
    folder's own (a path to that folder, or an ``AutoTokenizer``). ``device``: "cpu" or -1, "cuda" or 0, or
    "auto". ``precision``: "int8", "int8-exact" (8-bit weights, float arithmetic: the same numbers on every
    CPU), "fp32" or "fp16" (default int8 on CPU, fp16 else fp32 on CUDA).
    ``profile``: "default" (lowest latency) or "low-power" (one thread that does not spin: ~0 CPU between
    requests). ``format``: "onnx" or "ort" (the variant's ORT-format copy, written by ``onnxpipe export --ort``).
    ``execution``: "auto" (default) runs dynamic-int8 inputs each as its own batch of one on a thread pool, so
    an answer never depends on the rest of the batch, and everything else in length-sorted padded batches;
    "alone" or "batched" force one way. ``verify=False`` skips the sha256 check at load. Other keyword
    arguments (``top_k``, ``aggregation_strategy``, ``grouped_entities``...) become the defaults of every call,
    as in transformers.

    Example:
        >>> classifier = pipeline("sentiment-analysis")
        >>> classifier(["I've been waiting for a HuggingFace course my whole life.", "I hate this so much!"])
        [{'label': 'POSITIVE', 'score': 0.84...}, {'label': 'NEGATIVE', 'score': 0.99...}]
    """
    options = SessionOptions(
        device=_device(device),
        precision=precision,
        threads=threads,
        verify=verify,
        profile=profile,
        format=format,
        execution=execution,
    )
    return build_pipeline(
        task, model, options, tokenizer=tokenizer, batch_size=batch_size, max_batch_tokens=max_batch_tokens, **kwargs
    )


def build_pipeline(
    task: str | None = None,
    model: Any = None,
    options: SessionOptions = SessionOptions(),
    *,
    tokenizer: Any = None,
    batch_size: int = 32,
    max_batch_tokens: int = DEFAULT_BATCH_TOKENS,
    **kwargs: Any,
) -> Pipeline:
    """``pipeline()`` with its session settings as one value: what the CLI, bench and batch jobs call with the
    options they parsed (``SessionOptions.from_args``). ``options`` has no effect when ``model`` is an
    already loaded ``AutoModel*``.

    Example:
        >>> build_pipeline("text-classification", "minilm-sst2", SessionOptions(precision="fp32"))
    """
    if config := kwargs.pop("config", None):
        raise ValueError(f"config={config!r}: the exported folder's config.json is the model's; omit config=")
    name, folder, loaded = _model_folder(task, model)
    manifest = loaded.manifest if loaded is not None else load_manifest(folder, verify=options.verify)
    needed = folder_task(name)
    if needed not in manifest.tasks:
        raise TaskMismatchError(
            f"{folder} was exported for {manifest.tasks}, not {needed!r} (needed by {task!r}). "
            f"Export the checkpoint for it: onnxpipe export SOURCE --task {needed} --out DIR"
        )
    onnx_model = loaded or TABLE[name].pipeline.load_model(manifest, options)
    pipe = TABLE[name].pipeline(
        onnx_model, _tokenizer(tokenizer, folder, manifest), batch_size=batch_size, max_batch_tokens=max_batch_tokens
    )
    if isinstance(task, str):
        pipe.use_task(task)
    defaults = _construction_kwargs(kwargs)
    if defaults:
        pipe.set_defaults(**defaults)
    return pipe
