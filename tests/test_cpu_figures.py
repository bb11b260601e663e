"""The CPUs a variant was checked on: recorded into a folder's manifest by the export side, shown by info."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from onnxpipe._cli import main
from onnxpipe._manifest import FORMAT_VERSION, load_manifest
from onnxpipe.errors import ExportError

ROOT = Path(__file__).resolve().parents[1]
HASWELL = {"cpu": "qemu Haswell (AVX2, no VNNI)", "n": 400, "flips": 0, "max_abs_dp": 0.011, "p99_abs_dp": 0.004}


@pytest.fixture
def folder(tmp_path) -> Path:
    return Path(shutil.copytree(ROOT / "models" / "minilm-sst2", tmp_path / "m"))


def test_recorded_cpus_are_kept_replaced_per_cpu_and_shown_by_info(folder, capsys):
    from onnxpipe_export import record_cpu_figures

    arm = {"cpu": "qemu neoverse-n1 (ARM64, dot product)", "n": 400, "flips": 1, "max_abs_dp": 0.2, "p99_abs_dp": 0.01}
    shipped = list(load_manifest(folder).variants["int8"].cpus or [])  # the committed model's own records stay
    record_cpu_figures(folder, [HASWELL, arm])
    record_cpu_figures(folder, [{**arm, "flips": 0, "max_abs_dp": 0.003, "runs": 2}])  # a re-run of the ARM check
    cpus = load_manifest(folder).variants["int8"].cpus  # verify=True: the files still match their hashes
    assert cpus == [*shipped, HASWELL, {**arm, "flips": 0, "max_abs_dp": 0.003, "runs": 2}]
    assert (
        json.loads((folder / "manifest.json").read_text())["format_version"] == FORMAT_VERSION
    )  # the writer's format, which has `cpus`
    assert main(["info", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "checked on qemu Haswell (AVX2, no VNNI): 400 texts, 0 label flips, |dP| max 0.011, p99 0.004" in out
    assert "checked on qemu neoverse-n1 (ARM64, dot product): 400 texts, 0 label flips" in out


@pytest.mark.parametrize(
    "figures,precision,match",
    [
        ([{**HASWELL, "flips": "0"}], "int8", "'flips' must be int"),
        ([{k: v for k, v in HASWELL.items() if k != "cpu"}], "int8", "'cpu' must be str"),
        (["Haswell"], "int8", "must be an object"),
        ([HASWELL], "fp16", "no 'fp16' variant; it has int8"),
    ],
)
def test_bad_figures_are_refused_and_the_manifest_is_untouched(folder, figures, precision, match):
    from onnxpipe_export import record_cpu_figures

    before = (folder / "manifest.json").read_bytes()
    with pytest.raises(ExportError, match=match):
        record_cpu_figures(folder, figures, precision)
    assert (folder / "manifest.json").read_bytes() == before
