"""Fixed activation scales for a dynamic int8 graph: the default recipe's file, with each activation's scale and
zero point measured once on sample sentences instead of on every call.

A dynamic int8 file quantizes each activation tensor with a scale computed from that tensor's own min and max
(``DynamicQuantizeLinear``). Two CPUs' float kernels (GELU, LayerNorm, softmax) differ in their last bits, and
now and then that moves a tensor's scale or zero point, so the whole tensor rounds differently and the change
travels through every later layer: on emulated ARM64 the dynamic default moved P(positive) by p99 0.012 on 400
SST-2 dev sentences. Here each ``DynamicQuantizeLinear`` becomes a ``QuantizeLinear`` with constants computed
exactly as ``DynamicQuantizeLinear`` would (range widened to hold 0, 255 steps) from the min and max that the
calibration sentences reached, each sentence run alone and unpadded (padding positions are not text). Only an
element within a last-bit of a rounding step can then round differently on another CPU, not a whole tensor.
It also makes the file batch-invariant (no scale depends on batch-mates), so the runtime batches it.

onnxruntime fuses ``MatMulInteger -> Cast -> Mul`` into ``MatMulIntegerToFloat`` only when the scale product is
computed in the graph; with both scales constant it folds that product first and the fusion no longer matches
(measured: the unfused chain ran at the dynamic file's speed, the fused one ~1.2x faster at batch 1). So the
chain (and its bias Add) is written here as the fused contrib operator directly, which every onnxruntime build
(Python, Node, web) carries beside ``QAttention``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxpipe.errors import ExportError

LEVELS = 255  # u8 activations, as DynamicQuantizeLinear writes them


def activation_ranges(model: onnx.ModelProto, feeds: list[dict[str, np.ndarray]]) -> dict[str, tuple[float, float]]:
    """Min and max of every ``DynamicQuantizeLinear`` input of ``model`` (left as it is) over ``feeds``."""
    import onnxruntime as ort

    names = list(dict.fromkeys(n.input[0] for n in model.graph.node if n.op_type == "DynamicQuantizeLinear"))
    if not names:
        raise ExportError(
            f"{model.graph.name or 'the int8 graph'} has no DynamicQuantizeLinear to fix the scale of: quantize it "
            "dynamically first"
        )
    probe = onnx.ModelProto()
    probe.CopyFrom(model)  # the activations become outputs of the calibration session only
    known = {o.name for o in probe.graph.output}
    for name in names:
        if name not in known:
            probe.graph.output.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    low = dict.fromkeys(names, 0.0)
    high = dict.fromkeys(names, 0.0)
    for feed in feeds:
        for name, value in zip(names, session.run(names, feed), strict=True):
            low[name] = min(low[name], float(value.min()))
            high[name] = max(high[name], float(value.max()))
    return {name: (low[name], high[name]) for name in names}


def scale_and_zero_point(low: float, high: float) -> tuple[np.float32, np.uint8]:
    """What ``DynamicQuantizeLinear`` computes for a tensor whose min is ``low`` and max ``high``."""
    low, high = min(low, 0.0), max(high, 0.0)
    scale = np.float32((high - low) / LEVELS) if high > low else np.float32(1.0)
    return scale, np.uint8(np.clip(np.rint(-low / float(scale)), 0, LEVELS))


def fix_scales(model: onnx.ModelProto, ranges: dict[str, tuple[float, float]]) -> int:
    """Rewrite ``model`` in place with each ``DynamicQuantizeLinear`` a ``QuantizeLinear`` of fixed scale and
    zero point; return how many."""
    graph = model.graph
    nodes, fixed = [], 0
    for node in graph.node:
        if node.op_type != "DynamicQuantizeLinear":
            nodes.append(node)
            continue
        scale, zero_point = scale_and_zero_point(*ranges[node.input[0]])
        graph.initializer.extend(
            [
                numpy_helper.from_array(np.array(scale, dtype=np.float32), node.output[1]),
                numpy_helper.from_array(np.array(zero_point, dtype=np.uint8), node.output[2]),
            ]
        )
        nodes.append(
            helper.make_node(
                "QuantizeLinear",
                [node.input[0], node.output[1], node.output[2]],
                [node.output[0]],
                name=f"{node.name or node.output[0]}_fixed",
            )
        )
        fixed += 1
    del graph.node[:]
    graph.node.extend(nodes)
    return fixed


def fuse_integer_matmuls(model: onnx.ModelProto) -> int:
    """Write each ``MatMulInteger -> Cast -> Mul(scale product) [-> Add(constant bias)]`` chain of ``model`` (in
    place) as one ``com.microsoft.MatMulIntegerToFloat``; return how many."""
    graph = model.graph
    producer = {o: n for n in graph.node for o in n.output}
    users: dict[str, list[onnx.NodeProto]] = {}
    for n in graph.node:
        for i in n.input:
            users.setdefault(i, []).append(n)
    constants = {i.name for i in graph.initializer}
    graph_outputs = {o.name for o in graph.output}

    def only_user(name: str, op_type: str) -> onnx.NodeProto | None:
        found = users.get(name, [])
        ok = len(found) == 1 and found[0].op_type == op_type and name not in graph_outputs
        return found[0] if ok else None

    replaced: dict[int, onnx.NodeProto] = {}
    dropped: set[int] = set()
    for n in graph.node:
        cast = only_user(n.output[0], "Cast") if n.op_type == "MatMulInteger" and len(n.input) == 4 else None
        mul = only_user(cast.output[0], "Mul") if cast is not None else None
        if mul is None or cast is None:
            continue
        other = next(i for i in mul.input if i != cast.output[0])
        scales = producer.get(other)
        if scales is None or scales.op_type != "Mul" or len(users[other]) != 1:
            continue
        last, bias = mul, []
        add = only_user(mul.output[0], "Add")
        if add is not None:
            constant = [i for i in add.input if i != mul.output[0]]
            if len(constant) == 1 and constant[0] in constants:
                last, bias = add, constant
        a_scale, b_scale = scales.input
        replaced[id(n)] = helper.make_node(
            "MatMulIntegerToFloat",
            [n.input[0], n.input[1], a_scale, b_scale, n.input[2], n.input[3], *bias],
            [last.output[0]],
            name=f"{n.name or n.output[0]}_to_float",
            domain="com.microsoft",
        )
        dropped |= {id(cast), id(mul), id(scales)} | ({id(last)} if last is not mul else set())
    nodes = [replaced.get(id(n), n) for n in graph.node if id(n) not in dropped]
    del graph.node[:]
    graph.node.extend(nodes)
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return len(replaced)


def fix_activation_scales(path: Path, recipe: dict[str, Any], calibration: Any) -> dict[str, Any]:
    """Calibrate and fix the activation scales of the dynamic int8 file at ``path`` in place; return ``recipe``
    with what was done (``calibration``: _calibrate.Calibration, its sentences each run alone)."""
    model = onnx.load(str(path))  # read once, written once: the int8 file is tens to hundreds of MB
    feeds, _ = calibration.batches({**recipe, "calibration_padding": "none"}, [i.name for i in model.graph.input])
    fixed = fix_scales(model, activation_ranges(model, feeds))
    fuse_integer_matmuls(model)
    onnx.save(model, str(path))
    ops = [n.op_type for n in model.graph.node]
    return {
        **recipe,
        "activations_fixed": fixed,
        # integer matmuls whose activations now have fixed scales, attention's Q/K/V projections included
        "matmuls_quantized": sum(op in ("MatMulIntegerToFloat", "MatMulInteger", "QAttention") for op in ops),
        "calibration_data": {"file": calibration.file, "sentences": len(feeds)},
    }
