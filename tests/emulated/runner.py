"""Run a list of jobs on the CPU this process runs on (native, or under QEMU), and save what each computed.

    python runner.py JOBS.json OUT.npz

Executed by ``cpus.run_jobs`` under each CPU: natively, under ``qemu-x86_64 -cpu Haswell`` and under
``qemu-aarch64`` with the ARM64 userland's Python. One process runs every job of a CPU, so the interpreter and
onnxruntime are started once (under emulation that start alone costs tens of seconds). A job is one of

- ``{"folder": DIR, "precision": P, "task": T, "texts": [...]}``: the runtime (``onnxpipe`` from ``runtime/`` on
  PYTHONPATH) on a model folder, each text alone (a batch of one), on one thread: the same work on every CPU, so a
  difference is the CPU's kernels, not batching or thread scheduling. T says what to save, one row per text:
  ``probabilities`` (softmax of a classifier's logits), ``logits``, or ``embeddings`` (mean of
  last_hidden_state over the text's tokens). Saved as ``OUT.npz["<i>"]``.
- ``{"graph": FILE.onnx, "inputs": FILE.npz}``: onnxruntime alone (one thread, the CPU provider) on one ONNX file
  and saved feeds; every output saved as ``OUT.npz["<i>/<output name>"]``.

It imports only the runtime and what the runtime needs (only onnxruntime when every job is a graph), so the ARM64
side needs no export extra and no test tools. OUT.json beside OUT.npz records the versions this side ran
(onnxruntime, numpy, Python, machine) and each job's seconds (where an emulated CPU spends its time).
"""

from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime

TASKS = ("probabilities", "logits", "embeddings")


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def compute(folder: str, precision: str, task: str, texts: list[str]) -> np.ndarray:
    from onnxpipe import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

    if task not in TASKS:
        raise SystemExit(f"task {task!r}: one of {TASKS}")
    cls = AutoModel if task == "embeddings" else AutoModelForSequenceClassification
    model = cls.from_pretrained(folder, precision=precision, threads=1)
    tok = AutoTokenizer.from_pretrained(folder)
    rows = []
    for text in texts:
        enc = tok([text], truncation=True, return_tensors="np")
        out = model(**enc)
        if task == "embeddings":
            mask = np.asarray(enc["attention_mask"], dtype=np.float32)[..., None]
            rows.append((out.last_hidden_state * mask).sum(axis=1)[0] / mask.sum())
        else:
            logits = out.logits[0].astype(np.float64)
            rows.append(_softmax(logits) if task == "probabilities" else logits)
    return np.stack(rows).astype(np.float64)


def run_graph(graph: str, inputs: str) -> dict[str, np.ndarray]:
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    session = onnxruntime.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
    with np.load(inputs) as feeds:
        results = session.run(None, {k: feeds[k] for k in feeds.files})
    return {o.name: r for o, r in zip(session.get_outputs(), results)}


def run(job: dict[str, Any]) -> np.ndarray | dict[str, np.ndarray]:
    if "graph" in job:
        return run_graph(job["graph"], job["inputs"])
    return compute(job["folder"], job["precision"], job["task"], job["texts"])


def main(argv: list[str]) -> None:
    if len(argv) != 2:
        raise SystemExit(__doc__)
    jobs_file, out = argv
    saved: dict[str, np.ndarray] = {}
    seconds = []
    for i, job in enumerate(json.loads(Path(jobs_file).read_text(encoding="utf-8"))):
        start = time.perf_counter()
        got = run(job)
        seconds.append(round(time.perf_counter() - start, 2))
        if isinstance(got, dict):
            saved.update({f"{i}/{name}": array for name, array in got.items()})
        else:
            saved[str(i)] = got
    np.savez(out, **saved)
    meta = {
        "onnxruntime": onnxruntime.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "seconds": seconds,
    }
    Path(out).with_suffix(".json").write_text(json.dumps(meta), encoding="utf-8")


if __name__ == "__main__":
    main(sys.argv[1:])
