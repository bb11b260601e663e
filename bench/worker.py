"""One engine in one process: load, first prediction (cold start and parity), then every workload with
warm-up and timed rounds. Prints one JSON line per record on stdout; run.py starts it and reads them. (run.py's
pytest smoke, which times nothing, gives several engines one process, one engine after another.)

Kept in its own process because onnxruntime's and PyTorch's thread pools keep spinning after a call and
would steal the cores from the next engine measured in the same process.
"""

from __future__ import annotations

import json
import resource
import sys
import time
import traceback
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from engines import LOADERS, THREADS, Spec, Unavailable  # noqa: E402
from workloads import SEED2, build  # noqa: E402


def emit(record: dict) -> None:
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


def _rss_mb() -> tuple[float, float]:
    """(current RSS, peak RSS) of this process in MB, from /proc (Linux) or getrusage."""
    try:
        fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
        return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024
    except (OSError, KeyError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return peak, peak


def _compact(pred, task: str):
    if task == "cls":
        return [[int(label), round(float(score), 5)] for label, score in pred]
    return np.round(np.asarray(pred, dtype=np.float32), 5).tolist()  # whole vectors: compared by cosine


def time_workload(engine, wl, timing: dict) -> dict:
    run = engine.predict
    inputs = [engine.prepare(r, wl.batch_size) if engine.prepare else r for r in wl.requests]
    # Warm-up: up to `warmup` calls (cycling through the requests) settle allocators and thread pools; at most
    # `warmup_time` seconds of them, but at least one, so a 872-sentence request is not warmed up five times.
    start = time.perf_counter()
    for i in range(timing["warmup"]):
        run(inputs[i % len(inputs)], wl.batch_size)
        if time.perf_counter() - start > timing.get("warmup_time", 1.0):
            break
    lat: list[float] = []
    preds: list = []
    sentences = 0
    passes = 0
    start = time.perf_counter()
    while True:
        for i, x in enumerate(inputs):
            t = time.perf_counter()
            y = run(x, wl.batch_size)
            lat.append(time.perf_counter() - t)
            sentences += len(wl.requests[i])
            if passes == 0 and wl.labels is not None:
                preds.extend(y)
        passes += 1
        elapsed = time.perf_counter() - start
        # A pass always completes; stop once enough passes and time are in, or the time cap is reached.
        if elapsed >= timing["max_time"] or (passes >= timing["min_passes"] and elapsed >= timing["min_time"]):
            break
    ms = np.array(lat) * 1e3
    rec = {
        "workload": wl.name,
        "batch_size": wl.batch_size,
        "requests": len(lat),
        "passes": passes,
        "p50_ms": float(np.percentile(ms, 50)),
        "p90_ms": float(np.percentile(ms, 90)),
        "p99_ms": float(np.percentile(ms, 99)),
        "mean_ms": float(ms.mean()),
        "throughput_sps": sentences / float(np.sum(lat)),
        "peak_rss_mb_so_far": _rss_mb()[1],
    }
    if preds and isinstance(preds[0], tuple) and wl.name != "sst2-stream":
        labels = [p[0] for p in preds]
        rec["accuracy"] = float(np.mean(np.array(labels) == np.array(wl.labels)))
        rec["labels"] = "".join(str(int(p)) for p in labels)
    return rec


def main() -> int:
    args = json.loads(sys.argv[1])
    t0 = args["t0"]
    for job in args["jobs"]:  # one engine, but for the engines run.py's smoke puts in one process
        run_engine(job, args, t0)
        t0 = time.time()  # the next engine's cold start starts here (its imports may be loaded already)
    return 0


def run_engine(job: dict, args: dict, t0: float) -> None:
    spec = Spec(**job["spec"])
    paths = {k: Path(v) for k, v in job["paths"].items()}
    base = {
        "engine": spec.name,
        "kind": spec.kind,
        "task": spec.task,
        "precision": spec.precision,
        "round": args.get("round", 0),
        "threads": THREADS,
    }
    try:
        engine = LOADERS[spec.loader](spec, paths)
    except Unavailable as e:
        emit({**base, "type": "unavailable", "reason": str(e)})
        return
    except Exception as e:  # an engine that fails to load is recorded, never silently skipped
        emit(
            {
                **base,
                "type": "unavailable",
                "reason": f"{type(e).__name__}: {str(e).splitlines()[0][:300]}",
                "traceback": traceback.format_exc()[-2000:],
            }
        )
        return
    loaded = time.time()
    x = engine.prepare(SEED2, 2) if engine.prepare else SEED2
    first = engine.predict(x, 2)
    done = time.time()
    rss, _ = _rss_mb()
    emit(
        {
            **base,
            "type": "load",
            "cold_start_s": done - t0,
            "load_s": loaded - t0,
            "first_call_s": done - loaded,
            "rss_after_first_mb": rss,
            "versions": engine.versions,
            "provider": engine.provider,
            "parity": _compact(first, spec.task),
        }
    )
    for wl in build(job["workloads"], args.get("sst2_limit")):
        emit({**base, "type": "result", **time_workload(engine, wl, args["timing"])})
    emit({**base, "type": "end", "peak_rss_mb": _rss_mb()[1]})


if __name__ == "__main__":
    sys.exit(main())
