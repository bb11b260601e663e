"""Smoke of bench/seq2seq.py on the tests' tiny T5: the whole code path (checkpoint, export, worker processes: one
shared by three engines, one of one engine; summary, targets, JSON and table), in seconds. No timing assertions.

Engines: the ones the test environment has (transformers on PyTorch, Optimum, onnxpipe fp32 and int8). The
CTranslate2 engines run on a venv of their own (bench/engine_venvs.py) that a smoke must not build, so they are
left out of this run on purpose, not skipped: the real bench runs them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

pytestmark = pytest.mark.torch  # the bench builds and exports its checkpoint

IN_VENV = ["transformers-fp32", "optimum-fp32", "onnxpipe-fp32", "onnxpipe-int8", "onnxpipe-fp32-nospin"]
IN_VENV += ["onnxpipe-fp32-spin200", "onnxpipe-fp32-1thread"]
# These share one worker process (each imports PyTorch; nothing is timed here); onnxpipe-int8 keeps one of its own,
# so both paths of the bench's worker run.
SHARED = ["transformers-fp32", "optimum-fp32", "onnxpipe-fp32", "onnxpipe-fp32-nospin", "onnxpipe-fp32-spin200"]
SHARED += ["onnxpipe-fp32-1thread"]
NEW_TOKENS = 5


def test_seq2seq_bench_smoke(tmp_path, exports_through_cache):
    """Its export comes through the test cache (tests/conftest.py): the same call, copied on a second run."""
    import seq2seq

    argv = ["--models", "tiny-t5", "--engines", ",".join(IN_VENV), "--rounds", "1"]
    argv += ["--shared-process", ",".join(SHARED)]
    argv += ["--new-tokens", str(NEW_TOKENS), "--encoder-tokens", "9", "--cache", str(tmp_path / "cache")]
    assert seq2seq.main([*argv, "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "seq2seq.json").read_text())
    engines = report["models"]["tiny-t5"]
    assert sorted(engines) == sorted(IN_VENV)
    for name, e in engines.items():
        assert "modes" in e, (name, e.get("status"))
        assert e["peak_rss_mb"] >= e["rss_after_load_mb"] > 0
        for mode in ("greedy", "beam4"):
            row = e["modes"][mode]
            # every engine generated exactly the forced number of tokens; the fp32 ones transformers' tokens
            assert row["count_ok"] and row["new_tokens"] == NEW_TOKENS, (name, mode)
            assert row["best"] >= row["median"] > 0
            if name.split("-")[1] == "fp32" and name != "transformers-fp32":
                assert row["same_tokens_as_transformers"], (name, mode)
    targets = {t["target"]: t for t in report["targets"]["tiny-t5"]}
    assert len(targets) == len(seq2seq.TARGETS) + 2  # speed ratios, then the two RSS ratios
    missing = [t for t in targets.values() if t["ratio"] is None]
    assert all("ctranslate2" in t["target"] for t in missing) and len(missing) == 2  # not run here, said so
    assert all(t["ratio"] > 0 for t in targets.values() if t not in missing)
    # the decode-step floor of each precision: the with-past branch's weight products (tiny T5's layers each have
    # 8: self q, k, v, o, cross q, o, wi, wo; then lm_head), in the file's own ops; int8 reads a quarter the bytes
    floors = report["floor"]["tiny-t5"]
    layers = json.loads((tmp_path / "cache" / "tiny-t5-ckpt" / "config.json").read_text())["num_decoder_layers"]
    assert sorted(floors) == ["fp32", "int8"]
    assert {p: (f["weight_products"], f["ops"]) for p, f in floors.items()} == {
        "fp32": (8 * layers + 1, ["MatMul"]),
        "int8": (8 * layers + 1, ["MatMulInteger"]),
    }
    assert floors["int8"]["weight_mb"] < floors["fp32"]["weight_mb"] / 3
    assert all(f["ceiling_tokens_per_s"] > 0 for f in floors.values())
    table = (tmp_path / "seq2seq.md").read_text()
    assert "Random weights" in table and "| onnxpipe-int8 |" in table
    assert report["provenance"]["command"].startswith("python bench/seq2seq.py")
    assert engines["onnxpipe-fp32-1thread"]["versions"]["threads"] == "1"


@pytest.mark.parametrize(
    "engine, profile, config",
    [
        ("onnxpipe-int8", "default", ()),
        ("onnxpipe-int8-nospin", "low-power", (("session.intra_op.allow_spinning", "0"),)),
        ("onnxpipe-fp32-spin200", "spin200", (("session.intra_op.spin_duration_us", "200"),)),
        ("onnxpipe-int8-1thread", "default", ()),
    ],
)
def test_onnxpipe_engine_suffix_picks_the_session_profile(engine, profile, config, monkeypatch):
    import seq2seq
    from onnxpipe import _session

    # A "-spin<N>" engine registers its profile, as the bench's worker process does; here on a copy, so the
    # runtime's own list of profiles (and its error messages) stay as they are for the other tests.
    monkeypatch.setattr(_session, "PROFILES", dict(_session.PROFILES))
    assert seq2seq.session_profile(engine) == profile
    assert set(config) <= set(_session.PROFILES[profile].config)


@pytest.mark.parametrize("engine", ["onnxpipe-int8-spin", "onnxpipe-int8-fast"])
def test_an_unknown_engine_suffix_is_refused(engine):
    import seq2seq

    with pytest.raises(SystemExit, match="suffixes"):
        seq2seq.session_profile(engine)


def test_a_cached_folder_of_older_export_code_is_exported_again(tmp_path, monkeypatch):
    import onnxpipe_export
    import seq2seq

    calls = []

    def export(ckpt, task, out, precisions, progress, force):  # the bench's call, recorded
        calls.append(out)
        Path(out).mkdir(exist_ok=True)
        (Path(out) / "manifest.json").write_text("{}")

    monkeypatch.setattr(onnxpipe_export, "export", export)
    folder = tmp_path / "model-onnx"
    for _ in range(2):
        seq2seq.export_folder(tmp_path / "ckpt", folder)
    assert len(calls) == 1  # the second call found it current
    (tmp_path / "model-onnx.export-code").write_text("an older export")
    seq2seq.export_folder(tmp_path / "ckpt", folder)
    assert len(calls) == 2
