"""Build what the foreign engines need from the same sources, once, into the cache folder (bench/.cache/).

- Optimum's own recipe (engine b): export the checkpoint with ORTModel, ORTOptimizer O2 / O3, then
  ORTQuantizer with AutoQuantizationConfig.avx512_vnni(is_static=False) on VNNI CPUs, .avx2 elsewhere
  (Optimum's defaults: per-channel).
- fastembed (engine c): a folder whose ONNX files are symlinks to the very files onnxpipe loads, beside the
  tokenizer files fastembed insists on.
- In the engines' own venvs (engine_venvs.py, built here on first use; prepare_venv.py does the work):
  OpenVINO through optimum-intel (``ov-fp32``, NNCF weight-only ``ov-int8-wo``, NNCF static ``ov-int8-static``
  calibrated on SST-2 train sentences) and CTranslate2 int8 encoders (``ct2-cls-int8`` with the checkpoint's
  pooler and classifier for a numpy head, ``ct2-fe-int8``).
Each step that fails writes ``FAILED.txt`` with the reason, which the engine then reports as unavailable.

    .venv-bench/bin/python bench/prepare.py [--model models/minilm-sst2]
        [--checkpoint ../shared/checkpoints/minilm-sst2] [--fe-model DIR --fe-checkpoint DIR] [--cache bench/.cache]

run.py calls prepare() itself with its own paths; running this alone only builds the cache ahead of time.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import sys
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from layout import VARIANT_FILES, optimum_int8_config  # noqa: E402

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "config.json", "vocab.txt")


def _step(out: Path, build, rebuild: bool = False) -> None:
    if out.is_dir() and not (out / "FAILED.txt").exists() and not rebuild:
        print(f"  {out.name}: cached")
        return
    shutil.rmtree(out, ignore_errors=True)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        build(tmp)
        tmp.rename(out)
        print(f"  {out.name}: built")
    except Exception as e:
        out.mkdir(parents=True, exist_ok=True)
        (out / "FAILED.txt").write_text(f"{type(e).__name__}: {e}\n\n{traceback.format_exc()}")
        shutil.rmtree(tmp, ignore_errors=True)
        print(f"  {out.name}: FAILED ({type(e).__name__}: {str(e)[:200]})")


@contextlib.contextmanager
def _default_tensor_type():
    """Shim: with onnxruntime >= 1.2x, quantizing an ORTOptimizer-fused graph fails ("Unable to find data type
    for weight_name=...": shape inference cannot type the outputs of com.microsoft ops). onnxruntime's fix is
    extra_options DefaultTensorType=FLOAT, which ORTQuantizer does not expose, so it is injected here; the
    recipe is otherwise Optimum's, unchanged."""
    import onnx
    from optimum.onnxruntime import quantization as oq

    original = oq.ONNXQuantizer

    class Quantizer(original):
        def __init__(self, *args, extra_options=None, **kwargs):
            super().__init__(
                *args, extra_options={**(extra_options or {}), "DefaultTensorType": onnx.TensorProto.FLOAT}, **kwargs
            )

    oq.ONNXQuantizer = Quantizer
    try:
        yield
    finally:
        oq.ONNXQuantizer = original


def optimum_recipe(checkpoint: Path, task: str, level: str):
    def build(tmp: Path) -> None:
        from optimum.onnxruntime import (
            AutoOptimizationConfig,
            AutoQuantizationConfig,
            ORTModelForFeatureExtraction,
            ORTModelForSequenceClassification,
            ORTOptimizer,
            ORTQuantizer,
        )
        from transformers import AutoTokenizer

        cls = ORTModelForSequenceClassification if task == "cls" else ORTModelForFeatureExtraction
        model = cls.from_pretrained(str(checkpoint), export=True)
        optimizer = ORTOptimizer.from_pretrained(model)
        optimizer.optimize(getattr(AutoOptimizationConfig, level)(), save_dir=tmp)
        quantizer = ORTQuantizer.from_pretrained(tmp, file_name="model_optimized.onnx")
        with _default_tensor_type():
            quantizer.quantize(getattr(AutoQuantizationConfig, optimum_int8_config())(is_static=False), save_dir=tmp)
        AutoTokenizer.from_pretrained(str(checkpoint)).save_pretrained(tmp)
        if not (tmp / "model_optimized_quantized.onnx").is_file():
            raise FileNotFoundError(f"the quantizer wrote {sorted(p.name for p in tmp.iterdir())}")

    return build


def fastembed_folder(fe_model: Path, fe_checkpoint: Path, precision: str):
    def build(tmp: Path) -> None:
        src = fe_model / VARIANT_FILES[precision]
        if not src.is_file():
            raise FileNotFoundError(src)
        (tmp / "onnx").mkdir()
        (tmp / VARIANT_FILES[precision]).symlink_to(src.resolve())
        for name in TOKENIZER_FILES:
            if (fe_checkpoint / name).is_file():
                shutil.copy(fe_checkpoint / name, tmp / name)

    return build


def in_venv(venv: str, kind: str, checkpoint: Path, venvs: Path, build_venv: bool, calibration: dict | None = None):
    """prepare_venv.py ``kind`` on the ``venv`` engine venv (built first when allowed)."""

    def build(tmp: Path) -> None:
        import subprocess

        from engine_venvs import python

        cmd = [str(python(venv, venvs, build=build_venv)), str(Path(__file__).with_name("prepare_venv.py")), kind]
        cmd += ["--checkpoint", str(checkpoint), "--out", str(tmp)]
        if calibration:
            cmd += ["--calibration", str(calibration["file"]), "--calibration-sentences", str(calibration["n"])]
        run = subprocess.run(cmd, capture_output=True, text=True)
        if run.returncode != 0:
            raise RuntimeError(f"{kind} failed: {(run.stderr or run.stdout).strip().splitlines()[-1:]}")

    return build


ALL_VENV_ARTIFACTS = ("ov-fp32", "ov-int8-wo", "ov-int8-static", "ct2-cls-int8", "ct2-fe-int8")


def venv_artifacts(specs) -> set[str]:
    """The cache folders the venv engines among ``specs`` load (engines.py's names)."""
    out = set()
    for s in specs:
        if s.loader == "optimum-intel":
            out.add(f"ov-{s.options['ov']}")
        elif s.loader == "ctranslate2":
            out.add(f"ct2-{s.task}-int8")
    return out


def prepare(
    cache: Path,
    model: Path,
    checkpoint: Path,
    fe_model: Path | None,
    fe_checkpoint: Path | None,
    optimum_levels: tuple[str, ...] = ("O2", "O3"),
    venv_engines: set[str] = frozenset(),  # type: ignore[assignment]
    venvs: Path | None = None,
    build_venvs: bool = True,
    calibration: dict | None = None,
) -> None:
    """Build what the chosen engines need. ``venv_engines``: venv_artifacts(specs); ``calibration``: {"file",
    "n"} for ov-int8-static; ``build_venvs`` False: a missing engine venv is reported, not built (the smoke)."""
    cache.mkdir(parents=True, exist_ok=True)
    print(f"preparing foreign-engine artifacts in {cache}")
    for level in optimum_levels:
        _step(cache / f"optimum-cls-{level}-{optimum_int8_config()}", optimum_recipe(checkpoint, "cls", level))
    if fe_model is not None and fe_checkpoint is not None and not (fe_model / "manifest.json").is_file():
        # No feature-extraction folder yet: export one (int8 + fp32) with onnxpipe's own export stage.
        from onnxpipe_export import export

        print(f"  exporting {fe_checkpoint} -> {fe_model}")
        export(str(fe_checkpoint), task="feature-extraction", out=fe_model, precisions="int8,fp32", progress=False)
    if fe_model is not None and fe_checkpoint is not None:
        for level in optimum_levels:
            _step(cache / f"optimum-fe-{level}-{optimum_int8_config()}", optimum_recipe(fe_checkpoint, "fe", level))
        for p in ("int8", "fp32"):  # symlinks: rebuilt every time so they never point at a stale file
            _step(cache / f"fastembed-{p}", fastembed_folder(fe_model, fe_checkpoint, p), rebuild=True)
    from engine_venvs import VENVS_DIR

    for name in sorted(venv_engines):
        venv = "openvino" if name.startswith("ov-") else "ctranslate2"
        src = fe_checkpoint if name == "ct2-fe-int8" else checkpoint
        if src is None:
            continue
        cal = calibration if name == "ov-int8-static" else None
        _step(cache / name, in_venv(venv, name, src, venvs or VENVS_DIR, build_venvs, cal))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    here = Path(__file__).resolve().parent
    ap.add_argument("--cache", type=Path, default=here / ".cache", help="where to build (default bench/.cache)")
    ap.add_argument(
        "--model",
        type=Path,
        default=here.parent / "models" / "minilm-sst2",
        help="sentiment model folder (default models/minilm-sst2)",
    )
    ap.add_argument(
        "--checkpoint",
        type=Path,
        default=here.parents[1] / "shared" / "checkpoints" / "minilm-sst2",
        help="its PyTorch checkpoint (default ../shared/checkpoints/minilm-sst2)",
    )
    ap.add_argument("--fe-model", type=Path, help="feature-extraction model folder; exported here when missing")
    ap.add_argument("--fe-checkpoint", type=Path, help="its PyTorch checkpoint (both or neither)")
    a = ap.parse_args()
    prepare(
        a.cache,
        a.model,
        a.checkpoint,
        a.fe_model,
        a.fe_checkpoint,
        venv_engines=set(ALL_VENV_ARTIFACTS),
        calibration={"file": here.parents[1] / "shared" / "data" / "sst2" / "train.tsv", "n": 300},
    )
