"""ORT format (onnxpipe export --ort; format="ort" in the runtime): each CPU variant's .ort copy computes exactly
what its .onnx file does, is listed and hashed like every file, and the runtime refuses what it cannot load with
the fix. The runtime-only tests make the .ort copy of the embedded model with the runtime's own save_ort_format
(what the export calls); the torch-marked ones export a tiny checkpoint with --ort."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from _ort_util import add_ort_copy
from onnxpipe import AutoModelForSequenceClassification, AutoTokenizer, errors, pipeline
from onnxpipe._cli import main as cli_main
from onnxpipe._manifest import FORMAT_VERSION, MANIFEST_NAME, Manifest, load_manifest
from onnxpipe._session import save_ort_format

ROOT = Path(__file__).resolve().parents[1]
EMBEDDED = ROOT / "models" / "minilm-sst2"
TEXTS = ["I've been waiting for a HuggingFace course my whole life.", "I hate this so much!", "", "Not bad. 👍"]


@pytest.fixture(scope="module")
def embedded_ort(tmp_path_factory) -> Path:
    """A copy of models/minilm-sst2 with the ORT-format copy of its int8 variant."""
    folder = tmp_path_factory.mktemp("ort") / "minilm-sst2"
    shutil.copytree(EMBEDDED, folder)
    add_ort_copy(folder, "int8")
    return folder


def _logits(folder: Path, fmt: str, precision: str = "int8", **kw) -> np.ndarray:
    model = AutoModelForSequenceClassification.from_pretrained(folder, precision=precision, format=fmt, **kw)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    return model(**tokenizer(TEXTS, padding=True, return_tensors="np")).logits


def test_the_ort_copy_computes_what_the_onnx_file_does(embedded_ort):
    assert np.array_equal(_logits(embedded_ort, "onnx"), _logits(embedded_ort, "ort"))
    onnx_pipe = pipeline("sentiment-analysis", model=embedded_ort)
    ort_pipe = pipeline("sentiment-analysis", model=embedded_ort, format="ort")
    assert ort_pipe.model.format == "ort" and onnx_pipe.model.format == "onnx"
    assert ort_pipe(TEXTS) == onnx_pipe(TEXTS)


def test_the_ort_copy_with_the_low_power_profile(embedded_ort):
    assert np.array_equal(_logits(embedded_ort, "onnx"), _logits(embedded_ort, "ort", profile="low-power"))


def test_a_modified_ort_file_fails_the_sha256_check(embedded_ort, tmp_path):
    folder = tmp_path / "m"
    shutil.copytree(embedded_ort, folder)
    path = folder / "onnx" / "model_quantized.ort"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(errors.IntegrityError, match=r"model_quantized\.ort does not match its sha256"):
        pipeline("sentiment-analysis", model=folder, format="ort")


def test_an_unlisted_ort_file_is_refused(tmp_path):
    folder = tmp_path / "m"
    shutil.copytree(EMBEDDED, folder)
    save_ort_format(load_manifest(folder), "int8", folder / "onnx" / "model_quantized.ort")
    with pytest.raises(errors.IntegrityError, match="does not list"):
        load_manifest(folder)


def test_an_ort_entry_must_name_a_listed_file(embedded_ort):
    data = json.loads((embedded_ort / MANIFEST_NAME).read_text())
    del data["files"]["onnx/model_quantized.ort"]
    with pytest.raises(errors.ManifestError, match=r"'onnx/model_quantized\.ort' is used but not listed"):
        Manifest.from_json(data, embedded_ort)


@pytest.mark.parametrize(
    "entry,message",
    [
        ({"file": 3, "onnxruntime": "1.32.0", "optimization_level": "extended"}, "'variants' must be"),
        ({"file": "onnx/model_quantized.ort"}, "'variants' must be"),
    ],
)
def test_a_malformed_ort_entry_is_named(embedded_ort, entry, message):
    data = json.loads((embedded_ort / MANIFEST_NAME).read_text())
    data["variants"]["int8"]["ort"] = entry
    with pytest.raises(errors.ManifestError, match=message):
        Manifest.from_json(data, embedded_ort)


def test_the_ort_entry_round_trips(embedded_ort):
    text = (embedded_ort / MANIFEST_NAME).read_text()
    manifest = Manifest.from_json(text, embedded_ort)
    assert manifest.to_json() == text
    entry = json.loads(text)["variants"]["int8"]["ort"]
    assert entry == {
        "file": "onnx/model_quantized.ort",
        "onnxruntime": ort.__version__,
        "optimization_level": "extended",
    }


def test_an_ort_file_from_a_newer_onnxruntime_is_refused_with_the_fix(tmp_path):
    folder = tmp_path / "m"
    shutil.copytree(EMBEDDED, folder)
    add_ort_copy(folder, "int8", writer="99.1.0")
    with pytest.raises(errors.ModelLoadError, match=r"onnxruntime 99\.1\.0.*pip install 'onnxruntime>=99\.1\.0'"):
        pipeline("sentiment-analysis", model=folder, format="ort")
    assert pipeline("sentiment-analysis", model=folder)("fine")  # the .onnx file still loads


@pytest.mark.parametrize(
    "kwargs,error,message",
    [
        ({"format": "tflite"}, ValueError, r"format='tflite' is not one of \['onnx', 'ort'\]"),
        ({"format": "ort"}, errors.PrecisionUnavailableError, r"no ORT-format file for 'int8'.*--ort"),
    ],
)
def test_a_format_the_folder_lacks_names_the_choices(kwargs, error, message):
    with pytest.raises(error, match=message):
        pipeline("sentiment-analysis", model=EMBEDDED, **kwargs)


@pytest.mark.parametrize("fmt", ["onnx", "ort"])
def test_cli_predict_format(embedded_ort, capsys, fmt):
    assert cli_main(["predict", "--model", str(embedded_ort), "--format", fmt, *TEXTS[:2]]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["label"] for line in lines] == ["POSITIVE", "NEGATIVE"]


# ---- the export stage: onnxpipe export --ort on a tiny checkpoint -----------------------------------------------


@pytest.fixture(scope="module")
def tiny_ort(tiny_checkpoint, tmp_path_factory) -> Path:
    from onnxpipe_export import export

    out = tmp_path_factory.mktemp("export-ort") / "model"
    return export(
        tiny_checkpoint("bert", "text-classification"),
        task="text-classification",
        out=out,
        precisions="int8,fp32,fp16",
        progress=False,
        ort=True,
    )


@pytest.mark.torch
def test_export_ort_writes_a_copy_beside_each_cpu_variant(tiny_ort):
    manifest = load_manifest(tiny_ort)  # verify=True: every .ort and the config hashed
    assert manifest.format_version == FORMAT_VERSION  # a fresh export writes the current format
    for precision, name in (("int8", "model_quantized"), ("fp32", "model")):
        entry = manifest.variants[precision].ort
        assert entry is not None and entry.file == f"onnx/{name}.ort"
        assert entry.onnxruntime == ort.__version__ and entry.optimization_level == "extended"
        assert entry.required_operators == "required_operators.config"
        assert entry.file in manifest.files and (tiny_ort / entry.file).is_file()
    assert manifest.variants["fp16"].ort is None and not (tiny_ort / "onnx" / "model_fp16.ort").exists()
    assert "required_operators.config" in manifest.files


@pytest.mark.torch
def test_export_ort_operator_config_is_what_a_minimal_build_reads(tiny_ort):
    lines = (tiny_ort / "required_operators.config").read_text().splitlines()
    # the models are named relative to the folder, not by the staging path the export wrote them in
    assert [line for line in lines if line.startswith("# - ")] == ["# - onnx/model.ort", "# - onnx/model_quantized.ort"]
    ops: dict[str, set[str]] = {}
    for line in lines:
        if not line.startswith("#"):
            domain, _opset, names = line.split(";")
            ops.setdefault(domain, set()).update(names.split(","))
    assert {"Gather", "MatMul"} <= ops["ai.onnx"]
    # fused contrib operators (the runtime's "extended" level): a minimal build must keep contrib ops
    assert {"Attention", "SkipLayerNormalization"} <= ops["com.microsoft"]


@pytest.mark.torch
@pytest.mark.parametrize("precision", ["int8", "fp32"])
def test_export_ort_identical_outputs(tiny_ort, precision):
    assert np.array_equal(_logits(tiny_ort, "onnx", precision), _logits(tiny_ort, "ort", precision))
    a = pipeline("text-classification", model=tiny_ort, precision=precision, top_k=None)(TEXTS)
    b = pipeline("text-classification", model=tiny_ort, precision=precision, top_k=None, format="ort")(TEXTS)
    assert a == b


@pytest.mark.torch
def test_export_ort_fp16_has_no_copy_and_says_so(tiny_ort):
    with pytest.raises(errors.PrecisionUnavailableError, match=r"no ORT-format file for 'fp16' \(it has one for"):
        pipeline("text-classification", model=tiny_ort, precision="fp16", format="ort")


@pytest.mark.torch
def test_export_ort_refused_for_text_generation(tmp_path):
    from onnxpipe_export import export

    with pytest.raises(errors.ExportError, match="--ort is not made for text-generation"):
        export("any/checkpoint", task="text-generation", out=tmp_path / "x", ort=True, progress=False)
    assert not (tmp_path / "x").exists()
