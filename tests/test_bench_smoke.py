"""Smoke of every bench program (run.py, tasks.py, matmul_floor.py, session_options.py, batch_scale.py) and of
``onnxpipe bench``, so none can rot. No timing assertions: the machine is shared and slow; these check that
every installed engine loads, predicts and is reported, and that every committed result records where it came
from (command, commit, machine, versions, date).

Engines outside CI: the test environment (``.[export,test]``) has transformers/PyTorch, Optimum and
onnxruntime, so engines (a), (b), (d) and (e) run here. fastembed (c) lives only in the bench venv
(bench/setup_venv.sh); OpenVINO (optimum-intel, NNCF) and CTranslate2 (f) on venvs of their own that run.py builds
on first use (bench/engine_venvs.py) and the smoke never builds. Where one is missing the smoke checks that the
suite reports the engine as unavailable and why (a row, not a silent skip), and says so in a warning.

The data these smokes need (../shared beside the checkout, models/minilm-sst2) is part of a complete checkout:
when it is missing the tests fail and name it, rather than skip.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from onnxpipe._cli import main as cli_main

ROOT = Path(__file__).resolve().parents[1]
EMBEDDED = ROOT / "models" / "minilm-sst2"
SST2 = ROOT.parent / "shared" / "data" / "sst2" / "dev.tsv"

# One engine per loader: every engine kind the suite knows, on a tiny model (the module that must import).
SMOKE_ENGINES = {
    "transformers-fp32": "transformers",
    "optimum-same-int8": "optimum.onnxruntime",
    "optimum-O2-int8": "optimum.onnxruntime",
    "fastembed-int8": "fastembed",
    "ort-int8": "onnxruntime",
    "onnxpipe-int8": "onnxpipe",
    "onnxpipe-int8-batched": "onnxpipe",
    "onnxpipe-fp32": "onnxpipe",
}
# Engines that run on venvs of their own (bench/engine_venvs.py): the smoke never builds one (gigabytes); where
# it is built it must run, elsewhere the suite must say the venv is not built.
VENV_ENGINES = {
    "ctranslate2-int8": "ctranslate2",
    "openvino-int8-static": "openvino",  # optimum-intel export + NNCF static int8 on 8 SST-2 train sentences
    "openvino-onnx-fp32": "openvino",
}
# int8 engines that quantize the checkpoint their own way: on the tiny random model (near-tied labels) their
# labels may differ from PyTorch's and onnxpipe's, so only a parity check that ran is asked of them.
OWN_INT8 = {"ctranslate2-int8", "openvino-int8-static"}
# Engines that cannot serve a task by design; reported as unavailable with this reason.
NOT_FOR_TASK = {
    ("cls", "fastembed-int8"): "no sequence-classification head",
}
# Engines run.py defines for one task only: no row may appear for the other.
NOT_IN_SUITE = {("fe", "openvino-int8-static")}  # optimum-intel's engine here is the sentiment classifier


def _venv_built(name: str) -> bool:
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        from engine_venvs import VenvError, python
    finally:
        sys.path.remove(str(ROOT / "bench"))
    try:
        python(name, build=False)
    except VenvError:
        return False
    return True


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def _require(path: Path, what: str) -> None:
    """Fail (not skip) with what is missing: a clone without it cannot check that the benchmarks run."""
    if not path.exists():
        pytest.fail(f"{path} is missing: {what}", pytrace=False)


def _require_sst2() -> None:
    _require(SST2, "the benchmarks' SST-2 workloads read it; ../shared must sit beside the checkout")


def _require_embedded() -> None:
    _require(EMBEDDED / "manifest.json", "models/minilm-sst2 (the embedded model) is not in this checkout")


def _check_provenance(prov: dict, script: str, argv: list[str]) -> None:
    """The command is this run's, reproducible from the repository root; commit and machine are this one's."""
    assert prov["command"].split()[:2] == ["python", f"bench/{script}"], prov["command"]
    assert prov["argv"] == argv
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert prov["git"]["commit"] == head and isinstance(prov["git"]["dirty"], bool)
    assert prov["machine"]["cores"] >= 1 and prov["machine"]["cpu"] and "onnxruntime" in prov["versions"]
    assert prov["date"][:2] == "20"


def _check_markdown_header(text: str, prov: dict) -> None:
    head = text.split("\n\n", 2)[1]  # after the title: the provenance block
    assert prov["command"] in head and prov["git"]["commit"] in head and prov["machine"]["cpu"] in head, head


@pytest.fixture(scope="module")
def suite_rows(tiny_checkpoint, tiny_export, tmp_path_factory):
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import run
    finally:
        sys.path.remove(str(ROOT / "bench"))
    _require_sst2()
    missing = sorted({m for m in SMOKE_ENGINES.values() if not _installed(m)})
    missing += sorted({v + " venv" for v in VENV_ENGINES.values() if not _venv_built(v)})
    if missing:
        warnings.warn(
            f"bench engines not exercised here (bench venv only, see bench/setup_venv.sh): {missing}; "
            "checked to be reported as unavailable instead",
            stacklevel=1,
        )
    out = tmp_path_factory.mktemp("bench-smoke")
    args = [
        "--smoke",
        "--engines",
        ",".join([*SMOKE_ENGINES, *VENV_ENGINES]),
        "--out",
        str(out / "results"),
        "--cache",
        str(out / "cache"),
        "--model",
        str(tiny_export("bert", "text-classification")),
        "--checkpoint",
        str(tiny_checkpoint("bert", "text-classification")),
        "--fe-model",
        str(tiny_export("bert", "feature-extraction")),
        "--fe-checkpoint",
        str(tiny_checkpoint("bert", "feature-extraction")),
    ]
    assert run.main(args) == 0
    rows = [json.loads(line) for line in (out / "results" / "raw" / "results.jsonl").read_text().splitlines()]
    summary = json.loads((out / "results" / "summary.json").read_text())
    _check_provenance(summary["provenance"], "run.py", args)
    md = (out / "results" / "results.md").read_text()
    assert md.startswith("# onnxpipe benchmark results")
    _check_markdown_header(md, summary["provenance"])
    # Regenerated files go to the git-ignored raw/ and charts/ folders; only the summary tables stay beside.
    assert sorted(p.name for p in (out / "results").iterdir() if p.is_file()) == ["results.md", "summary.json"]
    loads = {
        (r["task"], r["engine"]): r
        for r in map(json.loads, (out / "results" / "raw" / "raw.jsonl").open())
        if r.get("type") == "load"
    }
    return rows, summary, loads


def _int8_cls_matches_onnxpipe(loads: dict, engine: str, model) -> bool:
    """An int8 classifier on the tiny random model may differ from PyTorch beyond the bench's gate (its top two
    labels are nearly tied, and AVX2 kernels round otherwise than VNNI ones); what must hold then is that every
    engine reading the same int8 file answers as onnxpipe's own pipeline does in this process."""
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        from workloads import SEED2
    finally:
        sys.path.remove(str(ROOT / "bench"))
    from onnxpipe import pipeline

    pipe = pipeline("text-classification", model=model, precision="int8")
    index = {name: i for i, name in pipe.model.labels.items()}
    ref = [{"label": index[r["label"]], "score": r["score"]} for r in pipe(list(SEED2))]
    got = loads[("cls", engine)]["parity"]
    if len(got) != len(ref):
        return False
    if loads[("cls", engine)]["kind"] == "d":  # bare sessions report raw logits: labels only
        return all(a[0] == b["label"] for a, b in zip(got, ref))
    return all(a[0] == b["label"] and abs(a[1] - b["score"]) < 1e-3 for a, b in zip(got, ref))


@pytest.mark.torch
@pytest.mark.parametrize("task", ["cls", "fe"])
@pytest.mark.parametrize("engine", sorted([*SMOKE_ENGINES, *VENV_ENGINES]))
def test_every_installed_engine_runs_or_says_why(suite_rows, task, engine, tiny_export):
    rows, _, loads = suite_rows
    mine = [r for r in rows if r["task"] == task and r["engine"] == engine and r["workload"] == "process"]
    if (task, engine) in NOT_IN_SUITE:
        assert not mine, mine
        return
    proc = mine[0]
    if (task, engine) in NOT_FOR_TASK:
        assert NOT_FOR_TASK[(task, engine)] in proc["status"]
    elif engine in VENV_ENGINES and not _venv_built(VENV_ENGINES[engine]):
        assert proc["status"].startswith("unavailable:") and "venv is not built" in proc["status"], proc["status"]
    elif engine in SMOKE_ENGINES and not _installed(SMOKE_ENGINES[engine]):
        assert proc["status"].startswith("unavailable:") and "not importable" in proc["status"], proc["status"]
    else:
        assert proc["status"] == "ok", proc["status"]
        if engine in OWN_INT8:
            assert proc["parity"].startswith(("ok", "MISMATCH")), proc["parity"]
        elif task == "cls" and "int8" in engine and not proc["parity"].startswith("ok"):
            model = tiny_export("bert", "text-classification")
            assert _int8_cls_matches_onnxpipe(loads, engine, model), (proc["parity"], loads[("cls", engine)]["parity"])
        else:
            assert proc["parity"].startswith("ok"), proc["parity"]
        assert proc["cold_start_s"] > 0 and proc["peak_rss_mb"] > 0
        assert proc["machine"]["cores"] >= 1 and proc["provider"]
        timed = {
            r["workload"]: r for r in rows if r["task"] == task and r["engine"] == engine and r["workload"] != "process"
        }
        assert set(timed) == {"seed1", "seed2", "sst2-b8", "sst2-stream", "syn64", "syn64-b2"}
        for r in timed.values():
            assert r["passes"] == 2 and r["p50_ms"] > 0 and r["p99_ms"] >= r["p50_ms"] and r["throughput_sps"] > 0
            assert r["best_p50_ms"] <= r["p50_ms"] and r["best_throughput_sps"] >= r["throughput_sps"]
        if task == "cls":
            assert 0.0 <= timed["sst2-b8"]["accuracy"] <= 1.0


@pytest.mark.torch
def test_summary_lists_every_target(suite_rows):
    _, summary, _ = suite_rows
    names = [t["target"] for t in summary["targets"]]
    assert any(n.startswith("seed1 p50: (a)/onnxpipe") for n in names)
    assert any(n.startswith("install size") for n in names)
    sizes = summary["sizes"]
    assert "onnxruntime" in sizes["runtime_only"]["packages"] and "torch" not in sizes["runtime_only"]["packages"]
    assert sizes["transformers_torch"]["mb"] > sizes["runtime_only"]["mb"]


@pytest.mark.parametrize("batch_sizes,seq_lengths", [("1", "8"), ("1,2", "8,16")])
def test_onnxpipe_bench_cli(tmp_path, batch_sizes, seq_lengths):
    _require_embedded()
    out = tmp_path / "bench.json"
    rc = cli_main(
        [
            "bench",
            str(EMBEDDED),
            "--runs",
            "2",
            "--warmup",
            "1",
            "--batch-sizes",
            batch_sizes,
            "--seq-lengths",
            seq_lengths,
            "--json-out",
            str(out),
        ]
    )
    assert rc == 0
    report = json.loads(out.read_text())
    configs = [(r["batch_size"], r["seq_len"]) for r in report["results"]]
    assert sorted(configs) == sorted((int(b), int(s)) for b in batch_sizes.split(",") for s in seq_lengths.split(","))
    for r in report["results"]:
        assert r["tokens"] == r["seq_len"]  # "hello" is one WordPiece token
        for part in ("pipeline", "session"):
            assert 0 < r[part]["p50_ms"] <= r[part]["p99_ms"]
    assert report["threads"] and report["machine"]["cores"] >= 1 and report["provider"] == "CPUExecutionProvider"


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--batch-sizes", "1,x"], "comma-separated integers"),
        (["--seq-lengths", "100000"], "outside 1..512"),
    ],
)
def test_onnxpipe_bench_cli_rejects_bad_sweeps(capsys, argv, message):
    _require_embedded()
    assert cli_main(["bench", str(EMBEDDED), "--runs", "1", *argv]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.torch
def test_tasks_benchmark_smoke(tiny_checkpoint, tmp_path, exports_through_cache):
    """bench/tasks.py end to end on a tiny encoder: every task x engine row written, fp32 equal to transformers.
    Its main process runs here (PyTorch is imported already; its four exports come through the test cache), its
    engines' worker processes as always."""
    import torch

    _require_sst2()
    argv = [
        "--smoke",
        "--cache",
        str(tmp_path / "cache"),
        "--out",
        str(tmp_path / "results"),
        "--encoder",
        str(tiny_checkpoint("bert", "feature-extraction")),
    ]
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import tasks
    finally:
        sys.path.remove(str(ROOT / "bench"))
    with torch.random.fork_rng():  # its seeded random heads leave this process's generator as it was
        assert tasks.main(argv) == 0
    rows = [json.loads(line) for line in (tmp_path / "results" / "raw" / "tasks.jsonl").read_text().splitlines()]
    assert {(row["task"], row["engine"]) for row in rows} == {
        (t, e)
        for t in ("fill-mask", "token-classification", "question-answering", "zero-shot-classification")
        for e in ("transformers-fp32", "onnxpipe-int8", "onnxpipe-fp32")
    }
    for row in rows:
        assert row["b1_p50_ms"] > 0 and row["throughput_per_s"] > 0
        if row["engine"] == "onnxpipe-fp32":
            equal, total = row["parity_vs_transformers"].split()[0].split("/")
            assert equal == total, row
    _check_provenance(rows[0]["provenance"], "tasks.py", argv)
    _check_markdown_header((tmp_path / "results" / "tasks.md").read_text(), rows[0]["provenance"])


def _run_bench(script: str, argv: list[str]) -> None:
    r = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), *argv], capture_output=True, text=True, timeout=600
    )
    assert r.returncode == 0, r.stderr[-3000:]


def test_matmul_floor_smoke(tmp_path):
    """bench/matmul_floor.py on the embedded model with one round of one run per shape and one pass."""
    _require_sst2()
    _require_embedded()
    out = tmp_path / "matmul_floor.json"
    argv = ["--model", str(EMBEDDED), "--rounds", "1", "--repeats", "1", "--passes", "1", "--out", str(out)]
    _run_bench("matmul_floor.py", argv)
    result = json.loads(out.read_text())
    _check_provenance(result["provenance"], "matmul_floor.py", argv)
    assert result["model"] == "models/minilm-sst2"  # relative to the checkout, not this machine's path
    assert result["macs"]["sentences"] == 872 and result["macs"]["real_tokens"] <= result["macs"]["padded_tokens"]
    assert all(v > 0 for kind in result["gmacs_per_s"].values() for v in kind.values())
    assert result["floor_s"] > 0 and result["onnxpipe_int8_s"] > 0


def test_session_options_smoke(tmp_path):
    """bench/session_options.py: onnxpipe's settings and one variant, one round, each in its own process."""
    _require_sst2()
    _require_embedded()
    out = tmp_path / "session_options.json"
    argv = [
        "--model",
        str(EMBEDDED),
        "--rounds",
        "1",
        "--only",
        "no arena",
        "--seed-calls",
        "2",
        "--sst2-sentences",
        "8",
        "--out",
        str(out),
    ]
    _run_bench("session_options.py", argv)
    result = json.loads(out.read_text())
    _check_provenance(result["provenance"], "session_options.py", argv)
    assert [r["options"] for r in result["rows"]][1:] == ["no arena"] and len(result["rows"]) == 2
    for row in result["rows"]:
        assert row["rounds"] == 1 and row["seed1_p50_ms"] > 0 and row["sst2_b32_sps"] > 0


def test_op_callpath_smoke(tmp_path):
    """bench/op_callpath.py, onnxpipe's process only (no torch), one round of one block of two calls: every part
    is timed, and every other session option gives the very logits of onnxpipe's session."""
    _require_embedded()
    argv = ["--engines", "onnxpipe", "--rounds", "1", "--calls", "2", "--blocks", "1", "--out", str(tmp_path)]
    _run_bench("op_callpath.py", argv)
    result = json.loads((tmp_path / "op_callpath.json").read_text())
    _check_provenance(result["provenance"], "op_callpath.py", argv)
    parts = result["parts"]["onnxpipe"]
    in_place = "Python side in a real call (pipe(text) less its session.run)"
    assert {"pipe(text)", "session.run", "Python side (stubbed session)", in_place} <= set(parts)
    assert all(p["best_us"] > 0 and len(p["rounds_min_us"]) == 1 for p in parts.values())
    assert parts[in_place]["best_us"] < parts["pipe(text)"]["best_us"]  # the session's time is taken off
    info = result["info"]["onnxpipe"]
    assert info["bit_identical_logits"] and all(info["bit_identical_logits"].values()), info
    assert {"onnxpipe: call - session.run, us", "onnxpipe: Python side in a real call / stubbed"} <= set(
        result["derived"]
    )
    _check_markdown_header((tmp_path / "op_callpath.md").read_text(), result["provenance"])


def test_int8_default_smoke(tmp_path):
    """bench/int8_default.py with the embedded folder on both sides, one round of 12 sentences: as the runtime
    runs it, the same file agrees with itself on every label and each side has its timings."""
    _require_sst2()
    _require_embedded()
    argv = ["--folder", str(EMBEDDED), "--baseline", str(EMBEDDED), "--sentences", "12", "--rounds", "1"]
    _run_bench("int8_default.py", [*argv, "--out", str(tmp_path)])
    result = json.loads((tmp_path / "int8_default.json").read_text())
    _check_provenance(result["provenance"], "int8_default.py", [*argv, "--out", str(tmp_path)])
    assert result["label_agreement"] == 1.0 and result["sentences"] == 12 and result["batch1_sentences"] == 12
    for run in result["runs"].values():
        assert run["folder"] == "models/minilm-sst2" and run["execution"] == "alone"
        assert run["batch1_p50_ms"] > 0 and run["sentences_per_s"] > 0 and 0 <= run["accuracy"] <= 1
    assert result["batch1_speedup"] > 0 and result["throughput_ratio"] > 0
    _check_markdown_header((tmp_path / "int8_default.md").read_text(), result["provenance"])


def _batch_scale():
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import batch_scale
    finally:
        sys.path.remove(str(ROOT / "bench"))
    return batch_scale


@pytest.mark.ray
def test_batch_scale_smoke(ray_session, tmp_path):
    """bench/batch_scale.py --smoke in this process, on the session's Ray (it must use that one and leave it up):
    every engine runs and writes the local engine's file; every figure the cost model needs is written."""
    _require(ROOT.parent / "shared" / "data" / "sst2" / "train.tsv", "batch_scale.py reads SST-2 train")
    batch_scale = _batch_scale()
    with pytest.raises(SystemExit):  # a smoke must not replace the committed figures
        batch_scale.main(["--smoke"])
    argv = ["--smoke", "--out", str(tmp_path)]
    report = batch_scale.main(argv)
    assert ray_session.is_initialized()
    assert [r["engine"] for r in report["runs"]] == ["in-process", "local", "ray-1"]
    assert all(r["rows"] == 64 and r["identical_to_local"] for r in report["runs"][1:])
    assert all(r["sentences_per_s"] > 0 for r in report["runs"]) and report["smoke"] and report["subset"]
    stages = report["stages"]
    for name in ("read_s", "model_load_s", "tokenize_s", "infer_s", "write_s"):
        assert stages[name] > 0, name
    assert stages["ray_init_s"] is None  # the session's Ray: not started here
    assert stages["ray_job_start_s"] is not None
    assert all(v is not None for v in report["cost_model"].values()), report["cost_model"]
    _check_provenance(report["provenance"], "batch_scale.py", argv)
    assert json.loads((tmp_path / "batch_scale.json").read_text()) == json.loads(json.dumps(report))
    md = (tmp_path / "batch_scale.md").read_text()
    assert md.startswith("# `onnxpipe batch` at scale: SST-2 train (SMOKE run: not figures)")
    _check_markdown_header(md, report["provenance"])
    assert batch_scale.runs_table(report) in md and batch_scale.cost_table(report) in md


def test_docs_scale_out_shows_the_committed_batch_scale_figures():
    """docs/batch.md ("Scale out") quotes bench/results/batch_scale.json, through the tables batch_scale.py writes:
    after a new run, paste the two tables of bench/results/batch_scale.md (and update the prose around them)."""
    pytest.importorskip("pyarrow")
    batch_scale = _batch_scale()
    report = json.loads((ROOT / "bench" / "results" / "batch_scale.json").read_text())
    assert not report["smoke"]
    assert (ROOT / "bench" / "results" / "batch_scale.md").read_text() == batch_scale.markdown(report)
    section = (ROOT / "docs" / "batch.md").read_text()
    assert f"`{report['provenance']['command']}`" in section
    for table in (batch_scale.runs_table(report), batch_scale.cost_table(report)):
        assert table in section, f"docs/batch.md lacks this table of bench/results/batch_scale.md:\n{table}"


def test_footprint_bench_smoke(tmp_path):
    """bench/footprint.py: the default and low-power profiles, one round, a short idle window, one footprint run."""
    _require_embedded()
    out = tmp_path / "footprint.json"
    argv = ["--model", str(EMBEDDED), "--rounds", "1", "--calls", "5", "--idle-s", "0.2", "--sparse", "3"]
    argv += ["--only", "low-power", "--footprint-runs", "1", "--out", str(out)]
    _run_bench("footprint.py", argv)
    result = json.loads(out.read_text())
    _check_provenance(result["provenance"], "footprint.py", argv)
    rows = {r["config"]: r for r in result["profiles"]}
    assert set(rows) == {"default", "low-power"} and rows["low-power"]["threads"] == 1
    for r in rows.values():
        assert r["model"] == "models/minilm-sst2" and r["parity_with_default"] and r["b1_p50_ms"] > 0
        assert r["idle_cpu_pct"] >= 0 and r["sparse_cpu_pct"] > 0 and r["peak_rss_mb"] >= r["peak_rss_b1_mb"] > 0
    assert [f["profile"] for f in result["footprints"]] == ["default", "low-power"]
    for f in result["footprints"]:
        assert f["model"] == "models/minilm-sst2" and f["variants"][0]["cold_start_s"] > 0


@pytest.mark.parametrize(
    "kind,force,message",
    [
        ("file", False, "already exists; pass --force"),
        ("folder", False, "is a folder"),
        ("folder", True, "is a folder"),
    ],
)
def test_bench_json_out_never_replaces_a_file_unasked(kind, force, message, tmp_path, capsys, monkeypatch):
    """--json-out is checked before the benchmark runs: a folder, or an existing file without --force, is refused
    and left as it was (the report used to be written over any file, after minutes of timing)."""
    from onnxpipe import _bench

    _require_embedded()
    monkeypatch.setattr(_bench, "bench", lambda *a, **k: pytest.fail("the benchmark ran before the refusal"))
    out = tmp_path / "report.json"
    if kind == "file":
        out.write_text("yesterday's report")
    else:
        out.mkdir()
    argv = ["bench", str(EMBEDDED), "--json-out", str(out)] + (["--force"] if force else [])
    assert cli_main(argv) == 2
    assert message in capsys.readouterr().err
    assert (out.read_text() == "yesterday's report") if kind == "file" else out.is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]


def test_bench_json_out_force_replaces_the_file(tmp_path):
    _require_embedded()
    out = tmp_path / "report.json"
    out.write_text("yesterday's report")
    argv = ["bench", str(EMBEDDED), "--runs", "1", "--warmup", "0", "--batch-sizes", "1", "--seq-lengths", "8"]
    assert cli_main([*argv, "--json-out", str(out), "--force"]) == 0
    assert json.loads(out.read_text())["results"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]


def cpus_reference() -> dict[str, str]:
    sys.path.insert(0, str(ROOT / "tests" / "emulated"))
    import cpus

    return dict(cpus.REFERENCE)


@pytest.mark.emulated
def test_cpu_agreement_smoke(tmp_path):
    """bench/cpu_agreement.py: three SST-2 sentences of the embedded model, native against both emulated CPUs."""
    _require_sst2()
    _require_embedded()
    out = tmp_path / "cpu_agreement.json"
    argv = ["--model", str(EMBEDDED), "--sentences", "3", "--out", str(out)]
    _run_bench("cpu_agreement.py", argv)
    result = json.loads(out.read_text())
    _check_provenance(result["provenance"], "cpu_agreement.py", argv)
    assert result["model"] == "models/minilm-sst2" and result["n"] == 3 and result["kind"] == "classification"
    assert set(result["sides"]) == {"native", "native-pinned", "haswell", "arm64"}
    assert result["sides"]["arm64"]["machine"] == "aarch64" and result["sides"]["haswell"]["machine"] == "x86_64"
    assert all(s["onnxruntime"] for s in result["sides"].values())
    assert set(result["emulators"]) == {"qemu-x86_64", "qemu-aarch64-static"}
    assert {c: r["reference"] for c, r in result["against_reference"].items()} == cpus_reference()
    assert result["sides"]["native-pinned"]["onnxruntime"] == result["sides"]["arm64"]["onnxruntime"]
    for row in [*result["against_native"].values(), *result["against_reference"].values()]:
        assert 0 <= row["flips"] <= 3 and 0 <= row["mean_abs_dp"] <= row["p99_abs_dp"] <= row["max_abs_dp"] <= 1


@pytest.mark.emulated
@pytest.mark.torch
def test_cpu_agreement_embeddings_smoke(tiny_export, tmp_path):
    """The embeddings branch (STS-B sentences, cosine) on a tiny feature-extraction export, native against ARM64."""
    folder = tiny_export("bert", "feature-extraction")
    out = tmp_path / "cpu_agreement.json"
    argv = ["--model", str(folder), "--precision", "fp32", "--sentences", "4", "--cpus", "arm64", "--out", str(out)]
    _run_bench("cpu_agreement.py", argv)
    result = json.loads(out.read_text())
    assert result["kind"] == "embeddings" and result["n"] == 4 and set(result["against_reference"]) == {"arm64"}
    row = result["against_reference"]["arm64"]
    assert 0.999 <= row["min_cosine"] <= row["p1_cosine"] <= row["mean_cosine"] <= 1 + 1e-6


@pytest.mark.emulated  # its "release" side is the emulated tier's native-pinned onnxruntime
@pytest.mark.torch
def test_int8_sensitivity_smoke(tiny_checkpoint, tmp_path):
    """bench/int8_sensitivity.py on a tiny BERT: two candidates, three sentences, one noise draw, every stage."""
    _require_sst2()
    out = tmp_path / "int8_sensitivity.json"
    ckpt = tiny_checkpoint("bert", "text-classification")
    argv = ["--checkpoint", str(ckpt), "--sentences", "3", "--seeds", "1", "--candidates", "default,head-fp32"]
    _run_bench("int8_sensitivity.py", [*argv, "--stages", "--out", str(out)])
    result = json.loads(out.read_text())
    _check_provenance(result["provenance"], "int8_sensitivity.py", [*argv, "--stages", "--out", str(out)])
    assert set(result["candidates"]) == {"default", "head-fp32"} and result["n"] == 3
    assert result["onnxruntime"]["native-pinned"] == cpus_pinned_release()
    for row in result["candidates"].values():
        assert 0 <= row["accuracy"] <= 1 and row["vs_fp32"]["n"] == 872
        for key in ("release", "noise"):
            got = row[key]
            assert got["n"] == 3 and 0 <= got["mean_abs_dp"] <= got["p99_abs_dp"] <= got["max_abs_dp"] <= 1
    # a tiny BERT quantizes 2 layers x 4 stages, the pooler's and the classifier's inputs: 10 stages
    assert [s["stage"] for s in result["stages"]] == list(range(10))


def cpus_pinned_release() -> str:
    sys.path.insert(0, str(ROOT / "tests" / "emulated"))
    import provision

    return provision.ARM64_ORT.split("==")[1]


# -- serve_load.py's generation and wrk levels (bench/serve_levels.py) ------------------------------------------
def _serve_load(tmp_path, *argv: str) -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "serve_load.py"), *argv, "--rounds", "1", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.torch
def test_serve_load_generation_level_smoke(tiny_export, tmp_path):
    """Chat clients at 1 and 2 at once on a tiny Llama: every request answered, tokens counted from usage,
    greedy texts equal at both levels (a client that dropped the stream or a batch that changed an answer
    would show), and the table made from the JSON."""
    folder = tiny_export("llama", "text-generation", precisions="fp32")
    argv = ["--level", "generation", "--gen-model", str(folder), "--gen-concurrency", "1,2", "--gen-requests", "3"]
    _serve_load(tmp_path, *argv, "--max-tokens", "4")
    report = json.loads((tmp_path / "serve_generation.json").read_text())
    g = report["generation"]
    assert [(r["clients"], r["errors"], r["requests"]) for r in g["rounds"]] == [(1, 0, 3), (2, 0, 3)]
    assert all(0 < r["completion_tokens"] <= 3 * 4 for r in g["rounds"]), g["rounds"]
    assert g["text_mismatches"] == 0
    assert [s["clients"] for s in g["summary"]] == [1, 2] and g["summary"][0]["ratio_median"] == 1.0
    assert report["simd"] and report["loadavg"]["start"] >= 0 and report["machine"]["cores"] >= 1
    md = (tmp_path / "serve_generation.md").read_text()
    assert "| 2 clients: >= 2.5x the tokens/s of one at a time, 0 errors |" in md and "shared" in md


@pytest.mark.parametrize(
    "runtimes, kinds, target",
    [
        ((), ["offline", "wrk-1", "wrk-2"], "| 2 connections: >= 80 % of offline pipe(list), 0 errors |"),
        # two runtime folders side by side (here twice this checkout's): each one's levels in every round
        (("a", "b"), ["offline", "wrk-1", "wrk-1", "wrk-2", "wrk-2"], "0 errors (b) |"),
    ],
)
def test_serve_load_wrk_level_smoke(tmp_path, runtimes, kinds, target):
    """wrk at 1 and 2 connections against offline pipe of the same sentence: requests counted, 0 errors, ratios
    to pipe(list) reported."""
    if shutil.which("wrk") is None:
        pytest.skip("wrk is not installed (Debian: apt-get install wrk)")
    _require_embedded()
    _require_sst2()
    argv = ["--level", "wrk", "--wrk-connections", "1,2", "--wrk-seconds", "1", "--offline-copies", "8"]
    for label in runtimes:
        argv += ["--runtime", f"{label}={ROOT / 'runtime'}"]
    _serve_load(tmp_path, *argv)
    report = json.loads((tmp_path / "serve_wrk.json").read_text())
    w = report["wrk"]
    assert sorted(r["kind"] for r in w["rounds"]) == kinds
    assert [s.get("runtime") for s in w["summary"]] == ([x for x in runtimes for _ in (1, 2)] or [None, None])
    assert all(s["requests"] > 0 and s["errors"] == 0 and s["of_list_median"] > 0 for s in w["summary"])
    assert all(s["server_cpu_us_per_request_median"] > 0 for s in w["summary"])
    assert w["offline"]["list_per_s_median"] > 0 and w["offline"]["single_per_s_median"] > 0
    assert w["offline"]["list_cpu_us_per_item_median"] > 0
    assert target in (tmp_path / "serve_wrk.md").read_text()


@pytest.mark.torch
def test_cover_vocab_gives_every_model_id_a_text(tmp_path):
    """The generation level's decoder: ids past the small BPE decode to text (else a random-weight model streams
    no chunk and TTFT is unseen); the BPE's own ids are unchanged, and a second call changes nothing."""
    from tokenizers import Tokenizer

    from _tiny import _decoder_bpe

    sys.path.insert(0, str(ROOT / "bench"))
    try:
        from serve_levels import cover_vocab
    finally:
        sys.path.remove(str(ROOT / "bench"))
    _decoder_bpe("llama").save_pretrained(tmp_path)
    before = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    (tmp_path / "config.json").write_text(json.dumps({"vocab_size": before.get_vocab_size() + 50}))
    assert before.decode([before.get_vocab_size() + 10]) == ""
    cover_vocab(tmp_path)
    cover_vocab(tmp_path)
    after = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    assert after.get_vocab_size() == before.get_vocab_size() + 50
    assert after.decode([before.get_vocab_size() + 10]) == f"<t{before.get_vocab_size() + 10}>"
    text = "a good movie"
    assert after.encode(text).ids == before.encode(text).ids
