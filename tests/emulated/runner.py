"""Run one model folder on the CPU this process runs on (native, or under QEMU), and save what it computed.

    python runner.py FOLDER PRECISION TASK TEXTS.json OUT.npy

Executed by ``cpus.run_on`` under each CPU: natively, under ``qemu-x86_64 -cpu Haswell`` and under
``qemu-aarch64`` with the ARM64 userland's Python. It imports only the runtime (``onnxpipe`` from
``runtime/`` on PYTHONPATH) and what the runtime needs, so the ARM64 side needs no export extra and no test
tools. Each text runs alone (a batch of one), on one thread: the same work on every CPU, so a difference is the
CPU's kernels, not batching or thread scheduling.

TASK says what to save, one row per text: ``probabilities`` (softmax of a classifier's logits), ``logits``, or
``embeddings`` (mean of last_hidden_state over the text's tokens). OUT.json beside OUT.npy records the versions
this side ran (onnxruntime, numpy, Python, machine).
"""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path

import numpy as np
import onnxruntime

from onnxpipe import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

TASKS = ("probabilities", "logits", "embeddings")


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def compute(folder: str, precision: str, task: str, texts: list[str]) -> np.ndarray:
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


def main(argv: list[str]) -> None:
    if len(argv) != 5:
        raise SystemExit(__doc__)
    folder, precision, task, texts_file, out = argv
    texts = json.loads(Path(texts_file).read_text(encoding="utf-8"))
    np.save(out, compute(folder, precision, task, texts))
    meta = {
        "onnxruntime": onnxruntime.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
    }
    Path(out).with_suffix(".json").write_text(json.dumps(meta), encoding="utf-8")


if __name__ == "__main__":
    main(sys.argv[1:])
