"""Edge deployment, runtime only: the low-power session profile (one thread, no spinning) and
``onnxpipe info --footprint`` (disk, installed size, peak RSS and cold start in fresh processes). No timing
assertions: the machine is shared; these check the settings reach onnxruntime and the report is complete."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from _ort_util import add_ort_copy
from onnxpipe import AutoModelForSequenceClassification, AutoTokenizer, SessionOptions, pipeline
from onnxpipe._cli import main as cli_main
from onnxpipe._footprint import RUNTIME_PACKAGES, disk_sizes, footprint, installed_size
from onnxpipe._session import PROFILES, default_threads

ROOT = Path(__file__).resolve().parents[1]
EMBEDDED = ROOT / "models" / "minilm-sst2"
TEXTS = ["I've been waiting for a HuggingFace course my whole life.", "I hate this so much!"]
SPINNING = ("session.intra_op.allow_spinning", "session.inter_op.allow_spinning")


def _options(pipe):
    return pipe.model.session.get_session_options()


def test_the_low_power_profile_reaches_the_session():
    opts = _options(pipeline("sentiment-analysis", profile="low-power"))
    assert opts.intra_op_num_threads == 1 and opts.enable_cpu_mem_arena is True  # measured: arena off is worse
    assert [opts.get_session_config_entry(key) for key in SPINNING] == ["0", "0"]


def test_the_default_profile_spins_a_bounded_time():
    opts = _options(pipeline("sentiment-analysis"))
    assert opts.intra_op_num_threads == default_threads() and opts.enable_cpu_mem_arena is True
    for key in SPINNING:  # not set: onnxruntime's default, spinning on
        with pytest.raises(Exception, match="does not have configuration"):
            opts.get_session_config_entry(key)
    assert opts.get_session_config_entry("session.intra_op.spin_duration_us") == "200"
    assert PROFILES["default"].threads is None


def test_threads_given_override_the_profile():
    assert _options(pipeline("sentiment-analysis", profile="low-power", threads=2)).intra_op_num_threads == 2


def test_low_power_predicts_what_the_default_does():
    tok = AutoTokenizer.from_pretrained(EMBEDDED)
    enc = tok(TEXTS, padding=True, return_tensors="np")
    a = AutoModelForSequenceClassification.from_pretrained(EMBEDDED)(**enc).logits
    model = AutoModelForSequenceClassification.from_pretrained(EMBEDDED, profile="low-power")
    assert model.profile == "low-power"
    np.testing.assert_allclose(model(**enc).logits, a, atol=1e-5)  # 1 vs N threads: other summation order


def test_an_unknown_profile_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"profile='eco' is not one of \['default', 'low-power'\]"):
        pipeline("sentiment-analysis", profile="eco")


def test_cli_predict_with_the_low_power_profile(capsys):
    assert cli_main(["predict", "--profile", "low-power", *TEXTS]) == 0
    labels = [json.loads(line)["label"] for line in capsys.readouterr().out.splitlines()]
    assert labels == ["POSITIVE", "NEGATIVE"]


def test_cli_rejects_an_unknown_profile(capsys):
    with pytest.raises(SystemExit):
        cli_main(["predict", "--profile", "eco", "hi"])
    assert "invalid choice: 'eco'" in capsys.readouterr().err


def test_serve_loads_a_model_with_a_profile():
    from onnxpipe._serve import load_model  # the serve extra is part of the test environment (make test)

    served = load_model("sst2", str(EMBEDDED), SessionOptions(profile="low-power"))
    assert served.model.session.get_session_options().intra_op_num_threads == 1


def test_serve_parser_takes_profile_and_format():
    from onnxpipe._cli import build_parser

    args = build_parser().parse_args(["serve", str(EMBEDDED), "--profile", "low-power", "--format", "ort"])
    assert (args.profile, args.format) == ("low-power", "ort")


# ---- footprint ------------------------------------------------------------------------------------------------


def test_installed_size_counts_the_runtime_packages_and_their_requirements():
    size = installed_size()
    assert set(RUNTIME_PACKAGES) <= set(size["packages_mb"])
    assert "torch" not in size["packages_mb"] and "transformers" not in size["packages_mb"]
    assert size["packages_mb"]["onnxruntime"] > 1 and size["total_mb"] >= size["core_mb"] > 0


def test_disk_sizes_per_variant():
    rows = disk_sizes(EMBEDDED)
    assert [(r["precision"], r["format"]) for r in rows] == [("int8", "onnx")]
    size = (EMBEDDED / "onnx" / "model_quantized.onnx").stat().st_size
    assert rows[0]["file_mb"] == round(size / 1e6, 2)
    shared = sum(p.stat().st_size for p in EMBEDDED.rglob("*") if p.is_file()) - size
    assert rows[0]["folder_alone_mb"] == round((size + shared) / 1e6, 2)


@pytest.fixture(scope="module")
def embedded_with_ort(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("footprint") / "minilm-sst2"
    shutil.copytree(EMBEDDED, folder)
    add_ort_copy(folder, "int8")
    return folder


def test_footprint_measures_each_variant_and_format_in_fresh_processes(embedded_with_ort):
    report = footprint(embedded_with_ort, profile="low-power", runs=1)
    assert report["profile"] == "low-power" and report["machine"]["cores"] >= 1
    assert [(r["precision"], r["format"]) for r in report["variants"]] == [("int8", "onnx"), ("int8", "ort")]
    for row in report["variants"]:
        assert row["peak_rss_mb"] > 20 and row["cold_start_s"] > row["load_s"] > 0 and row["first_prediction_s"] > 0
    onnx, ort_row = report["variants"]
    assert ort_row["folder_alone_mb"] > onnx["folder_alone_mb"]  # the .ort folder keeps its .onnx too


def test_cli_info_footprint(embedded_with_ort, capsys):
    assert cli_main(["info", "--footprint", "--runs", "1", str(embedded_with_ort)]) == 0
    out = capsys.readouterr().out
    assert "onnx/model_quantized.onnx" in out and "onnx/model_quantized.ort" in out
    assert "peak RSS" in out and "cold start" in out and "installed runtime" in out
    assert cli_main(["info", "--footprint", "--runs", "1", "--json", str(EMBEDDED)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["variants"][0]["cold_start_s"] > 0 and report["installed"]["core_mb"] > 0


def test_cli_info_footprint_refuses_bad_options(capsys):
    assert cli_main(["info", "--footprint", "--runs", "0", str(EMBEDDED)]) == 2
    assert "runs (--runs)" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli_main(["info", "--footprint", "--profile", "eco", str(EMBEDDED)])
    assert "invalid choice: 'eco'" in capsys.readouterr().err


def test_info_shows_the_ort_copy(embedded_with_ort, capsys):
    assert cli_main(["info", str(embedded_with_ort)]) == 0
    assert "ORT format: onnx/model_quantized.ort" in capsys.readouterr().out
