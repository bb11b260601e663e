"""``onnxpipe bench MODEL``: how fast a model folder runs here, end to end and at the bare session.

For each batch size x sequence length it times the pipeline call (tokenize, pad, run, postprocess) and the
bare ``session.run`` on the same pre-padded inputs, so the report shows onnxpipe's own overhead next to
the latency. Inputs are synthetic texts of a chosen token length; runtime dependencies only.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import onnxruntime as ort

from . import __version__
from ._factory import build_pipeline
from ._inputs import int_option
from ._manifest import load_manifest
from ._resolve import resolve_model
from ._session import check_threads
from ._session_options import SessionOptions
from ._tokenizer import AutoTokenizer

_SIMD = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16", "amx_int8", "amx_bf16")


def machine_info() -> dict[str, Any]:
    """CPU model, the SIMD flags that matter to onnxruntime's kernels, usable cores, versions."""
    cpu, flags = platform.processor() or platform.machine(), []
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    flags = line.split(":", 1)[1].split()
                    break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu": cpu,
        "simd_flags": [f for f in _SIMD if f in flags],
        "cores": cores,
        "python": platform.python_version(),
        "onnxruntime": ort.__version__,
        "onnxpipe": __version__,
    }


def text_of_length(tokenizer: AutoTokenizer, tokens: int) -> tuple[str, int]:
    """A text that tokenizes to ``tokens`` tokens, special tokens included (or as near as the tokenizer
    allows); returns (text, actual token count)."""

    def count(words: int) -> int:
        return len(tokenizer.encode_batch([" ".join(["hello"] * words)], truncation=False)[0].ids)

    specials = count(0)
    per_word = max((count(10) - specials) / 10, 1e-9)
    words = max(0, round((tokens - specials) / per_word))
    for _ in range(8):  # nudge one word at a time; tokenizers may merge repeated words
        got = count(words)
        if got == tokens or (got < tokens and count(words + 1) > tokens) or (got > tokens and words == 0):
            break
        words += 1 if got < tokens else -1
    return " ".join(["hello"] * words), count(words)


def _stats(seconds: Sequence[float], rows: int) -> dict[str, float]:
    ms = np.asarray(seconds) * 1e3
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 4),
        "p90_ms": round(float(np.percentile(ms, 90)), 4),
        "p99_ms": round(float(np.percentile(ms, 99)), 4),
        "mean_ms": round(float(ms.mean()), 4),
        "throughput_per_s": round(rows * len(ms) / (float(ms.sum()) / 1e3), 2),
    }


def _time(fn: Callable[[], object], runs: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def bench(
    model: str | os.PathLike[str],
    task: str | None = None,
    options: SessionOptions = SessionOptions(),
    batch_sizes: Sequence[int] = (1, 8, 32),
    seq_lengths: Sequence[int] = (16, 64, 128),
    runs: int = 20,
    warmup: int = 3,
) -> dict[str, Any]:
    """Time a model folder, loaded as ``options`` say, over a batch-size x sequence-length sweep.

    Example:
        >>> report = bench("minilm-sst2", batch_sizes=[1, 32], seq_lengths=[16], runs=50)
        >>> report["results"][0]["pipeline"]["p50_ms"], report["results"][0]["overhead_pct"]
    """
    # Checked before anything loads: a batch of 0 rows used to reach onnxruntime (SIGFPE in the int8 kernels).
    int_option("runs (--runs)", runs, 1)
    int_option("warmup (--warmup)", warmup, 0)
    check_threads(options.threads)
    if not batch_sizes or not seq_lengths:
        raise ValueError("batch_sizes (--batch-sizes) and seq_lengths (--seq-lengths) need at least one value each")
    for b in batch_sizes:
        int_option("batch size (--batch-sizes)", b, 1, None, "e.g. --batch-sizes 1,8,32")
    for n in seq_lengths:
        int_option("sequence length (--seq-lengths)", n, 1, None, "e.g. --seq-lengths 16,64,128")
    folder = resolve_model(model)
    manifest = load_manifest(folder, verify=options.verify)
    task = task or manifest.task
    too_long = [n for n in seq_lengths if n > manifest.max_length]
    if too_long:
        raise ValueError(
            f"seq_lengths {too_long} are outside 1..{manifest.max_length}, the model's maximum; pick lengths within it"
        )
    t0 = time.perf_counter()
    pipe = build_pipeline(
        task,
        folder,
        replace(options, verify=False),  # checked just above
        max_batch_tokens=max(max(batch_sizes) * max(seq_lengths), 16384),
    )
    load_s = time.perf_counter() - t0
    session = pipe.model.session
    names = list(pipe.output_names)
    results = []
    for seq in seq_lengths:
        text, actual = text_of_length(pipe.tokenizer, seq)
        for batch in batch_sizes:
            texts = [text] * batch
            pipe.batch_size = batch
            feeds = pipe.model.feeds(pipe.tokenizer.pad(pipe.tokenizer.encode_batch(texts)))
            # _time calls each lambda within this iteration, so the loop variables are the current ones.
            end_to_end = _stats(_time(lambda: pipe(texts), runs, warmup), batch)  # noqa: B023
            floor = _stats(_time(lambda: session.run(names, feeds), runs, warmup), batch)  # noqa: B023
            results.append(
                {
                    "batch_size": batch,
                    "seq_len": seq,
                    "tokens": actual,
                    "pipeline": end_to_end,
                    "session": floor,
                    "overhead_pct": round(100 * (end_to_end["p50_ms"] / floor["p50_ms"] - 1), 1),
                }
            )
    opts = session.get_session_options()
    return {
        "model": str(folder),
        "task": task,
        "precision": pipe.precision,
        "format": pipe.model.format,
        "profile": options.profile,
        "device": pipe.device,
        "provider": session.get_providers()[0],
        "threads": opts.intra_op_num_threads or "onnxruntime default",
        "load_s": round(load_s, 3),
        "runs": runs,
        "warmup": warmup,
        "machine": machine_info(),
        "results": results,
    }


def format_table(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        f"{report['model']} ({report['task']}, {report['precision']}, {report['provider']}, "
        f"{report['threads']} threads) on {m['cpu']}, {m['cores']} cores, onnxruntime {m['onnxruntime']}",
        f"{'batch':>5} {'tokens':>6} {'p50 ms':>9} {'p90 ms':>9} {'p99 ms':>9} {'rows/s':>9} "
        f"{'session p50':>11} {'overhead':>8}",
    ]
    for r in report["results"]:
        p, s = r["pipeline"], r["session"]
        lines.append(
            f"{r['batch_size']:>5} {r['tokens']:>6} {p['p50_ms']:>9.3f} {p['p90_ms']:>9.3f} "
            f"{p['p99_ms']:>9.3f} {p['throughput_per_s']:>9.1f} {s['p50_ms']:>11.3f} "
            f"{r['overhead_pct']:>7.1f}%"
        )
    return "\n".join(lines)
