"""CPU low-bit variants: weight-only ``MatMulNBits`` (4- or 8-bit; decoders and the encoders' int8 recipes) and
dynamic int8 for decoders.

N-bit: every MatMul (and plain Gemm: GPT-2's Conv1D layers) whose weight is a 2-D float initializer becomes
onnxruntime's ``com.microsoft.MatMulNBits`` (what onnxruntime-genai runs on CPU): symmetric 4- or 8-bit weights in
blocks of ``block_size`` along K, one fp32 scale per block, zero point 2^(bits-1) (8 or 128, the operator's default
when none is given). With ``accuracy_level`` 4 the CPU kernel quantizes the activations to int8 per row and block,
so a row's result never depends on the other rows of its batch. It is written here in numpy rather than
with onnxruntime's MatMulNBitsQuantizer because that module imports ``onnx_ir``, one more export dependency for
~40 lines of packing.

int8: onnxruntime's dynamic quantizer with u8 weights (``INT8``): on AVX2-only CPUs (no VNNI) the u8 x s8 kernel
saturates its 16-bit pair sums on full-range s8 weights (docs/performance.md, "INT8 and the CPU"), u8 x u8 does not;
7-bit s8 weights (``reduce_range``) do not either, and run onnxruntime's faster u8 x s8 kernels.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

INT4 = {"method": "MatMulNBits", "bits": 4, "block_size": 32, "symmetric": True, "accuracy_level": 4}
INT8 = {"method": "dynamic", "weight_type": "QUInt8", "per_channel": False, "op_types": ["MatMul", "Gemm"]}


def _pack(w: np.ndarray, block: int, bits: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """``w`` (K, N) fp32 -> (packed uint8 (N, blocks, block * bits // 8), scales fp32 (N * blocks,))."""
    if bits not in (4, 8):
        raise ValueError(f"MatMulNBits packing for {bits} bits; this export writes 4 or 8")
    k, n = w.shape
    blocks = -(-k // block)
    padded = np.zeros((blocks * block, n), dtype=np.float32)
    padded[:k] = w
    cols = padded.T.reshape(n, blocks, block)
    top = 2 ** (bits - 1) - 1  # [-7, 7] or [-127, 127]: symmetric around the zero point 8 or 128
    scale = np.abs(cols).max(axis=2) / top
    scale[scale == 0] = 1.0
    q = (np.clip(np.rint(cols / scale[:, :, None]), -top, top) + top + 1).astype(np.uint8)
    if bits == 4:
        q = q[:, :, 0::2] | (q[:, :, 1::2] << 4)  # element 2i in the low nibble, 2i+1 in the high one
    return q, scale.astype(np.float32).reshape(-1)


def _weight(node: Any, inits: dict[str, Any], op_types: Any = ("MatMul", "Gemm")) -> np.ndarray | None:
    """The (K, N) float weight of a MatMul or plain Gemm (alpha = beta = 1, A not transposed); else None."""
    if node.op_type not in op_types or len(node.input) < 2 or node.input[1] not in inits:
        return None
    init = inits[node.input[1]]
    if len(init.dims) != 2 or init.data_type != onnx.TensorProto.FLOAT:
        return None
    w = numpy_helper.to_array(init)
    if node.op_type == "MatMul":
        return None if len(node.input) != 2 else w
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0:
        return None
    return np.ascontiguousarray(w.T) if attrs.get("transB", 0) else w


def quantize_nbits(source: Path, out: Path, settings: dict[str, Any] = INT4) -> dict[str, Any]:
    """Write ``out``: ``source`` with its weight MatMuls as ``settings["bits"]``-bit MatMulNBits; return the
    recipe with counts."""
    model = onnx.load(str(source))
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    block, bits = int(settings["block_size"]), int(settings["bits"])
    replaced, kept = 0, 0
    nodes = []
    for node in graph.node:
        w = _weight(node, inits, tuple(settings.get("op_types", ("MatMul", "Gemm"))))
        if w is None:
            kept += node.op_type in ("MatMul", "Gemm")
            nodes.append(node)
            continue
        packed, scales = _pack(w, block, bits)
        base = f"{node.input[1]}_q{bits}"
        graph.initializer.extend(
            [numpy_helper.from_array(packed, base), numpy_helper.from_array(scales, base + "_scales")]
        )
        bias = node.op_type == "Gemm" and len(node.input) > 2 and node.input[2]
        product = [node.output[0] + "_nobias"] if bias else list(node.output)
        nodes.append(
            helper.make_node(
                "MatMulNBits",
                [node.input[0], base, base + "_scales"],
                product,
                name=(node.name or base) + f"_q{bits}",
                domain="com.microsoft",
                K=w.shape[0],
                N=w.shape[1],
                bits=bits,
                block_size=block,
                accuracy_level=int(settings["accuracy_level"]),
            )
        )
        if bias:  # Gemm's C (GPT-2's Conv1D layers export as Gemm): added after the low-bit product
            nodes.append(
                helper.make_node(
                    "Add", [product[0], node.input[2]], list(node.output), name=(node.name or base) + "_bias"
                )
            )
        replaced += 1
    used = {i for n in nodes for i in n.input}
    keep = [i for i in graph.initializer if i.name in used or i.name in {o.name for o in graph.output}]
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.initializer[:]
    graph.initializer.extend(keep)
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    onnx.save(model, str(out))
    return {**settings, "matmuls_quantized": replaced, "matmuls_kept_fp32": kept}


def _other_gathers(source: Path, rows: int) -> list[str]:
    """The Gather nodes of ``source`` whose table is a float initializer of other than ``rows`` rows: with
    ``rows`` the vocabulary size, every table but the token embedding's (T5's relative-position buckets, BART's
    learned positions), which keep fp32 precision."""
    graph = onnx.load(str(source), load_external_data=False).graph
    firsts = {i.name: i.dims[0] for i in graph.initializer if i.data_type == onnx.TensorProto.FLOAT and i.dims}
    return [n.name for n in graph.node if n.op_type == "Gather" and firsts.get(n.input[0], rows) != rows]


def quantize_8bit(source: Path, out: Path, settings: dict[str, Any] = INT8) -> dict[str, Any]:
    """Dynamic int8 of ``source`` with ``settings`` (INT8's keys, ``reduce_range`` optional; with "Gather" in
    op_types, ``gather_rows`` if given: only tables of that many rows are quantized); return the recipe. The one
    call of onnxruntime's dynamic quantizer, for the encoders' dynamic recipes as for the generative exports."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.ERROR))  # the quantizer's "consider pre-processing" advice is for static
    try:
        quantize_dynamic(
            str(source),
            str(out),
            weight_type=QuantType[settings["weight_type"]],
            per_channel=settings["per_channel"],
            reduce_range=bool(settings.get("reduce_range", False)),
            op_types_to_quantize=list(settings["op_types"]),
            nodes_to_exclude=_other_gathers(source, int(settings["gather_rows"]))
            if "gather_rows" in settings
            else None,
            # onnx's shape inference stops at com.microsoft operators (the fused decoder's attention): the
            # tensors after them are float, which is what the quantizer would otherwise fail to infer
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
    finally:
        root.setLevel(level)
    return dict(settings)
