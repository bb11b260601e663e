"""Whether an int8 graph can saturate on some CPU, read from the quantized graph itself.

onnxruntime multiplies u8 activations by s8 weights. CPUs with an int8 dot product (x86 AVX-512 VNNI / AVX-VNNI,
ARM dot product) sum those products in 32 bits. AVX2-only x86 has ``vpmaddubsw`` instead: it adds each pair of
u8 x s8 products into a signed 16-bit lane *with saturation*, so 2 * 255 * |w| must stay <= 32767, i.e.
|w| <= 64 (2 * 255 * 64 = 32640). Full-range s8 weights (|w| up to 127) overflow there and the file computes
other numbers on such a CPU. Weights that cannot overflow: s8 within [-64, 64] (onnxruntime's
``reduce_range=True``, 7-bit weights), u8 weights (the u8 x u8 kernels widen to 16 bits before multiplying),
and ``MatMulNBits`` (weight-only; its int8-compute path multiplies |activation| <= 128 by weights within the
block range, which stays within 16 bits).

The check looks at every integer matmul's *stored* weight values, because the kernels multiply the raw bytes (zero
points are corrected afterwards through row and column sums): ``MatMulInteger`` and ``DynamicQuantizeMatMul`` and
``MatMulIntegerToFloat`` (input B), ``QAttention`` (its QKV weight), ``QLinearMatMul`` (b), and in QDQ graphs a
``DequantizeLinear`` of an int8 initializer that feeds a ``MatMul`` or ``Gemm``. A B input that is computed at run
time counts as safe only when ``DynamicQuantizeLinear`` makes it (u8); anything else cannot be proven and counts
as able to saturate.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

# s8 weight values that no u8 x s8 pair sum can push past a signed 16-bit lane: 2 * 255 * 64 = 32640 <= 32767
SAFE_S8 = (-64, 64)
# integer matmul op type -> index of its weight (B) input
WEIGHT_INPUT = {
    "MatMulInteger": 1,
    "DynamicQuantizeMatMul": 1,
    "MatMulIntegerToFloat": 1,
    "QAttention": 1,
    "QLinearMatMul": 3,
}
ZERO_POINT_INPUT = {
    "MatMulInteger": 3,
    "DynamicQuantizeMatMul": 3,
    "MatMulIntegerToFloat": 5,
    "QAttention": 7,
    "QLinearMatMul": 5,
}


def integer_matmul_weights(model: onnx.ModelProto) -> list[dict[str, Any]]:
    """Every integer matmul's weight in ``model``: ``{"node", "op_type", "weight" (ndarray or None when computed
    at run time), "zero_point" (ndarray or None), "runtime_u8" (B made by DynamicQuantizeLinear)}``. QDQ weights
    are reported with op_type ``"DequantizeLinear->MatMul"``."""
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)

    def array(name: str) -> np.ndarray | None:
        return numpy_helper.to_array(inits[name]) if name in inits else None

    found = []
    for n in graph.node:
        if n.op_type in WEIGHT_INPUT and len(n.input) > WEIGHT_INPUT[n.op_type]:
            b = n.input[WEIGHT_INPUT[n.op_type]]
            zp_index = ZERO_POINT_INPUT[n.op_type]
            zp = n.input[zp_index] if len(n.input) > zp_index and n.input[zp_index] else None
            made_by = producer.get(b)
            found.append(
                {
                    "node": n.name or n.output[0],
                    "op_type": n.op_type,
                    "weight_name": b,
                    "weight": array(b),
                    "zero_point": array(zp) if zp else None,
                    "runtime_u8": made_by is not None and made_by.op_type == "DynamicQuantizeLinear",
                }
            )
        elif n.op_type == "DequantizeLinear" and n.input[0] in inits:
            feeds = [c for c in consumers.get(n.output[0], []) if c.op_type in ("MatMul", "Gemm")]
            if feeds and any(c.input[1] == n.output[0] for c in feeds):
                zp = n.input[2] if len(n.input) > 2 and n.input[2] else None
                found.append(
                    {
                        "node": n.name or n.output[0],
                        "op_type": "DequantizeLinear->MatMul",
                        "weight_name": n.input[0],
                        "weight": array(n.input[0]),
                        "zero_point": array(zp) if zp else None,
                        "runtime_u8": False,
                    }
                )
    return found


def _safe(entry: dict[str, Any]) -> bool:
    w = entry["weight"]
    if w is None:
        return bool(entry["runtime_u8"])
    if w.dtype == np.uint8:
        return True
    if w.dtype == np.int8:
        return bool(w.size == 0 or (int(w.min()) >= SAFE_S8[0] and int(w.max()) <= SAFE_S8[1]))
    return False  # another integer type: not a kernel this check knows, so not proven safe


def saturation_figures(path: str | Path) -> dict[str, Any]:
    """The manifest's saturation figures of the int8 file at ``path``: ``can_saturate`` False only when every
    integer matmul's weight is proven safe (module docstring); counts per kind and the widest s8 weight seen."""
    model = onnx.load(str(path))
    entries = integer_matmul_weights(model)
    nbits = sum(n.op_type == "MatMulNBits" for n in model.graph.node)
    unsafe = [e for e in entries if not _safe(e)]
    s8 = [e["weight"] for e in entries if e["weight"] is not None and e["weight"].dtype == np.int8]
    widest = max((int(np.abs(w.astype(np.int16)).max()) for w in s8 if w.size), default=None)
    return {
        "can_saturate": bool(unsafe),
        "integer_matmuls": len(entries),
        "matmul_nbits": nbits,
        "s8_weights": len(s8),
        "max_abs_s8_weight": widest,
        "safe_s8_range": list(SAFE_S8),
        "unsafe": sorted({e["weight_name"] for e in unsafe})[:5],
        "rule": "every integer matmul weight is u8, MatMulNBits, or s8 within [-64, 64] (2 * 255 * 64 <= 32767: "
        "no u8 x s8 pair sum saturates AVX2's 16-bit vpmaddubsw lanes)",
    }
