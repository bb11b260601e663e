"""The CPU engines a user would pick instead, side by side on the sentiment model: batch 1 and requests of 32.

    python bench/compare_engines.py [--rounds 5] [--engines a,b,...] [--out bench/results]

Runs run.py's workers (each engine its own process, engines rotated per round; OpenVINO and CTranslate2 on
their own venvs, built on first use) on two workloads: ``seed1`` (the seed sentence, batch 1) and ``sst2-b32``
(SST-2 dev in requests of 32, which also gives each engine's accuracy), and writes engine_comparison.json and
.md: per engine the median and the best round, the accuracy, the versions, every round's figures, the load
average at start and end and the CPU's SIMD flags, plus the targets' ratios from the best rounds. run.py's own
outputs go to ``--work`` (git-ignored), so the suite's committed results.md stays as it is.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from provenance import provenance, run_header, simd_flags, target, target_table, write_report  # noqa: E402

# ---- configuration ---------------------------------------------------------------------------------------
ENGINES = [
    "onnxpipe-int8",
    "optimum-same-int8",
    "openvino-fp32",
    "openvino-int8-wo",
    "openvino-int8-static",
    "ctranslate2-int8",
    "ctranslate2-int8-1thread",
    "transformers-fp32",
]
WORKLOADS = ["seed1", "sst2-b32"]
ROUNDS = 5
ONNXPIPE, TORCH, OPTIMUM_SAME = "onnxpipe-int8", "transformers-fp32", "optimum-same-int8"
OV_INT8 = ("openvino-int8-wo", "openvino-int8-static")
# (name, goal, numerator engine, denominator engine or the best OpenVINO int8, workload): ratios of best rounds
TARGETS = [
    ("batch 1: OpenVINO's best int8 / onnxpipe", 1.3, "OV_INT8", ONNXPIPE, "seed1"),
    ("batch 1: transformers on PyTorch / onnxpipe", 8.0, TORCH, ONNXPIPE, "seed1"),
    ("batch 1: Optimum on the same file / onnxpipe", 1.5, OPTIMUM_SAME, ONNXPIPE, "seed1"),
    ("requests of 32: onnxpipe / OpenVINO's best int8", 1.4, ONNXPIPE, "OV_INT8", "sst2-b32"),
]
# ----------------------------------------------------------------------------------------------------------


def summarize(raw: list[dict]) -> dict:
    """Per engine: median and best round per workload, accuracy, versions, every round's figures."""
    out: dict = {}
    for r in raw:
        if r["task"] != "cls":
            continue
        e = out.setdefault(r["engine"], {"rounds": {}, "status": "ok"})
        if r["type"] == "unavailable":
            e["status"] = f"unavailable: {r['reason']}"
        elif r["type"] == "load":
            e["versions"], e["provider"], e["parity"] = r["versions"], r["provider"], r.get("parity_check")
        elif r["type"] == "result":
            key = "p50_ms" if r["workload"] == "seed1" else "throughput_sps"
            e["rounds"].setdefault(r["workload"], []).append(round(r[key], 4))
            if "accuracy" in r:
                e["accuracy"] = r["accuracy"]
    for e in out.values():
        for wl, xs in e["rounds"].items():
            e[wl] = {"median": statistics.median(xs), "best": min(xs) if wl == "seed1" else max(xs)}
    return out


def _best(engines: dict, name: str, wl: str) -> tuple[float | None, str]:
    names = OV_INT8 if name == "OV_INT8" else (name,)
    got = [(engines[n][wl]["best"], n) for n in names if n in engines and wl in engines[n]]
    if not got:
        return None, name
    return (min(got) if wl == "seed1" else max(got)) if len(got) > 1 else got[0]


def targets(engines: dict) -> list[dict]:
    rows = []
    for name, goal, num, den, wl in TARGETS:
        (a, an), (b, bn) = _best(engines, num, wl), _best(engines, den, wl)
        ratio = None if a is None or b is None else a / b
        unit = "ms" if wl == "seed1" else "sentences/s"
        met = None if ratio is None else ratio >= goal
        rows.append(target(f"{name} >= {goal}", ratio, met, f"{an} {a} / {bn} {b} ({unit}, best rounds)"))
    return rows


def markdown(report: dict) -> str:
    lines = [
        "# CPU engines side by side: minilm-sst2, batch 1 and requests of 32 (bench/compare_engines.py)",
        "",
        *run_header(report),
        f"{report['rounds']} rounds, each engine its own process once per round, order rotated; best round and "
        "median. Batch 1: the seed sentence, p50 ms of one round. Requests of 32: the 872 SST-2 dev sentences in "
        "file order, sentences/s; the accuracy is from those requests.",
        "",
        "| engine | batch 1 best (median), ms | requests of 32 best (median), sentences/s | SST-2 dev acc | versions |",
        "|---|---|---|---|---|",
    ]
    for name, e in report["engines"].items():
        if e["status"] != "ok":
            lines.append(f"| {name} | {e['status']} | | | |")
            continue
        s, b = e.get("seed1", {}), e.get("sst2-b32", {})
        versions = ", ".join(f"{k} {v}" for k, v in sorted(e.get("versions", {}).items()))
        lines.append(
            f"| {name} | {s.get('best', 0):.2f} ({s.get('median', 0):.2f}) | {b.get('best', 0):.0f} "
            f"({b.get('median', 0):.0f}) | {e.get('accuracy', float('nan')):.4f} | {versions} |"
        )
    lines += ["", *target_table(report["targets"], "target (best rounds)")]
    if report.get("note"):
        lines += ["", report["note"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=ROUNDS)
    ap.add_argument("--engines", default=",".join(ENGINES))
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--work", type=Path, default=HERE / ".cache" / "compare", help="run.py's own outputs")
    ap.add_argument("--note", default="", help="a paragraph added under the table")
    ap.add_argument("--smoke", action="store_true", help=argparse.SUPPRESS)  # pytest: run.py's smoke settings
    ap.add_argument("run_args", nargs="*", help="further run.py arguments, after --")
    argv = sys.argv[1:] if argv is None else list(argv)
    a = ap.parse_args(argv)
    import run

    prov = provenance(__file__, argv)
    load_start = round(os.getloadavg()[0], 2)
    args = ["--tasks", "cls", "--engines", a.engines, "--workloads", ",".join(WORKLOADS), "--out", str(a.work)]
    args += ["--smoke"] if a.smoke else ["--rounds", str(a.rounds)]
    if run.main(args + a.run_args) != 0:
        return 1
    raw = [json.loads(line) for line in (a.work / "raw" / "raw.jsonl").read_text().splitlines() if line.strip()]
    engines = summarize(raw)
    order = [e for e in a.engines.split(",") if e in engines]
    report = {
        "provenance": prov,
        "simd_flags": simd_flags(),
        "loadavg": {"start": load_start, "end": round(os.getloadavg()[0], 2)},
        "rounds": 1 if a.smoke else a.rounds,
        "workloads": WORKLOADS,
        "engines": {e: engines[e] for e in order},
        "targets": targets(engines),
        "note": a.note,
    }
    print(write_report(a.out, "engine_comparison", report, markdown))
    return 0


if __name__ == "__main__":
    sys.exit(main())
