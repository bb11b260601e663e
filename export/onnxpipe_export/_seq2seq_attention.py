"""The cached decoder step's attentions as onnxruntime's MultiHeadAttention (com.microsoft), for optimum's T5
with-past decoder graph.

Why: at batch 1 a cached step is mostly small kernels, each a fork/join of the thread pool. Traced, one T5
attention is ~15 of them (Reshape and Transpose of q, k and v, the cache Concats, QK^T, the bias Add, Softmax,
the product with V, the Transpose and Reshape back) plus their shape arithmetic; fused, it is one. On
t5-small's with-past graph (after _fold) the step runs ~230 kernels instead of 405 and computes the same logits
and caches bit for bit on onnxruntime's CPU kernels.

Matched, anchored at each Softmax over the last axis, and only in this exact form (anything else is left as
it is, so a graph this does not know stays correct, only unfused):

    q = Transpose(0,2,1,3)(Reshape(Q, [b, -1, heads, head_dim]))
    self-attention:  K = Concat(past_key, Transpose(0,2,1,3)(Reshape(Kp, [...]))) on axis 2, V likewise;
                     past_key / past_value graph inputs, K and V read by nothing else
    cross-attention: K, V graph inputs (the cached encoder keys and values, (b, heads, length, head_dim))
    out = Reshape(Transpose(0,2,1,3)(MatMul(Softmax(MatMul(q, Transpose(0,1,3,2)(K)) + bias), V)), [b, -1, D])

-> MultiHeadAttention(Q, Kp|K, Vp|V, attention_bias=bias, past_key, past_value; scale 1: T5 does not scale
its scores, and a scaled graph, BART's, does not match) writing ``out`` and, for self-attention, the cache
outputs K and V. T5's first layer also reads its self-attention cache's shape (the key length of the position
bias), which the fused node would produce after the bias it needs: that layer keeps its key Concat for the
Shape alone.
"""

from __future__ import annotations

from pathlib import Path

import onnx
from onnx import helper, numpy_helper

_PER_HEAD = [0, 2, 1, 3]
_KEYS_T = [0, 1, 3, 2]


class _Graph:
    def __init__(self, graph: onnx.GraphProto):
        self.graph = graph
        self.producer = {o: n for n in graph.node for o in n.output}
        self.readers: dict[str, list[onnx.NodeProto]] = {}
        for n in graph.node:
            for i in n.input:
                self.readers.setdefault(i, []).append(n)
        self.inputs = {i.name for i in graph.input}
        self.outputs = {o.name for o in graph.output}
        self.constants = {i.name: i for i in graph.initializer}

    def made_by(self, name: str, op: str) -> onnx.NodeProto | None:
        node = self.producer.get(name)
        return node if node is not None and node.op_type == op else None

    def sole_reader(self, name: str, op: str) -> onnx.NodeProto | None:
        readers = self.readers.get(name, [])
        if len(readers) != 1 or name in self.outputs or readers[0].op_type != op:
            return None
        return readers[0]

    def constant(self, name: str) -> list[int] | None:
        tensor = self.constants.get(name)
        if tensor is None and (node := self.made_by(name, "Constant")) is not None:
            tensor = next((a.t for a in node.attribute if a.name == "value"), None)
        return None if tensor is None else [int(v) for v in numpy_helper.to_array(tensor).reshape(-1)]

    def shape_ends(self, reshape: onnx.NodeProto) -> list[int] | None:
        """The constant tail of a Reshape's target shape (a constant, or a Concat of a computed batch size and
        constants): [-1, heads, head_dim] or [-1, hidden]."""
        if _attr(reshape, "allowzero", 0) != 0:
            return None
        whole = self.constant(reshape.input[1])
        if whole is not None:
            return whole[1:]
        concat = self.made_by(reshape.input[1], "Concat")
        if concat is None:
            return None
        parts = [self.constant(i) for i in concat.input[1:]]
        return None if any(p is None for p in parts) else [v for p in parts for v in p or []]


def _attr(node: onnx.NodeProto, name: str, default: object = None) -> object:
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _perm(node: onnx.NodeProto | None, perm: list[int]) -> bool:
    return node is not None and list(_attr(node, "perm", [])) == perm  # type: ignore[call-overload]


def fuse_cached_attention(path: Path) -> dict[str, int] | None:
    """Fuse the attentions of the with-past decoder graph at ``path`` in place; return the manifest's
    ``fused_operators`` ({"MultiHeadAttention": n}), None where none matched. Heads and head size are read from
    its first self-attention cache input, (batch, heads, length, head_dim)."""
    graph = onnx.load(str(path), load_external_data=False).graph
    past = next((i for i in graph.input if i.name.endswith(".decoder.key")), None)
    if past is None:
        return None
    dims = [d.dim_value if d.HasField("dim_value") else 0 for d in past.type.tensor_type.shape.dim]
    if len(dims) != 4 or not dims[1] or not dims[3]:
        return None
    fused = fuse_attention(path, dims[1], dims[3])
    return {"MultiHeadAttention": fused} if fused else None


def fuse_attention(path: Path, heads: int, head_dim: int) -> int:
    """Rewrite the graph at ``path`` in place (its weights, if external, stay where they are); return the number
    of attentions fused."""
    model = onnx.load(str(path), load_external_data=False)
    g = _Graph(model.graph)
    removed: set[int] = set()
    replaced: dict[int, onnx.NodeProto] = {}

    def projection(name: str) -> tuple[str, list[onnx.NodeProto]] | None:
        transpose = g.made_by(name, "Transpose")
        reshape = g.made_by(transpose.input[0], "Reshape") if _perm(transpose, _PER_HEAD) and transpose else None
        if reshape is None or g.shape_ends(reshape) != [-1, heads, head_dim]:
            return None
        return reshape.input[0], [transpose, reshape]  # type: ignore[list-item]

    for softmax in [n for n in model.graph.node if n.op_type == "Softmax"]:
        if _attr(softmax, "axis", -1) not in (-1, 3):
            continue
        add = g.made_by(softmax.input[0], "Add")
        scores = next((m for i in add.input if (m := g.made_by(i, "MatMul"))), None) if add else None
        if add is None or scores is None or g.sole_reader(scores.output[0], "Add") is None:
            continue
        bias = add.input[1] if add.input[0] == scores.output[0] else add.input[0]
        q = projection(scores.input[0])
        keys_t = g.made_by(scores.input[1], "Transpose")
        mix = g.sole_reader(softmax.output[0], "MatMul")
        merge = g.sole_reader(mix.output[0], "Transpose") if mix is not None else None
        out = g.sole_reader(merge.output[0], "Reshape") if merge is not None else None
        if (
            q is None
            or not _perm(keys_t, _KEYS_T)
            or g.sole_reader(add.output[0], "Softmax") is None
            or mix is None
            or mix.input[0] != softmax.output[0]
            or not _perm(merge, _PER_HEAD)
            or out is None
            or g.shape_ends(out) != [-1, heads * head_dim]
        ):
            continue
        keys, values = keys_t.input[0], mix.input[1]  # type: ignore[union-attr]
        matched = [softmax, add, scores, keys_t, mix, merge, *q[1]]
        cat_k, cat_v = g.made_by(keys, "Concat"), g.made_by(values, "Concat")
        if cat_k is not None and cat_v is not None:  # self-attention, with its cache
            k, v = projection(cat_k.input[1]), projection(cat_v.input[1])
            if (
                k is None
                or v is None
                or len(cat_k.input) != 2
                or len(cat_v.input) != 2
                or _attr(cat_k, "axis") not in (2, -2)
                or _attr(cat_v, "axis") not in (2, -2)
                or cat_k.input[0] not in g.inputs
                or cat_v.input[0] not in g.inputs
                or any(r is not keys_t and r.op_type != "Shape" for r in g.readers.get(keys, []))
                or any(r is not mix for r in g.readers.get(values, []))
            ):
                continue
            inputs = [q[0], k[0], v[0], "", "", bias, cat_k.input[0], cat_v.input[0]]
            outputs = [out.output[0], keys, values]
            matched += [cat_v, *v[1]]
            shapes = [r for r in g.readers.get(keys, []) if r.op_type == "Shape"]
            if not shapes:
                matched += [cat_k, *k[1]]
            elif not any(id(n) in removed for n in matched):
                # T5's first layer: the position bias reads the key length from this cache's shape, and the
                # bias is the fused node's input; the key Concat stays (one small copy) for that Shape alone
                cat_k.output[0] = keys + "/for_shape"
                for shape in shapes:
                    shape.input[0] = cat_k.output[0]
        elif keys in g.inputs and values in g.inputs:  # cross-attention on the cached encoder keys and values
            inputs, outputs = [q[0], keys, values, "", "", bias], [out.output[0]]
        else:
            continue
        if any(id(n) in removed for n in matched):
            continue
        name = softmax.name.rsplit("/", 1)[0] + "/MultiHeadAttention"
        replaced[id(out)] = helper.make_node(
            "MultiHeadAttention", inputs, outputs, name=name, domain="com.microsoft", num_heads=heads, scale=1.0
        )
        removed.update(id(n) for n in matched)
    if not replaced:
        return 0
    # each fused node where its output Reshape was (the graph stays topologically sorted: every input it reads
    # was computed before the Q projection's Reshape, which came before that Reshape)
    kept = [replaced.get(id(n), n) for n in model.graph.node if id(n) not in removed or id(n) in replaced]
    del model.graph.node[:]
    model.graph.node.extend(kept)
    _prune(model.graph)
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    _save(model, path)
    return len(replaced)


def _prune(graph: onnx.GraphProto) -> None:
    # the shape arithmetic only the removed Reshapes read
    while True:
        read = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
        kept = [n for n in graph.node if any(o in read for o in n.output if o)]
        if len(kept) == len(graph.node):
            break
        del graph.node[:]
        graph.node.extend(kept)
    read = {i for n in graph.node for i in n.input}
    constants = [i for i in graph.initializer if i.name in read]
    del graph.initializer[:]
    graph.initializer.extend(constants)


def _save(model: onnx.ModelProto, path: Path) -> None:
    # loaded without external data: weights inside the file were read whole, weights in a data file beside it
    # stay there and the header still names them
    path.write_bytes(model.SerializeToString())
