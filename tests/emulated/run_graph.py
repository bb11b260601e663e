"""Run one ONNX file on saved inputs with onnxruntime alone, on the CPU this process runs on.

    python run_graph.py GRAPH.onnx INPUTS.npz OUT.npz

Writes every graph output into OUT.npz and the onnxruntime version into OUT.txt. One thread, the CPU provider.
Used by cpus.run_graph to compare small integer graphs (MatMulInteger) across CPUs with numpy's int32 answer.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnxruntime


def main(graph: str, inputs: str, out: str) -> None:
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    session = onnxruntime.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
    with np.load(inputs) as feeds:
        results = session.run(None, {k: feeds[k] for k in feeds.files})
    np.savez(out, **{o.name: r for o, r in zip(session.get_outputs(), results)})
    Path(out).with_suffix(".txt").write_text(onnxruntime.__version__, encoding="utf-8")


if __name__ == "__main__":
    if len(sys.argv) != 4:
        raise SystemExit(__doc__)
    main(*sys.argv[1:])
