"""Where batch 1's time goes in an int8 file: node counts (the file, and onnxruntime's graph after its load-time
fusions) and a per-node time table from onnxruntime's profiler.

    python bench/op_profile.py [--file models/minilm-sst2/onnx/model_quantized.onnx] [--runs 300]
        [--variants] [--rounds 5] [--out bench/results]

For each file: the ONNX file's nodes per op type; the graph onnxruntime runs (``optimized_model_filepath``, at
onnxpipe's own session options: level "extended", its threads), nodes per op type; then ``--runs`` batch-1 runs
of the seed sentence with ``enable_profiling``, and per node and per op type the kernel time (the profiler's
``*_kernel_time`` events, each node's median over the runs) and its share of their sum. The profiler's own cost
inflates every node alike, so the shares compare and the sum is an upper bound; the latency beside it is timed
without the profiler.

``--variants`` also builds the "fewer operators" prototypes (op_variants.py) from the same file and times every
file at batch 1 in alternated rounds (each round runs every file once, order rotated; best round and median).
Writes op_profile.json and op_profile.md. Needs onnx (the export extra).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from provenance import provenance, write_report  # noqa: E402
from workloads import SEED  # noqa: E402

# ---- configuration ---------------------------------------------------------------------------------------
FILE = ROOT / "models/minilm-sst2/onnx/model_quantized.onnx"
RUNS = 300  # profiled batch-1 runs per file
ROUNDS = 5  # alternated latency rounds (--variants)
CALLS = 200  # timed batch-1 runs per file per round
TOP = 15  # nodes listed in the per-node table
# ----------------------------------------------------------------------------------------------------------


def op_counts(model: onnx.ModelProto) -> dict[str, int]:
    c = collections.Counter(n.op_type for n in model.graph.node)
    return dict(sorted(c.items(), key=lambda kv: (-kv[1], kv[0])))


def _options(optimized: Path | None = None, profile: bool = False) -> ort.SessionOptions:
    from onnxpipe._session import session_options

    opts = session_options()
    if optimized is not None:
        opts.optimized_model_filepath = str(optimized)
    opts.enable_profiling = profile
    return opts


def seed_feeds(folder: Path, names: list[str]) -> dict[str, np.ndarray]:
    from onnxpipe import AutoTokenizer

    enc = AutoTokenizer.from_pretrained(folder)([SEED], return_tensors="np")
    return {k: np.asarray(v, dtype=np.int64) for k, v in enc.items() if k in names}


def session(path: Path, **kw) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), _options(**kw), providers=["CPUExecutionProvider"])


def profile(path: Path, feeds_for, runs: int, tmp: Path) -> dict:
    """Node counts before and after onnxruntime's fusions, and the profiler's per-node kernel times."""
    optimized = tmp / f"{path.stem}.optimized.onnx"
    session(path, optimized=optimized)
    after = onnx.load(str(optimized), load_external_data=False)
    sess = session(path, profile=True)
    feeds = feeds_for([i.name for i in sess.get_inputs()])
    for _ in range(20):
        sess.run(None, feeds)
    trace = Path(sess.end_profiling())
    trace.unlink()  # the warm-up's profile; profiling restarts below
    sess = session(path, profile=True)
    for _ in range(20):
        sess.run(None, feeds)
    for _ in range(runs):
        sess.run(None, feeds)
    trace = Path(sess.end_profiling())
    events = json.loads(trace.read_text())
    trace.unlink()
    per_node: dict[str, list[float]] = collections.defaultdict(list)
    op_of: dict[str, str] = {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            node = e["name"][: -len("_kernel_time")]
            per_node[node].append(e["dur"])
            op_of[node] = e["args"].get("op_name", "?")
    # The median run of each node, not the mean: on a shared machine a run preempted mid-node would charge that
    # node with another process's time slice.
    nodes = sorted(
        ({"node": n, "op": op_of[n], "us": float(np.median(v))} for n, v in per_node.items()), key=lambda r: -r["us"]
    )
    total = sum(r["us"] for r in nodes)
    by_op: dict[str, dict] = {}
    for r in nodes:
        o = by_op.setdefault(r["op"], {"op": r["op"], "nodes": 0, "us": 0.0})
        o["nodes"] += 1
        o["us"] += r["us"]
    for r in [*nodes, *by_op.values()]:
        r["share"] = round(r["us"] / total, 4) if total else None
        r["us"] = round(r["us"], 2)
    return {
        "file_nodes": len(onnx.load(str(path), load_external_data=False).graph.node),
        "file_ops": op_counts(onnx.load(str(path), load_external_data=False)),
        "ort_nodes": len(after.graph.node),
        "ort_ops": op_counts(after),
        "kernel_us_per_run": round(total, 1),
        "kernels_per_run": len(nodes),
        "by_op": sorted(by_op.values(), key=lambda r: -r["us"]),
        "top_nodes": nodes[:TOP],
    }


def latency_rounds(paths: dict[str, Path], feeds_for, rounds: int, calls: int) -> dict[str, dict]:
    """Batch-1 p50 per file, files alternated per round (each round: every file once, order rotated)."""
    sessions = {k: session(p) for k, p in paths.items()}
    feeds = {k: feeds_for([i.name for i in s.get_inputs()]) for k, s in sessions.items()}
    per: dict[str, list[float]] = {k: [] for k in paths}
    fastest = dict.fromkeys(paths, float("inf"))
    names = list(paths)
    for rnd in range(rounds):
        for k in names[rnd % len(names) :] + names[: rnd % len(names)]:
            s, f = sessions[k], feeds[k]
            for _ in range(30):
                s.run(None, f)
            lat = []
            for _ in range(calls):
                t = time.perf_counter()
                s.run(None, f)
                lat.append(time.perf_counter() - t)
            per[k].append(1e3 * float(np.median(lat)))
            fastest[k] = min(fastest[k], 1e3 * min(lat))
    out = {}
    for k, v in per.items():
        # fastest_call_ms: the quickest single run of all rounds, the least disturbed by other processes when the
        # machine is oversubscribed (then every round's p50 is mostly their time slices)
        out[k] = {
            "best_ms": round(min(v), 4),
            "median_ms": round(statistics.median(v), 4),
            "fastest_call_ms": round(fastest[k], 4),
            "rounds": v,
        }
    return out


def markdown(report: dict) -> str:
    prov, m = report["provenance"], report["provenance"]["machine"]
    lines = [
        "# Where batch 1's time goes: int8 minilm-sst2 (bench/op_profile.py)",
        "",
        f"Command: `{prov['command']}`; commit `{prov['git']['commit']}`; {prov['date']}.  ",
        f"CPU: {m['cpu']}, {m['cores']} cores, {' '.join(m['simd_flags'])}; onnxruntime {ort.__version__}; load "
        f"average {report['loadavg']['start']} at start, {report['loadavg']['end']} at end.  ",
        f"Seed sentence ({report['seed_tokens']} tokens), batch 1, onnxpipe's session options (level "
        f'"extended", {report["threads"]} threads); profiler: {report["runs"]} runs, each node\'s median kernel time.',
        "",
        "| file | nodes in the file | nodes onnxruntime runs | summed node medians (profiled) | batch 1 p50 best "
        "round (median), ms | fastest call, ms |",
        "|---|---|---|---|---|---|",
    ]
    # the shipped file first; the JSON's keys are sorted
    files = dict(sorted(report["files"].items(), key=lambda kv: (kv[0] != "shipped int8", kv[0])))
    for name, r in files.items():
        lat = report.get("latency", {}).get(name)
        lat_s = f"{lat['best_ms']:.3f} ({lat['median_ms']:.3f}) | {lat.get('fastest_call_ms', '-')}" if lat else "- | -"
        lines.append(f"| {name} | {r['file_nodes']} | {r['ort_nodes']} | {r['kernel_us_per_run']} us | {lat_s} |")
    for name, r in files.items():
        lines += [
            "",
            f"## {name}",
            "",
            f"Op types in the file: {', '.join(f'{k} {v}' for k, v in r['file_ops'].items())}.  ",
            f"After onnxruntime's fusions: {', '.join(f'{k} {v}' for k, v in r['ort_ops'].items())}.",
            "",
            "| op type | nodes | us per run | share |",
            "|---|---|---|---|",
            *(f"| {o['op']} | {o['nodes']} | {o['us']} | {100 * o['share']:.1f} % |" for o in r["by_op"]),
            "",
            f"Top {len(r['top_nodes'])} nodes:",
            "",
            "| node | op | us per run | share |",
            "|---|---|---|---|",
            *(f"| {n['node']} | {n['op']} | {n['us']} | {100 * n['share']:.1f} % |" for n in r["top_nodes"]),
        ]
    if report.get("variants"):
        lines += ["", "## Variants", "", *(f"- **{k}**: {v}" for k, v in report["variants"].items())]
    if report.get("note"):
        lines += ["", report["note"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--file", type=Path, default=FILE)
    ap.add_argument("--runs", type=int, default=RUNS)
    ap.add_argument("--variants", action="store_true", help="also build and time the fewer-operator prototypes")
    ap.add_argument("--rounds", type=int, default=ROUNDS)
    ap.add_argument("--calls", type=int, default=CALLS)
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--note", default="")
    argv = sys.argv[1:] if argv is None else list(argv)
    a = ap.parse_args(argv)
    prov = provenance(__file__, argv)
    load_start = round(os.getloadavg()[0], 2)
    folder = a.file.resolve().parents[1]
    feeds_for = lambda names: seed_feeds(folder, names)  # noqa: E731
    files = {"shipped int8": a.file}
    described: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="op-profile-") as tmp_name:
        tmp = Path(tmp_name)
        if a.variants:
            from op_variants import build_all

            for name, (path, what) in build_all(a.file, tmp).items():
                files[name], described[name] = path, what
        report = {
            "provenance": prov,
            "runs": a.runs,
            "threads": _options().intra_op_num_threads,
            "seed_tokens": int(feeds_for(["input_ids"])["input_ids"].shape[1]),
            "files": {k: profile(p, feeds_for, a.runs, tmp) for k, p in files.items()},
            "variants": described,
            "note": a.note,
        }
        if a.variants:
            report["latency"] = latency_rounds(files, feeds_for, a.rounds, a.calls)
    report["loadavg"] = {"start": load_start, "end": round(os.getloadavg()[0], 2)}
    print(write_report(a.out, "op_profile", report, markdown))
    return 0


if __name__ == "__main__":
    sys.exit(main())
