"""The cached decoder step's attentions as onnxruntime's MultiHeadAttention (com.microsoft), for optimum's
with-past decoder graphs of T5 and BART / Marian.

Why: at batch 1 a cached step is mostly small kernels, each a fork/join of the thread pool. Traced, one
attention is ~15 of them (Reshape and Transpose of q, k and v, the cache Concats, QK^T, the bias Add, Softmax,
the product with V, the Transpose and Reshape back) plus their shape arithmetic; fused, it is one. After _fold,
a cached step runs 233 kernels instead of 405 (t5-small) and 342 instead of 492 (bart-base), and computes the
same logits and caches bit for bit on onnxruntime's CPU kernels.

Matched, anchored at each Softmax over the last axis, and only in this form (anything else is left as it is,
so a graph this does not know stays correct, only unfused):

    q = [Mul(c)] Transpose(0,2,1,3)(Reshape(Q, split into heads))
    self-attention:  K = Concat(past_key, Transpose(0,2,1,3)(Reshape(Kp, split))) on axis 2, V likewise;
                     past_key / past_value graph inputs; K read by that Transpose (and Shapes), V by the product
    cross-attention: K, V graph inputs (the cached encoder keys and values, (b, heads, length, head_dim))
    out = Reshape(Transpose(0,2,1,3)(MatMul(Softmax(MatMul(q, [Mul(c)] Transpose(0,1,3,2)(K)) + bias), V)),
                  merge the heads)

"split into heads": T5's [b, -1, heads, head_dim], or BART's [b, s, -1, head_dim] where Q's width (its
projection's weight) is heads * head_dim; b and s are sizes read from a shape.

-> MultiHeadAttention(Q, Kp|K, Vp|V, attention_bias=bias, past_key, past_value; scale: 1 for T5, which does not
scale its scores, c * c for BART's trace, which scales q and k by c = head_dim ** -0.25 each) writing ``out``
and, for self-attention, the cache outputs K and V. A Shape that reads K (the key length: T5's first layer's
position bias, BART's mask slice in every layer) would come after the fused node whose bias it computes: the
key Concat stays for those Shapes alone (one small copy).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
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

    def scaled(self, name: str) -> tuple[str, tuple[onnx.NodeProto, float] | None]:
        """``name`` = Mul(x, scalar constant) read by one node: (x, (the Mul, the scalar)); else (name, None)."""
        mul = self.made_by(name, "Mul")
        if mul is None or len(self.readers.get(name, [])) != 1:
            return name, None
        for i, other in ((0, 1), (1, 0)):
            tensor = self.constants.get(mul.input[other])
            if tensor is not None and tensor.data_type == onnx.TensorProto.FLOAT and not list(tensor.dims):
                return mul.input[i], (mul, float(numpy_helper.to_array(tensor)))
        return name, None

    def target(self, reshape: onnx.NodeProto) -> list[int | str] | None:
        """A Reshape's target shape, entry by entry: a constant, "dim0" / "dim1" for a size read from a tensor's
        shape (Unsqueeze(Gather(Shape(t), 0 or 1))), "?" for anything else computed; None if not a constant or a
        Concat of such parts."""
        if _attr(reshape, "allowzero", 0) != 0:
            return None
        whole = self.constant(reshape.input[1])
        if whole is not None:
            return list(whole)
        concat = self.made_by(reshape.input[1], "Concat")
        if concat is None:
            return None
        parts: list[int | str] = []
        for name in concat.input:
            value = self.constant(name)
            if value is not None:
                parts += value
                continue
            unsqueeze = self.made_by(name, "Unsqueeze")
            gather = self.made_by(unsqueeze.input[0], "Gather") if unsqueeze is not None else None
            index = self.constant(gather.input[1]) if gather is not None else None
            shaped = gather is not None and self.made_by(gather.input[0], "Shape") is not None
            parts.append(f"dim{index[0]}" if shaped and index in ([0], [1]) else "?")
        return parts

    def width(self, name: str) -> int | None:
        """The last dimension of a projection's output: MatMul(x, W) or MatMul(x, W) + b, W a constant."""
        add = self.made_by(name, "Add")
        if add is not None:
            name = next((i for i in add.input if i not in self.constants), "")
        matmul = self.made_by(name, "MatMul")
        weight = self.constants.get(matmul.input[1]) if matmul is not None else None
        return int(weight.dims[-1]) if weight is not None and len(weight.dims) == 2 else None

    def splits_heads(self, reshape: onnx.NodeProto, heads: int, head_dim: int) -> bool:
        """(b, s, heads * head_dim) -> (b, s, heads, head_dim): T5's [b, -1, heads, head_dim] or BART's
        [b, s, -1, head_dim] (b, s read from a shape; -1 is heads only where the input's width says so)."""
        target = self.target(reshape)
        if target is None or len(target) != 4 or target[0] not in ("dim0", "?"):
            return False
        if target[1:] == [-1, heads, head_dim]:
            return True
        return (
            target[:3] == ["dim0", "dim1", -1]
            and target[3] == head_dim
            and (self.width(reshape.input[0]) == heads * head_dim)
        )

    def merges_heads(self, reshape: onnx.NodeProto, hidden: int) -> bool:
        """(b, s, heads, head_dim) -> (b, s, hidden): [b, -1, hidden] or [b, s, -1]."""
        target = self.target(reshape)
        return target is not None and target[0] in ("dim0", "?") and target[1:] in ([-1, hidden], ["dim1", -1])


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
        if reshape is None or not g.splits_heads(reshape, heads, head_dim):
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
        q_in, q_scale = g.scaled(scores.input[0])
        k_in, k_scale = g.scaled(scores.input[1])
        if (q_scale is None) != (k_scale is None):
            continue
        scale = 1.0 if q_scale is None else float(np.float32(q_scale[1]) * np.float32(k_scale[1]))  # type: ignore[index]
        q = projection(q_in)
        keys_t = g.made_by(k_in, "Transpose")
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
            or not g.merges_heads(out, heads * head_dim)
        ):
            continue
        keys, values = keys_t.input[0], mix.input[1]  # type: ignore[union-attr]
        matched = [softmax, add, scores, keys_t, mix, merge, *q[1]]
        if q_scale is not None and k_scale is not None:
            matched += [q_scale[0], k_scale[0]]
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
            "MultiHeadAttention", inputs, outputs, name=name, domain="com.microsoft", num_heads=heads, scale=scale
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
