"""Does baking "no SkipLayerNorm" into the int8 graph (residual Add as Sum) cost speed or change answers?

    python bench/int8_no_switch.py [--file models/minilm-sst2/onnx/model_quantized.onnx] [--sentences 300]

Times one int8 file of the fused-attention-only recipe three ways, interleaved, best of rounds, batch 1 and
batches of 32 SST-2 dev sentences: (a) the old way, onnxruntime's SkipLayerNormFusion disabled at load (only
onnxpipe did this); (b) the same file with onnxruntime's defaults, as every other consumer loads it; (c) the
file with residual Adds written as Sum, defaults. Prints max score difference of (b) and (c) against (a).
Needs the export extra (onnx).
"""

from __future__ import annotations

import argparse
import csv
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from onnxpipe import AutoTokenizer
from onnxpipe_export._optimize import residual_add_as_sum

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--file", default=str(ROOT / "models/minilm-sst2/onnx/model_quantized.onnx"))
    ap.add_argument("--sentences", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    folder = Path(args.file).parents[1]
    with open(ROOT.parent / "shared/data/sst2/dev.tsv", encoding="utf-8", newline="") as f:
        texts = [r["content"] for r in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)][: args.sentences]
    tok = AutoTokenizer.from_pretrained(folder)
    with tempfile.TemporaryDirectory() as tmp:
        summed = Path(tmp) / "sum.onnx"
        summed.write_bytes(Path(args.file).read_bytes())
        print(f"residual Adds rewritten as Sum: {residual_add_as_sum(summed)}")

        def session(path, disabled=None):
            return ort.InferenceSession(
                str(path), providers=["CPUExecutionProvider"], **({"disabled_optimizers": disabled} if disabled else {})
            )

        sessions = {
            "(a) switch: SkipLayerNormFusion off": session(args.file, ["SkipLayerNormFusion"]),
            "(b) same file, onnxruntime defaults": session(args.file),
            "(c) residual Add as Sum, defaults": session(summed),
        }
        names = [i.name for i in next(iter(sessions.values())).get_inputs()]
        singles = [
            {k: v for k, v in tok([t], truncation=True, return_tensors="np").items() if k in names} for t in texts
        ]
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        batches = [
            {
                k: v
                for k, v in tok(
                    [texts[j] for j in order[i : i + 32]], padding=True, truncation=True, return_tensors="np"
                ).items()
                if k in names
            }
            for i in range(0, len(order), 32)
        ]
        logits = {k: np.concatenate([s.run(["logits"], f)[0] for f in singles]) for k, s in sessions.items()}
        p50 = {k: np.inf for k in sessions}
        sps = {k: 0.0 for k in sessions}
        for _ in range(args.rounds):
            for k, s in sessions.items():
                times = []
                for f in singles:
                    t0 = time.perf_counter()
                    s.run(["logits"], f)
                    times.append(time.perf_counter() - t0)
                p50[k] = min(p50[k], float(np.median(times)) * 1e3)
                t0 = time.perf_counter()
                for f in batches:
                    s.run(["logits"], f)
                sps[k] = max(sps[k], len(texts) / (time.perf_counter() - t0))

    def softmax(x):
        e = np.exp(x - x.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    ref = softmax(logits["(a) switch: SkipLayerNormFusion off"])
    for k in sessions:
        diff = float(np.abs(softmax(logits[k]) - ref).max())
        print(f"{k:40s} batch-1 p50 {p50[k]:6.2f} ms  {sps[k]:7.1f} sentences/s  max score diff vs (a) {diff:.4f}")


if __name__ == "__main__":
    main()
