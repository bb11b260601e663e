"""Where a batch-1 call goes: the bare ``InferenceSession.run`` of the seed sentence against the whole call
(tokenize, input arrays, run, softmax, result objects), for onnxpipe and for the engines it is compared with.

    python bench/op_callpath.py [--rounds 5] [--calls 300] [--engines onnxpipe,optimum,transformers]
        [--out bench/results]

Each engine runs in its own process once per round, order rotated (a second engine's spinning thread pool
would otherwise take the cores); inside it, its parts alternate in blocks of ``--calls`` calls. Per part the
fastest call of the round (the least disturbed on a shared machine) and the p50. Parts: onnxpipe's
``pipe(text)``, its session's ``run`` on inputs built once, and its Python side alone (``pipe(text)`` with the
session replaced by a stub that returns the real logits), and the same Python side inside real calls
(``pipe(text)`` less the time inside its own ``session.run``: the Python after a run that has streamed the
model through the caches, which the stubbed loop never sees); the same session file under other session options
(onnxruntime's defaults, level "all", one thread, no spinning, denormals as zero), each checked to give
bit-identical logits; Optimum's pipeline and its own session's ``run`` on the same file and inputs; transformers'
pipeline on PyTorch and its bare model call under ``torch.inference_mode``, at the default thread count and at
one thread. Writes op_callpath.json and .md.
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
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from provenance import provenance, write_report  # noqa: E402
from workloads import SEED  # noqa: E402

# ---- configuration ---------------------------------------------------------------------------------------
MODEL = ROOT / "models" / "minilm-sst2"
CHECKPOINT = ROOT.parent / "shared" / "checkpoints" / "minilm-sst2"
ENGINES = ["onnxpipe", "optimum", "transformers"]
ROUNDS, CALLS, BLOCKS = 5, 300, 3  # rounds of fresh processes; calls per block; blocks per part per round
# PyTorch's calls take 10-100x longer (and seconds each when its OpenMP barriers meet a loaded machine): it gets
# CALLS / TORCH_SHARE calls (at least 10) in one block.
TORCH_SHARE = 20
# ----------------------------------------------------------------------------------------------------------


def _net(f):
    """Mark a part whose call returns the seconds of it that are not its own (``_timed`` takes them off)."""
    f.net = True
    return f


def _timed(parts: dict, calls: int, blocks: int) -> dict[str, dict[str, float]]:
    """Per part the fastest call and the p50 (us) over ``blocks`` blocks of ``calls`` calls, parts alternated."""
    times: dict[str, list[float]] = {k: [] for k in parts}
    for f in parts.values():  # warm-up: thread pools, allocators, the first run's kernel selection
        for _ in range(20):
            f()
    for _ in range(blocks):
        for k, f in parts.items():
            net = getattr(f, "net", False)
            for _ in range(calls):
                t = time.perf_counter()
                r = f()
                times[k].append(time.perf_counter() - t - (r if net else 0.0))
    return {k: {"min_us": min(v) * 1e6, "p50_us": statistics.median(v) * 1e6} for k, v in times.items()}


def onnxpipe_parts(model: Path) -> tuple[dict, dict]:
    import numpy as np
    import onnxruntime as ort

    from onnxpipe import pipeline
    from onnxpipe._session import session_options

    pipe = pipeline("sentiment-analysis", model=str(model), verify=False)
    m, tok = pipe.model, pipe.tokenizer
    feeds = m.feeds(tok.pad(tok.encode_batch([SEED], bounded=True)))
    session = m.session
    ref = session.run(["logits"], feeds)[0]
    path = str(m.manifest.variant_path(m.precision))

    def variant(level: str | None = None, threads: int | None = None, config: tuple = ()) -> ort.InferenceSession:
        opts = session_options(threads)
        if level == "all":
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        for k, v in config:
            opts.add_session_config_entry(k, v)
        return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])

    sessions = {
        "session.run, onnxruntime's defaults": ort.InferenceSession(path, providers=["CPUExecutionProvider"]),
        "session.run, level all": variant("all"),
        "session.run, 1 thread": variant(threads=1),
        "session.run, no spinning": variant(config=(("session.intra_op.allow_spinning", "0"),)),
        "session.run, denormals as zero": variant(config=(("session.set_denormal_as_zero", "1"),)),
    }
    identical = {k: bool(np.array_equal(s.run(["logits"], feeds)[0], ref)) for k, s in sessions.items()}

    class Stub:  # the real logits, instantly: what is left of pipe(text) is onnxpipe's own Python
        def run(self, names, feeds, options=None):
            return [ref.copy()]

    def python_side():
        m.session = stub
        try:
            return pipe(SEED)
        finally:
            m.session = session

    class Spy:  # the real session, timed: pipe(text) less its session.run is the Python side in a real call
        inner = 0.0

        def run(self, names, feeds, options=None):
            t = time.perf_counter()
            out = session.run(names, feeds, options)
            self.inner = time.perf_counter() - t
            return out

    @_net
    def python_in_place() -> float:
        # With the stub, the Python side runs on caches it had to itself; here it runs after each real
        # session.run has streamed the model's weights and activations through them, as in a user's call.
        m.session = spy
        try:
            pipe(SEED)
        finally:
            m.session = session
        return spy.inner

    stub, spy = Stub(), Spy()
    parts = {
        "pipe(text)": lambda: pipe(SEED),
        "session.run": lambda: session.run(["logits"], feeds),
        "Python side (stubbed session)": python_side,
        "Python side in a real call (pipe(text) less its session.run)": python_in_place,
        **{k: (lambda s=s: s.run(["logits"], feeds)) for k, s in sessions.items()},
    }
    info = {"answer": pipe(SEED), "bit_identical_logits": identical, "threads": m.threads}
    return parts, info


def optimum_parts(model: Path, checkpoint: Path) -> tuple[dict, dict]:
    import transformers
    from optimum.onnxruntime import ORTModelForSequenceClassification

    from onnxpipe import AutoTokenizer

    ort_model = ORTModelForSequenceClassification.from_pretrained(
        str(model), subfolder="onnx", file_name="model_quantized.onnx", provider="CPUExecutionProvider"
    )
    tok = transformers.AutoTokenizer.from_pretrained(str(checkpoint))
    pipe = transformers.pipeline("text-classification", model=ort_model, tokenizer=tok, device="cpu")
    ours = AutoTokenizer.from_pretrained(str(model), verify=False)
    feeds = dict(ours([SEED], return_tensors="np"))
    session = ort_model.model
    parts = {
        "pipe([text]) as the engine bench calls it": lambda: pipe([SEED], batch_size=1, truncation=True),
        "session.run": lambda: session.run(["logits"], feeds),
    }
    opts = session.get_session_options()
    info = {
        "answer": pipe([SEED], batch_size=1, truncation=True),
        "threads": opts.intra_op_num_threads,
        "level": str(opts.graph_optimization_level),
    }
    return parts, info


def transformers_parts(checkpoint: Path) -> tuple[dict, dict]:
    import torch
    import transformers

    pipe = transformers.pipeline("sentiment-analysis", model=str(checkpoint), device="cpu")
    enc = pipe.tokenizer(SEED, return_tensors="pt")
    default = torch.get_num_threads()

    def bare():
        with torch.inference_mode():
            return pipe.model(**enc).logits

    def at(threads: int, f):
        def call():
            torch.set_num_threads(threads)
            return f()

        return call

    parts = {}
    for threads in sorted({default, 1}, reverse=True):
        parts[f"pipeline(text), {threads} threads"] = at(threads, lambda: pipe(SEED))
        parts[f"model(**inputs), inference_mode, {threads} threads"] = at(threads, bare)
    info = {
        "answer": pipe(SEED),
        "default_threads": default,
        "attention": pipe.model.config._attn_implementation,
    }
    return parts, info


def worker(engine: str, model: Path, checkpoint: Path, calls: int, blocks: int) -> None:
    if engine == "onnxpipe":
        parts, info = onnxpipe_parts(model)
    elif engine == "optimum":
        parts, info = optimum_parts(model, checkpoint)
    else:
        parts, info = transformers_parts(checkpoint)
        calls, blocks = max(10, calls // TORCH_SHARE), 1
    print(json.dumps({"engine": engine, "info": info, "parts": _timed(parts, calls, blocks)}, default=str))


def markdown(report: dict) -> str:
    from provenance import markdown as prov_lines

    lines = [
        "# Where a batch-1 call goes: session.run against the whole call (bench/op_callpath.py)",
        "",
        *prov_lines(report["provenance"]),
        f"CPU flags: {' '.join(report['simd_flags'])}. Load average (1 min) {report['loadavg']['start']} at start, "
        f"{report['loadavg']['end']} at end (a shared machine).  ",
        f"The seed sentence (16 tokens), batch 1. {report['rounds']} rounds, each engine its own process once per "
        f"round, order rotated; inside it, parts alternate in blocks of {report['calls']} calls. Best: the fastest "
        "call of any round; p50: the median over rounds of each round's p50.",
        "",
        "| engine | part | best, us | p50, us |",
        "|---|---|---|---|",
    ]
    for engine, parts in report["parts"].items():
        for part, r in parts.items():
            lines.append(f"| {engine} | {part} | {r['best_us']:.1f} | {r['p50_us']:.1f} |")
    lines += ["", "| derived (best calls) | value |", "|---|---|"]
    for k, v in report["derived"].items():
        lines.append(f"| {k} | {v} |")
    lines += ["", "Engine details: " + json.dumps(report["info"], sort_keys=True, default=str)]
    if report.get("note"):
        lines += ["", report["note"]]
    return "\n".join(lines) + "\n"


def derive(parts: dict) -> dict:
    def best(engine: str, part: str) -> float | None:
        r = parts.get(engine, {}).get(part)
        return None if r is None else r["best_us"]

    out = {}
    ours, ours_run = best("onnxpipe", "pipe(text)"), best("onnxpipe", "session.run")
    theirs = best("optimum", "pipe([text]) as the engine bench calls it")
    theirs_run = best("optimum", "session.run")
    if ours and ours_run:
        out["onnxpipe: call - session.run, us"] = round(ours - ours_run, 1)
    stubbed = best("onnxpipe", "Python side (stubbed session)")
    in_place = best("onnxpipe", "Python side in a real call (pipe(text) less its session.run)")
    if stubbed and in_place:
        out["onnxpipe: Python side in a real call / stubbed"] = round(in_place / stubbed, 2)
    if theirs and theirs_run:
        out["Optimum: call - session.run, us"] = round(theirs - theirs_run, 1)
    if ours and theirs:
        out["Optimum call / onnxpipe call"] = round(theirs / ours, 3)
    torch_calls = [r["best_us"] for k, r in parts.get("transformers", {}).items() if k.startswith("pipeline")]
    if ours and torch_calls:
        out["fastest transformers pipeline call / onnxpipe call"] = round(min(torch_calls) / ours, 2)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=ROUNDS)
    ap.add_argument("--calls", type=int, default=CALLS)
    ap.add_argument("--blocks", type=int, default=BLOCKS)
    ap.add_argument("--engines", default=",".join(ENGINES))
    ap.add_argument("--model", type=Path, default=MODEL)
    ap.add_argument("--checkpoint", type=Path, default=CHECKPOINT)
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--note", default="", help="a paragraph added under the tables")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    argv = sys.argv[1:] if argv is None else list(argv)
    a = ap.parse_args(argv)
    if a.worker:
        worker(a.worker, a.model, a.checkpoint, a.calls, a.blocks)
        return 0
    from provenance import simd_flags

    prov = provenance(__file__, argv)
    load_start = round(os.getloadavg()[0], 2)
    engines = a.engines.split(",")
    rounds: dict[str, list[dict]] = {e: [] for e in engines}
    infos: dict[str, dict] = {}
    for r in range(a.rounds):
        for engine in engines[r % len(engines) :] + engines[: r % len(engines)]:
            cmd = [sys.executable, __file__, "--worker", engine, "--calls", str(a.calls), "--blocks", str(a.blocks)]
            cmd += ["--model", str(a.model), "--checkpoint", str(a.checkpoint)]
            out = subprocess.run(
                cmd, capture_output=True, text=True, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"}
            )
            if out.returncode != 0:
                print(f"{engine}: failed\n{out.stderr[-2000:]}", file=sys.stderr)
                return 1
            got = json.loads(out.stdout.strip().splitlines()[-1])
            rounds[engine].append(got["parts"])
            infos[engine] = got["info"]
            print(engine, {k: round(v["min_us"], 1) for k, v in got["parts"].items()}, flush=True)
    parts = {
        e: {
            k: {
                "best_us": round(min(x[k]["min_us"] for x in rs), 1),
                "p50_us": round(statistics.median(x[k]["p50_us"] for x in rs), 1),
                "rounds_min_us": [round(x[k]["min_us"], 1) for x in rs],
            }
            for k in rs[0]
        }
        for e, rs in rounds.items()
    }
    report = {
        "provenance": prov,
        "simd_flags": simd_flags(),
        "loadavg": {"start": load_start, "end": round(os.getloadavg()[0], 2)},
        "rounds": a.rounds,
        "calls": a.calls,
        "parts": parts,
        "derived": derive(parts),
        "info": infos,
        "note": a.note,
    }
    print(write_report(a.out, "op_callpath", report, markdown))
    return 0


if __name__ == "__main__":
    sys.exit(main())
