"""Prototypes with fewer operators of an int8 file, built by graph rewrites for op_profile.py to count and time.

Each rewrite leaves the weights' integer values as they are, so a variant differs from the file only in which
kernels onnxruntime picks after its load-time fusions:

- ``skipln``: each residual ``Sum`` before a LayerNormalization written back as ``Add``, so onnxruntime's
  SkipLayerNormFusion applies (the shipped recipe writes Sum precisely to stop it);
- ``fp32-embeddings``: the three int8 embedding tables dequantized once, offline (the same values the
  DequantizeLinear nodes compute at run time), and the embeddings' Sum written as Add, so onnxruntime's
  EmbedLayerNormFusion can replace Gathers, Adds and the LayerNormalization with one EmbedLayerNormalization;
- ``skipln+fp32-embeddings``: both;
- ``embed-layernorm``: the fp32 tables, and the embeddings written as onnxruntime's EmbedLayerNormalization
  directly (its fusion does not match this graph's position-id Slice): one node for the three Gathers, their
  sums, the LayerNormalization and the mask's ReduceSum, plus int32 Casts of the ids;
- ``embed-layernorm+skipln``: with the residual Sums as Add too.

The other fewer-operator levers, and why there is no rewrite for them here: one DynamicQuantizeLinear shared by Q, K and
V and packed QKV are already in the file (QAttention reads one quantized input and one packed weight);
DynamicQuantizeMatMul is what onnxruntime's fusion turns every DynamicQuantizeLinear -> MatMulInteger -> Cast ->
Mul (-> bias Add) chain into at load ("extended"), and MatMulIntegerToFloat is its form for a quantized input
shared by several matmuls, which this graph no longer has; the bias Add goes into DynamicQuantizeMatMul, so
BiasGelu finds no Add before the Gelu to fuse.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper


def _load(path: Path) -> onnx.ModelProto:
    return onnx.load(str(path))


def _residual_sums(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """Two-input Sums whose output feeds a LayerNormalization (the export's residual_add_as_sum)."""
    ln_inputs = {n.input[0] for n in model.graph.node if n.op_type == "LayerNormalization"}
    return [n for n in model.graph.node if n.op_type == "Sum" and len(n.input) == 2 and n.output[0] in ln_inputs]


def sums_as_add(model: onnx.ModelProto, only_embeddings: bool = False) -> int:
    changed = 0
    for n in _residual_sums(model):
        if only_embeddings and "/embeddings/" not in n.name:
            continue
        n.op_type = "Add"
        changed += 1
    return changed


def fp32_embeddings(model: onnx.ModelProto) -> int:
    """Gather(int8 table) -> DequantizeLinear becomes Gather(fp32 table), the table dequantized with numpy."""
    inits = {i.name: i for i in model.graph.initializer}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in model.graph.node:
        for x in n.input:
            consumers.setdefault(x, []).append(n)
    drop, changed = [], 0
    for g in [n for n in model.graph.node if n.op_type == "Gather" and n.input[0] in inits]:
        users = consumers.get(g.output[0], [])
        if len(users) != 1 or users[0].op_type != "DequantizeLinear":
            continue
        dq = users[0]
        q = numpy_helper.to_array(inits[g.input[0]]).astype(np.float32)
        scale = numpy_helper.to_array(inits[dq.input[1]]).astype(np.float32)
        zp = numpy_helper.to_array(inits[dq.input[2]]).astype(np.float32) if len(dq.input) > 2 else np.float32(0)
        if scale.ndim:  # per-axis: the axis names the table's dimension the scales run along
            axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
            shape = [1] * q.ndim
            shape[axis] = -1
            scale, zp = scale.reshape(shape), np.reshape(zp, shape) if np.ndim(zp) else zp
        table = ((q - zp) * scale).astype(np.float32)
        name = g.input[0].removesuffix("_quantized") + "_fp32"
        model.graph.initializer.append(numpy_helper.from_array(table, name))
        g.input[0] = name
        g.output[0] = dq.output[0]
        drop.append(dq)
        changed += 1
    for dq in drop:
        model.graph.node.remove(dq)
    used = {x for n in model.graph.node for x in n.input}
    keep = [i for i in model.graph.initializer if i.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)
    sums_as_add(model, only_embeddings=True)
    return changed


def _dead_code(model: onnx.ModelProto) -> None:
    outputs = {o.name for o in model.graph.output}
    while True:
        used = {x for n in model.graph.node for x in n.input} | outputs
        dead = [n for n in model.graph.node if not any(o in used for o in n.output)]
        if not dead:
            break
        for n in dead:
            model.graph.node.remove(n)
    used = {x for n in model.graph.node for x in n.input}
    keep = [i for i in model.graph.initializer if i.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)


def embed_layernorm(model: onnx.ModelProto) -> int:
    """fp32 tables, then one com.microsoft EmbedLayerNormalization in place of the embeddings' subgraph."""
    fp32_embeddings(model)
    nodes = model.graph.node
    ln = next(n for n in nodes if n.op_type == "LayerNormalization" and "/embeddings/" in n.name)
    mask_sum = next(n for n in nodes if n.op_type == "ReduceSum" and n.output[0].startswith("mask_index"))
    table = {
        kind: next(n.input[0] for n in nodes if n.op_type == "Gather" and f"/{kind}_embeddings/" in n.name)
        for kind in ("word", "position", "token_type")
    }
    eps = next((a.f for a in ln.attribute if a.name == "epsilon"), 1e-12)
    before = len(nodes)
    casts = [
        onnx.helper.make_node("Cast", [name], [f"{name}_int32_eln"], to=onnx.TensorProto.INT32)
        for name in ("input_ids", "token_type_ids", "attention_mask")
    ]
    eln = onnx.helper.make_node(
        "EmbedLayerNormalization",
        [
            "input_ids_int32_eln",
            "token_type_ids_int32_eln",
            table["word"],
            table["position"],
            table["token_type"],
            ln.input[1],
            ln.input[2],
            "attention_mask_int32_eln",
        ],
        [ln.output[0], mask_sum.output[0]],
        domain="com.microsoft",
        epsilon=eps,
    )
    nodes.remove(ln)
    nodes.remove(mask_sum)
    for i, n in enumerate([*casts, eln]):
        nodes.insert(i, n)
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(onnx.helper.make_opsetid("com.microsoft", 1))
    _dead_code(model)
    return before - len(nodes)


def build_all(src: Path, tmp: Path) -> dict[str, tuple[Path, str]]:
    """{name: (file, what was rewritten)} for every prototype, written under ``tmp``."""
    out = {}
    for name, steps in (
        ("skipln", (sums_as_add,)),
        ("fp32-embeddings", (fp32_embeddings,)),
        ("skipln+fp32-embeddings", (fp32_embeddings, sums_as_add)),
        ("embed-layernorm", (embed_layernorm,)),
        ("embed-layernorm+skipln", (embed_layernorm, sums_as_add)),
    ):
        model = _load(src)
        counts = [f"{step.__name__}: {step(model)}" for step in steps]
        path = tmp / f"{name}.onnx"
        onnx.save(model, str(path))
        out[name] = (path, f"{', '.join(counts)} (nodes rewritten; for embed_layernorm: nodes removed)")
    return out
