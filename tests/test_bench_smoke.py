"""Smoke of the benchmark suite and of ``onnxpipe bench``, so neither can rot. No timing assertions: the
machine is shared and slow; these check that every installed engine loads, predicts and is reported."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from onnxpipe._cli import main as cli_main

ROOT = Path(__file__).resolve().parents[1]
EMBEDDED = ROOT / "models" / "minilm-sst2"

# One engine per loader: every engine kind the suite knows, on a tiny model (the module that must import).
SMOKE_ENGINES = {
    "transformers-fp32": "transformers", "optimum-same-int8": "optimum.onnxruntime",
    "optimum-O2-int8": "optimum.onnxruntime", "fastembed-int8": "fastembed", "ort-int8": "onnxruntime",
    "onnxpipe-int8": "onnxpipe", "onnxpipe-fp32": "onnxpipe", "ctranslate2-int8": "ctranslate2",
    "openvino-fp32": "openvino",
}
# Engines that cannot serve a task by design; reported as unavailable with this reason.
NOT_FOR_TASK = {("cls", "fastembed-int8"): "no sequence-classification head",
                ("cls", "ctranslate2-int8"): "no sequence-classification head"}


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


@pytest.fixture(scope="module")
def suite_rows(tiny_checkpoint, tiny_export, tmp_path_factory):
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import run
    finally:
        sys.path.remove(str(ROOT / "bench"))
    if not run.SST2_DEV.is_file():
        pytest.skip(f"the benchmark workloads need {run.SST2_DEV}")
    out = tmp_path_factory.mktemp("bench-smoke")
    args = ["--smoke", "--engines", ",".join(SMOKE_ENGINES), "--out", str(out / "results"), "--cache", str(out / "cache"),
            "--model", str(tiny_export("bert", "text-classification")),
            "--checkpoint", str(tiny_checkpoint("bert", "text-classification")),
            "--fe-model", str(tiny_export("bert", "feature-extraction")),
            "--fe-checkpoint", str(tiny_checkpoint("bert", "feature-extraction"))]
    assert run.main(args) == 0
    rows = [json.loads(line) for line in (out / "results" / "results.jsonl").read_text().splitlines()]
    assert (out / "results" / "results.md").read_text().startswith("# onnxpipe benchmark results")
    return rows, json.loads((out / "results" / "summary.json").read_text())


@pytest.mark.torch
@pytest.mark.parametrize("task", ["cls", "fe"])
@pytest.mark.parametrize("engine", sorted(SMOKE_ENGINES))
def test_every_installed_engine_runs_or_says_why(suite_rows, task, engine):
    rows, _ = suite_rows
    proc = next(r for r in rows if r["task"] == task and r["engine"] == engine and r["workload"] == "process")
    if (task, engine) in NOT_FOR_TASK:
        assert NOT_FOR_TASK[(task, engine)] in proc["status"]
    elif not _installed(SMOKE_ENGINES[engine]):
        assert proc["status"].startswith("unavailable:") and "not importable" in proc["status"], proc["status"]
    else:
        assert proc["status"] == "ok", proc["status"]
        assert proc["parity"].startswith("ok"), proc["parity"]
        assert proc["cold_start_s"] > 0 and proc["peak_rss_mb"] > 0
        assert proc["machine"]["cores"] >= 1 and proc["provider"]
        timed = {r["workload"]: r for r in rows if r["task"] == task and r["engine"] == engine
                 and r["workload"] != "process"}
        assert set(timed) == {"seed1", "seed2", "sst2-b8", "sst2-stream", "syn64"}
        for r in timed.values():
            assert r["passes"] == 2 and r["p50_ms"] > 0 and r["p99_ms"] >= r["p50_ms"] and r["throughput_sps"] > 0
        if task == "cls":
            assert 0.0 <= timed["sst2-b8"]["accuracy"] <= 1.0


@pytest.mark.torch
def test_summary_lists_every_target(suite_rows):
    _, summary = suite_rows
    names = [t["target"] for t in summary["targets"]]
    assert any(n.startswith("seed1 p50: (a)/onnxpipe") for n in names)
    assert any(n.startswith("install size") for n in names)
    sizes = summary["sizes"]
    assert "onnxruntime" in sizes["runtime_only"]["packages"] and "torch" not in sizes["runtime_only"]["packages"]
    assert sizes["transformers_torch"]["mb"] > sizes["runtime_only"]["mb"]


@pytest.mark.parametrize("batch_sizes,seq_lengths", [("1", "8"), ("1,2", "8,16")])
def test_onnxpipe_bench_cli(tmp_path, batch_sizes, seq_lengths):
    if not (EMBEDDED / "manifest.json").is_file():
        pytest.skip("models/minilm-sst2 is not in this checkout")
    out = tmp_path / "bench.json"
    rc = cli_main(["bench", str(EMBEDDED), "--runs", "2", "--warmup", "1", "--batch-sizes", batch_sizes,
                   "--seq-lengths", seq_lengths, "--json-out", str(out)])
    assert rc == 0
    report = json.loads(out.read_text())
    configs = [(r["batch_size"], r["seq_len"]) for r in report["results"]]
    assert sorted(configs) == sorted((int(b), int(s)) for b in batch_sizes.split(",") for s in seq_lengths.split(","))
    for r in report["results"]:
        assert r["tokens"] == r["seq_len"]  # "hello" is one WordPiece token
        for part in ("pipeline", "session"):
            assert 0 < r[part]["p50_ms"] <= r[part]["p99_ms"]
    assert report["threads"] and report["machine"]["cores"] >= 1 and report["provider"] == "CPUExecutionProvider"


@pytest.mark.parametrize("argv,message", [
    (["--batch-sizes", "1,x"], "comma-separated integers"),
    (["--seq-lengths", "100000"], "outside 1..512"),
])
def test_onnxpipe_bench_cli_rejects_bad_sweeps(capsys, argv, message):
    if not (EMBEDDED / "manifest.json").is_file():
        pytest.skip("models/minilm-sst2 is not in this checkout")
    assert cli_main(["bench", str(EMBEDDED), "--runs", "1", *argv]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.torch
def test_tasks_benchmark_smoke(tiny_checkpoint, tmp_path):
    """bench/tasks.py end to end on a tiny encoder: every task x engine row written, fp32 equal to transformers."""
    import os
    import subprocess

    sst2 = ROOT.parent / "shared" / "data" / "sst2" / "dev.tsv"
    if not sst2.is_file():
        pytest.skip(f"needs {sst2}")
    env = {**os.environ, "BENCH_TASKS_SMOKE": "1", "BENCH_TASKS_CACHE": str(tmp_path / "cache"),
           "BENCH_TASKS_RESULTS": str(tmp_path / "results"),
           "BENCH_TASKS_ENCODER": str(tiny_checkpoint("bert", "feature-extraction"))}
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "tasks.py")], env=env, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "results" / "tasks.jsonl").read_text().splitlines()]
    assert {(row["task"], row["engine"]) for row in rows} == {
        (t, e) for t in ("fill-mask", "token-classification", "question-answering", "zero-shot-classification")
        for e in ("transformers-fp32", "onnxpipe-int8", "onnxpipe-fp32")}
    for row in rows:
        assert row["b1_p50_ms"] > 0 and row["throughput_per_s"] > 0
        if row["engine"] == "onnxpipe-fp32":
            equal, total = row["parity_vs_transformers"].split()[0].split("/")
            assert equal == total, row
    assert (tmp_path / "results" / "tasks.md").is_file()
