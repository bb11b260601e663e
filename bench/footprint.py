"""Edge figures: the default session profile against low-power, and each model folder's footprint.

Per configuration, in its own process (a spinning pool or a warm arena would disturb the next), through
onnxpipe's pipeline: batch-1 latency (p50, p90), the process's CPU time while it sits idle after a burst of
predictions (spinning threads burn it, so spinning off should give ~0) and while it answers sparse requests
(REQUEST_RATE per second: the CPU a mostly idle edge box spends per request), resident memory back at batch 1
after one large batch (LARGE_BATCH texts of LARGE_TOKENS tokens: what an arena keeps) and peak RSS.
Configurations rotate over rounds; medians. Then ``onnxpipe info --footprint`` (disk, installed size, peak RSS
at batch 1 and cold start, in fresh processes) for every model and profile.

    .venv/bin/python bench/footprint.py [--model models/minilm-sst2] [--model DIR ...] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from provenance import provenance, rel  # noqa: E402

# ---- configuration ---------------------------------------------------------------------------------------
# name -> (profile, overrides of that profile's Profile fields): the two profiles, and the low-power profile
# without the memory arena and with 2 threads, to show what each choice buys.
CONFIGS = {
    "default": ("default", {}),
    "low-power": ("low-power", {}),
    "low-power - arena": ("low-power", {"cpu_mem_arena": False}),
    "low-power + 2 threads": ("low-power", {"threads": 2}),
}
FORMATS = ("onnx",)  # --ort-too adds the ORT-format copy where the folder has one
LATENCY_CALLS = 200  # timed batch-1 calls (the seed sentence) per process
BURST = 50  # predictions back to back before the idle window
IDLE_S = 2.0  # the idle window after the burst
REQUEST_RATE = 10  # sparse requests per second ...
SPARSE_REQUESTS = 30  # ... this many of them
LARGE_BATCH, LARGE_TOKENS = 32, 128  # the batch whose buffers an arena keeps afterwards
FOOTPRINT_RUNS = 3  # fresh processes per variant for onnxpipe info --footprint
# ----------------------------------------------------------------------------------------------------------


def _status() -> dict[str, float]:
    s = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return {"rss_mb": int(s["VmRSS"].split()[0]) / 1024, "peak_rss_mb": int(s["VmHWM"].split()[0]) / 1024}


def child(model: str, config: str, fmt: str, a: argparse.Namespace) -> dict:
    from dataclasses import replace

    from onnxpipe import pipeline
    from onnxpipe._session import PROFILES
    from workloads import SEED, SEED2, synthetic

    profile, overrides = CONFIGS[config]
    if overrides:  # a configuration of this process only
        PROFILES[config] = replace(PROFILES[profile], **overrides)
        profile = config
    pipe = pipeline(model=model, profile=profile, format=fmt, precision=a.precision)
    parity = pipe(list(SEED2))
    rss_loaded = _status()["rss_mb"]
    for _ in range(10):
        pipe(SEED)
    lat = []
    for _ in range(a.calls):
        t = time.perf_counter()
        pipe(SEED)
        lat.append(time.perf_counter() - t)
    peak_b1 = _status()["peak_rss_mb"]
    for _ in range(BURST):
        pipe(SEED)
    cpu0, t0 = time.process_time(), time.perf_counter()
    time.sleep(a.idle_s)
    idle_cpu = (time.process_time() - cpu0) / (time.perf_counter() - t0)
    period = 1 / REQUEST_RATE
    cpu0, t0 = time.process_time(), time.perf_counter()
    for i in range(a.sparse):
        pipe(SEED)
        time.sleep(max(0.0, t0 + (i + 1) * period - time.perf_counter()))
    sparse_wall = time.perf_counter() - t0
    sparse_cpu = time.process_time() - cpu0
    pipe([synthetic(LARGE_TOKENS)] * LARGE_BATCH, batch_size=LARGE_BATCH)
    for _ in range(20):  # back to batch 1: an arena keeps the large batch's memory, malloc hands most back
        pipe(SEED)
    time.sleep(0.2)
    after_large = _status()
    opts = pipe.model.session.get_session_options()
    return {
        "parity": list(_flat(parity)),
        "threads": opts.intra_op_num_threads,
        "arena": opts.enable_cpu_mem_arena,
        "b1_p50_ms": statistics.median(lat) * 1e3,
        "b1_p90_ms": sorted(lat)[int(0.9 * (len(lat) - 1))] * 1e3,
        "idle_cpu_pct": 100 * idle_cpu,
        "sparse_cpu_pct": 100 * sparse_cpu / sparse_wall,
        "sparse_cpu_ms_per_request": 1e3 * sparse_cpu / a.sparse,
        "rss_loaded_mb": rss_loaded,
        "peak_rss_b1_mb": peak_b1,
        "rss_at_rest_after_large_mb": after_large["rss_mb"],
        "peak_rss_mb": after_large["peak_rss_mb"],
    }


def _flat(x):
    """Every label and number of a pipeline's output, in order (dicts by sorted key, arrays flattened)."""
    if isinstance(x, dict):
        for k in sorted(x):
            yield from _flat(x[k])
    elif isinstance(x, (list, tuple)):
        for v in x:
            yield from _flat(v)
    elif hasattr(x, "tolist"):  # numpy arrays and scalars
        yield from _flat(x.tolist()) if isinstance(x.tolist(), list) else [x.tolist()]
    else:
        yield x


def _parity_ok(a: list, b: list) -> bool:
    """The same labels, and numbers within 1e-3 (1 vs N threads sum in another order)."""
    if len(a) != len(b):
        return False
    return all(p == q if isinstance(p, str) or isinstance(q, str) else abs(p - q) < 1e-3 for p, q in zip(a, b))


def profiles(model: str, a: argparse.Namespace, argv_base: list[str]) -> list[dict]:
    from onnxpipe._manifest import load_manifest

    manifest = load_manifest(model, verify=False)
    variant = manifest.variants[a.precision or next(p for p in ("int8", "int4", "fp32") if p in manifest.variants)]
    formats = [f for f in FORMATS + (("ort",) if a.ort_too else ()) if f == "onnx" or variant.ort is not None]
    keys = [(c, f) for f in formats for c in CONFIGS if not a.only or c in a.only.split(",") or c == "default"]
    got: dict[tuple[str, str], list[dict]] = {k: [] for k in keys}
    for rnd in range(a.rounds):
        for config, fmt in keys[rnd % len(keys) :] + keys[: rnd % len(keys)]:
            out = subprocess.run(
                [sys.executable, __file__, *argv_base, "--child", json.dumps([model, config, fmt])],
                capture_output=True,
                text=True,
            )
            if out.returncode != 0:
                raise RuntimeError(f"{config}/{fmt} failed: {out.stderr[-2000:]}")
            got[(config, fmt)].append(json.loads(out.stdout.strip().splitlines()[-1]))
    rows = []
    base = got[("default", "onnx")][0]["parity"]
    for (config, fmt), rs in got.items():
        row = {"model": rel(model), "precision": a.precision or "default", "config": config, "format": fmt}
        row["rounds"] = len(rs)
        row |= {"threads": rs[0]["threads"], "arena": rs[0]["arena"]}
        for key in rs[0]:
            if key not in ("parity", "threads", "arena"):
                row[key] = round(statistics.median(r[key] for r in rs), 3)
        row["parity_with_default"] = all(_parity_ok(r["parity"], base) for r in rs)
        rows.append(row)
    return rows


def print_rows(rows: list[dict]) -> None:
    print(
        f"{'model':24s} {'configuration':22s} {'fmt':4s} {'b1 p50 ms':>9s} {'idle CPU %':>10s} "
        f"{'CPU % @10/s':>11s} {'peak b1 MB':>10s} {'RSS rest MB':>11s} {'peak MB':>8s} parity"
    )
    for r in rows:
        print(
            f"{Path(r['model']).name:24s} {r['config']:22s} {r['format']:4s} {r['b1_p50_ms']:9.2f} "
            f"{r['idle_cpu_pct']:10.2f} {r['sparse_cpu_pct']:11.2f} {r['peak_rss_b1_mb']:10.1f} "
            f"{r['rss_at_rest_after_large_mb']:11.1f} {r['peak_rss_mb']:8.1f} "
            f"{'ok' if r['parity_with_default'] else 'DIFFERS'}"
        )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--model",
        action="append",
        help="model folder (repeatable; default models/minilm-sst2)",
    )
    ap.add_argument("--rounds", type=int, default=3, help="rounds, configurations rotated (default 3)")
    ap.add_argument("--calls", type=int, default=LATENCY_CALLS, help=f"timed batch-1 calls (default {LATENCY_CALLS})")
    ap.add_argument("--idle-s", type=float, default=IDLE_S, help=f"idle window after the burst (default {IDLE_S})")
    ap.add_argument(
        "--sparse",
        type=int,
        default=SPARSE_REQUESTS,
        help=f"requests at {REQUEST_RATE}/s (default {SPARSE_REQUESTS})",
    )
    ap.add_argument("--precision", help="the variant the profiles run on (default: the pipeline's, int8 where present)")
    ap.add_argument("--only", help="comma-separated configurations (default: all; 'default' always runs)")
    ap.add_argument("--ort-too", action="store_true", help="also the ORT-format copy, where the folder has one")
    ap.add_argument(
        "--footprint-runs",
        type=int,
        default=FOOTPRINT_RUNS,
        help=f"fresh processes per variant for the footprint (default {FOOTPRINT_RUNS}; 0: skip it)",
    )
    ap.add_argument(
        "--out", type=Path, default=HERE / "results" / "footprint.json", help="JSON out (default bench/results/)"
    )
    ap.add_argument("--child", help=argparse.SUPPRESS)  # the parent's per-process call: [model, config, format]
    argv = sys.argv[1:] if argv is None else list(argv)
    a = ap.parse_args(argv)
    if a.child:
        print(json.dumps(child(*json.loads(a.child), a)))
        return 0
    models = a.model or [str(HERE.parent / "models" / "minilm-sst2")]
    prov = provenance(__file__, argv)
    base = ["--calls", str(a.calls), "--idle-s", str(a.idle_s), "--sparse", str(a.sparse)]
    base += ["--precision", a.precision] if a.precision else []
    rows = [row for m in models for row in profiles(m, a, base)]
    print_rows(rows)
    footprints = []
    if a.footprint_runs:
        from onnxpipe._footprint import footprint, format_report

        for m in models:
            for profile in ("default", "low-power"):
                report = footprint(m, profile=profile, runs=a.footprint_runs)
                report["model"] = rel(m)
                print(format_report(report))
                footprints.append(report)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "provenance": prov,
        "note": "timings under whatever load the machine had: loadavg_1min_at_start in provenance",
        "config": {
            "calls": a.calls,
            "idle_s": a.idle_s,
            "request_rate": REQUEST_RATE,
            "sparse": a.sparse,
            "large_batch": [LARGE_BATCH, LARGE_TOKENS],
        },
        "profiles": rows,
        "footprints": footprints,
    }
    a.out.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
