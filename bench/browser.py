"""Browser vs Python on one model folder: load time, first prediction and batch-1 latency of transformers.js
(onnxruntime-web, WASM backend) in headless Chromium against onnxpipe's Python runtime, on this machine.

Each round starts a fresh Chromium (cold: no HTTP or Cache Storage cache, the .wasm compiled anew) on the demo
page (examples/browser/), once with onnxruntime-web's plain WASM build (the page's default) and once with the
asyncify build (transformers.js's default, which WebGPU needs), and fresh Python processes (1 intra-op thread,
as the page's WASM, and the runtime's default), alternated; the figures are medians over the rounds. Before
anything is timed, the seed sentences must get the same labels everywhere. Batch-1 latency: each seed sentence
WARMUP times, then ROUNDS x each, one call at a time, p50 (the page's "Measure" button does the same). Load:
the page's pipeline() (fetch config, tokenizer and ONNX file, compile the .wasm, create the session); Python's
pipeline() after `import onnxpipe` (import_ms apart). Needs Chromium, chromedriver, selenium, node and npm (as
the browser test).

    .venv/bin/python bench/browser.py [--model models/minilm-sst2] [--rounds 3] [--out bench/results/browser.json]
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "examples" / "browser"))
from drive import Page, chromium  # noqa: E402
from serve import DemoServer  # noqa: E402

from provenance import provenance, rel  # noqa: E402

# -- configuration (the page's app.js uses the same seed sentences, warm-up and rounds) ---------------------------
MODEL = ROOT / "models" / "minilm-sst2"
SEEDS = ["I've been waiting for a HuggingFace course my whole life.", "I hate this so much!"]
WARMUP, ROUNDS = 3, 25
PRECISION = {"q8": "int8", "fp32": "fp32"}  # the page's dtype -> the runtime's precision (the same ONNX file)
OUT = HERE / "results" / "browser.json"

PYTHON = """
import json, statistics, sys, time
model, precision, threads, seeds, warmup, rounds = json.loads(sys.argv[1])
t0 = time.perf_counter()
from onnxpipe import pipeline
t1 = time.perf_counter()
pipe = pipeline("text-classification", model=model, precision=precision, threads=threads)
t2 = time.perf_counter()
labels = [pipe(s)[0]["label"] for s in seeds[:1]]
t3 = time.perf_counter()
labels += [pipe(s)[0]["label"] for s in seeds[1:]]
for s in seeds:
    for _ in range(warmup):
        pipe(s)
times = []
for _ in range(rounds):
    for s in seeds:
        a = time.perf_counter()
        pipe(s)
        times.append((time.perf_counter() - a) * 1e3)
print(json.dumps({"import_ms": (t1 - t0) * 1e3, "load_ms": (t2 - t1) * 1e3, "first_ms": (t3 - t2) * 1e3,
                  "p50_ms": statistics.median(times), "labels": labels}))
"""


def python_round(model: Path, precision: str, threads: int | None) -> dict:
    args = json.dumps([str(model), precision, threads, SEEDS, WARMUP, ROUNDS])
    out = subprocess.run([sys.executable, "-c", PYTHON, args], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def browser_round(model: Path, dtype: str, build: str) -> dict:
    with DemoServer(models=model.parent) as server, chromium() as browser:
        page = Page(browser, f"{server.url}/?model={model.name}&dtype={dtype}&threads=1&build={build}")
        labels = [page.type_and_classify(s)[0]["label"] for s in SEEDS]
        p50 = page.measure_latency()
        timings = page.timings()
        errors = page.errors()
        runtime = page.text("runtime")
    if errors:
        raise SystemExit(f"the page logged errors: {errors}")
    return {"load_ms": timings["load_ms"], "first_ms": timings["first_ms"], "p50_ms": p50, "labels": labels,
            "runtime": runtime}  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=MODEL, help=f"model folder (default {rel(MODEL)})")
    ap.add_argument("--dtype", default="q8", choices=sorted(PRECISION), help="the page's dtype (default q8 = int8)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds, engines alternated (default 3)")
    ap.add_argument("--out", type=Path, default=OUT, help=f"JSON result (default {rel(OUT)})")
    a = ap.parse_args(argv)
    prov = provenance(__file__, argv)
    model, precision = a.model.resolve(), PRECISION[a.dtype]
    engines = {
        **{
            f"transformers.js in Chromium ({build} WASM build, 1 thread)": functools.partial(
                browser_round, model, a.dtype, build
            )
            for build in ("plain", "asyncify")
        },
        "onnxpipe Python (1 thread)": lambda: python_round(model, precision, 1),
        "onnxpipe Python (default threads)": lambda: python_round(model, precision, None),
    }
    rounds: dict[str, list[dict]] = {name: [] for name in engines}
    for r in range(a.rounds):
        for name, run in engines.items():
            rounds[name].append(run())
            print(f"round {r + 1}/{a.rounds} {name}: {rounds[name][-1]}", file=sys.stderr, flush=True)
    labels = {name: rs[0]["labels"] for name, rs in rounds.items()}
    if len({tuple(v) for v in labels.values()}) != 1:
        raise SystemExit(f"parity check failed: the engines label the seed sentences differently: {labels}")
    keys = ("load_ms", "first_ms", "p50_ms")
    medians = {name: {k: round(statistics.median(r[k] for r in rs), 2) for k in keys} for name, rs in rounds.items()}
    result = {
        "provenance": prov,
        "model": rel(model),
        "dtype": a.dtype,
        "seeds": SEEDS,
        "warmup": WARMUP,
        "rounds_per_sentence": ROUNDS,
        "browser_runtime": rounds[next(iter(engines))][0]["runtime"],
        "medians": medians,
        "rounds": rounds,
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    print(f"| engine ({rel(model)}, {precision}) | load | first prediction | batch-1 p50 |")
    print("|---|---|---|---|")
    for name, m in medians.items():
        print(f"| {name} | {m['load_ms']:.0f} ms | {m['first_ms']:.1f} ms | {m['p50_ms']:.2f} ms |")
    print(f"wrote {rel(a.out)}")


if __name__ == "__main__":
    main()
