"""The benches' round bookkeeping on made-up records: engines rotate per round, the best round is reported beside
the median, counts add up. No timing: the records are written here."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


def _module(name: str):
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCH))


@pytest.mark.parametrize("n", [1, 2, 3, 7])
def test_every_engine_leads_once_in_as_many_rounds(n):
    rotated = _module("generate").rotated
    items = [f"e{i}" for i in range(n)]
    orders = [rotated(items, r) for r in range(n)]
    assert all(sorted(o) == items for o in orders)
    assert sorted(o[0] for o in orders) == items
    assert rotated([], 3) == []


@pytest.mark.parametrize(
    "shared,groups",
    [
        ([], [["t1"], ["o1"], ["x1"], ["t2"], ["v1"], ["v2"]]),  # a full run: every engine in its own process
        (["t", "v"], [["t1", "t2"], ["o1"], ["x1"], ["v1"], ["v2"]]),  # the smoke's; one process per venv
        (["o", "x"], [["t1"], ["o1", "x1"], ["t2"], ["v1"], ["v2"]]),
    ],
)
def test_run_puts_only_the_shared_loaders_engines_in_one_process(shared, groups):
    """run.py's worker processes for one round: the engines of the `shared` loaders together (run.py's smoke:
    the PyTorch engines), where the first of them is; every other engine alone."""
    run = _module("run")
    specs = [
        run.Spec("t1", "a", "cls", "fp32", "t"),
        run.Spec("o1", "e", "cls", "int8", "o"),
        run.Spec("x1", "d", "cls", "int8", "x"),
        run.Spec("t2", "a", "fe", "fp32", "t"),
        run.Spec("v1", "f", "cls", "int8", "v", {"venv": "a"}),
        run.Spec("v2", "f", "cls", "int8", "v", {"venv": "b"}),
    ]
    assert [[s.name for s in g] for g in run.worker_groups(specs, shared)] == groups
    assert "transformers" in run.SMOKE["shared_process"] and "shared_process" not in run.QUICK


@pytest.mark.parametrize(
    "shared,groups",
    [
        ([], [["c"], ["a"], ["b"], ["d"]]),  # the bench: every engine in its own process
        (["a", "d"], [["c"], ["a", "d"], ["b"]]),  # the smoke's --shared-process
    ],
)
def test_seq2seq_puts_only_the_shared_engines_in_one_process(shared, groups):
    assert _module("seq2seq").worker_groups(["c", "a", "b", "d"], shared) == groups


def test_generate_summary_keeps_the_best_round_beside_the_median():
    runs = [
        {"ttft_s": t, "decode_tokens_per_s": d, "e2e_tokens_per_s": d / 2} for t, d in ((0.3, 10), (0.1, 30), (0.2, 20))
    ]
    s = _module("generate").summarize(runs)
    assert s["ttft_ms"] == pytest.approx(200) and s["best_ttft_ms"] == pytest.approx(100)
    assert s["decode_tokens_per_s"] == 20 and s["best_decode_tokens_per_s"] == 30 and s["runs"] == runs


def test_serve_load_aggregates_rounds_per_engine_and_level():
    agg = _module("serve_load").aggregate
    per_round = [
        {"engine": e, "clients": c, "round": r, "requests": 10, "ok": 10 - err, "errors": err,
         "error_kinds": {"503": err} if err else {}, "seconds": 1.0, "requests_per_s": rps, "p50_ms": 1.0,
         "p99_ms": 2.0, "mean_batch_size": 1.0, "server_cpu_ms_per_request": 0.5, "client_cpu_ms_per_request": 0.1}
        for e, c, r, err, rps in (("a", 1, 0, 0, 100), ("a", 1, 1, 1, 300), ("a", 1, 2, 0, 200), ("b", 1, 0, 0, 50))
    ]  # fmt: skip
    rows = agg(per_round, ["a", "b"], (1, 8))
    assert [(r["engine"], r["clients"], r["rounds"]) for r in rows] == [("a", 1, 3), ("b", 1, 1)]
    a = rows[0]
    assert (a["requests"], a["ok"], a["errors"], a["error_kinds"]) == (30, 29, 1, {"503": 1})
    assert a["requests_per_s"] == 200 and a["best_requests_per_s"] == 300 and a["min_round_requests"] == 10


def test_compare_engines_summary_and_targets_use_best_rounds():
    ce = _module("compare_engines")

    def rounds(engine, seeds, sps, acc=0.9):
        out = [{"task": "cls", "engine": engine, "type": "load", "versions": {"x": "1"}, "provider": "p"}]
        for s, t in zip(seeds, sps):
            out.append({"task": "cls", "engine": engine, "type": "result", "workload": "seed1", "p50_ms": s})
            out.append(
                {"task": "cls", "engine": engine, "type": "result", "workload": "sst2-b32", "throughput_sps": t,
                 "accuracy": acc}
            )  # fmt: skip
        return out

    raw = [
        *rounds("onnxpipe-int8", [1.0, 2.0, 1.5], [600, 400, 500]),
        *rounds("openvino-int8-wo", [1.4, 3.0, 2.0], [300, 350, 200]),
        *rounds("openvino-int8-static", [1.2, 1.3, 5.0], [400, 100, 100]),
        *rounds("transformers-fp32", [10.0, 12.0, 11.0], [100, 120, 110]),
        {"task": "cls", "engine": "ctranslate2-int8", "type": "unavailable", "reason": "no venv"},
    ]
    engines = ce.summarize(raw)
    assert engines["onnxpipe-int8"]["seed1"] == {"median": 1.5, "best": 1.0}
    assert engines["onnxpipe-int8"]["sst2-b32"] == {"median": 500, "best": 600}
    assert engines["ctranslate2-int8"]["status"] == "unavailable: no venv"
    t = {row["target"].split(" >=")[0]: row for row in ce.targets(engines)}
    # OpenVINO's best int8 at batch 1 is the static file's best round (1.2 ms), in requests of 32 its 400/s
    assert t["batch 1: OpenVINO's best int8 / onnxpipe"]["ratio"] == pytest.approx(1.2)
    assert t["batch 1: OpenVINO's best int8 / onnxpipe"]["met"] is False
    assert t["batch 1: transformers on PyTorch / onnxpipe"]["ratio"] == pytest.approx(10.0)
    assert t["requests of 32: onnxpipe / OpenVINO's best int8"]["ratio"] == pytest.approx(1.5)
    assert t["batch 1: Optimum on the same file / onnxpipe"]["met"] is None  # not measured
    assert "| ctranslate2-int8 | unavailable: no venv |" in ce.markdown(
        {
            "provenance": {
                "command": "c",
                "git": {"commit": "x", "dirty": False},
                "date": "d",
                "machine": {"cpu": "cpu", "cores": 2},
            },
            "simd_flags": ["avx2"],
            "loadavg": {"start": 1, "end": 2},
            "rounds": 3,
            "engines": engines,
            "targets": ce.targets(engines),
        }
    )
