"""``onnxpipe export --ort``: an ORT-format copy of each CPU variant, and the operator config of a minimal build.

Each ``onnx/<name>.onnx`` gets ``onnx/<name>.ort``, saved by the runtime's own session code (save_ort_format) at
the level and with the disabled optimizers the runtime loads the .onnx with, so the two compute the same; the
export checks that on the validation sentences and refuses a copy that differs. ``required_operators.config``
lists the operators of every .ort file (onnxruntime's create_config_from_models), the input of a minimal build's
``--include_ops_by_config``. fp16 gets no copy: it is meant for CUDA, and saved by the CPU provider it would hold
a Cast to fp32 around every operator without an fp16 CPU kernel.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from onnxpipe._for_export import OPTIMIZATION_LEVEL, Manifest, OnnxModel, OrtFormat, save_ort_format
from onnxpipe.errors import ValidationError

from ._sentences import VALIDATION_SENTENCES

CONFIG_NAME = "required_operators.config"
NO_ORT = {"fp16": "meant for CUDA; the CPU provider would save it with Casts to fp32 baked in"}


def ort_path(onnx_file: str) -> str:
    """``onnx/model_quantized.onnx`` -> ``onnx/model_quantized.ort`` (same folder, same base name)."""
    return Path(onnx_file).with_suffix(".ort").as_posix()


def write_ort_files(manifest: Manifest, precisions: list[str], tokenizer: Any = None) -> Manifest:
    """Write the .ort copy of every variant in ``precisions`` (but fp16) and the operator config; return the
    manifest with each variant's ``ort`` entry. With ``tokenizer`` (encoders), both files of each variant are
    run on the validation sentences and must give the same outputs."""
    import onnxruntime as ort

    create_config_from_models = _config_writer()
    folder = manifest.folder
    made: dict[str, str] = {}
    for p in precisions:
        if p in NO_ORT or p not in manifest.variants:
            continue
        made[p] = ort_path(manifest.variants[p].file)
        save_ort_format(manifest, p, folder / made[p])
    if not made:
        return manifest
    config = folder / CONFIG_NAME
    create_config_from_models([folder / rel for rel in made.values()], config, enable_type_reduction=False)
    _relative_header(config, folder)
    variants = dict(manifest.variants)
    for p, rel in made.items():
        variants[p] = replace(
            variants[p],
            ort=OrtFormat(
                file=rel,
                onnxruntime=ort.__version__,
                optimization_level=OPTIMIZATION_LEVEL,
                required_operators=CONFIG_NAME,
            ),
        )
    manifest = replace(manifest, variants=variants)
    if tokenizer is not None:
        for p in made:
            _check_same_outputs(manifest, p, tokenizer)
    return manifest


def _config_writer() -> Any:
    """onnxruntime.tools' create_config_from_models, imported without its side effects on logging: its logger
    module calls logging.basicConfig (a root handler in the caller's process) and logs at INFO."""
    root = logging.getLogger()
    guard = logging.NullHandler()  # basicConfig does nothing while the root logger has a handler
    root.addHandler(guard)
    try:
        from onnxruntime.tools.ort_format_model import create_config_from_models
    finally:
        root.removeHandler(guard)
    logging.getLogger("ort_format_model.utils").setLevel(logging.WARNING)
    return create_config_from_models


def _relative_header(config: Path, folder: Path) -> None:
    """onnxruntime names the models in the config's comment header by absolute path (here the staging folder's);
    name them relative to the model folder, so the file is the same wherever the export ran."""
    prefix = f"# - {folder}/"
    lines = config.read_text(encoding="utf-8").splitlines(keepends=True)
    config.write_text("".join(line.replace(prefix, "# - ", 1) for line in lines), encoding="utf-8")


def _check_same_outputs(manifest: Manifest, precision: str, tokenizer: Any) -> None:
    """Both files of ``precision``, one thread each (a deterministic reduction order), on the validation sentences."""
    feeds = tokenizer(list(VALIDATION_SENTENCES), padding=True, truncation=True, return_tensors="np")
    outputs = []
    for fmt in ("onnx", "ort"):
        model = OnnxModel(manifest, device="cpu", precision=precision, threads=1, format=fmt)
        outputs.append(model.run(model.feeds(feeds), manifest.outputs))
    for name, a, b in zip(manifest.outputs, *outputs):
        if not np.array_equal(a, b):
            diff = float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max())
            saved = manifest.variants[precision].ort
            raise ValidationError(
                f"the ORT-format copy of {precision} computes other {name!r} than its .onnx file (max abs diff "
                f"{diff:.3g}); onnxruntime {saved.onnxruntime if saved else '?'} saved it. Export without "
                "--ort, or report this with the onnxruntime version"
            )
