"""A fused decoder graph for the Llama family (Llama, Qwen2, Mistral), written from the checkpoint's weights.

Why not optimum's graph: its traced Llama graph has ~7,500 small nodes (reshapes, shapes, rotary arithmetic,
masks built per layer). Once the matmuls are 4-bit, running those nodes one by one costs more than the matmuls:
onnxruntime-genai's builder writes the same model in ~340 nodes and decoded 1.65x faster (bench/generate.md).
This module writes that kind of graph: per layer one ``SkipSimplifiedLayerNormalization`` per norm, one packed
q/k/v MatMul, one ``GroupQueryAttention`` (rotary inside, from cos/sin tables), one o-projection, gate/up/down
with SiLU. The weights are the checkpoint's own; only the layout changes.

The graph keeps the contract of optimum's layout that the runtime's loop speaks (``_generate.py``): inputs
``input_ids``, ``attention_mask`` (left padding), ``position_ids``, ``past_key_values.N.key/value``
(batch, kv heads, past, head size); outputs ``logits`` (every position) and ``present.N.key/value``. Left
padding reaches GroupQueryAttention as an additive ``attention_bias`` (its own ``seqlens_k`` assumes right
padding). Rotary positions are the cache slots (GroupQueryAttention's own, 0 for the first slot, padding
included), not ``position_ids`` (accepted, unused): the operator ignores ``position_ids`` for the prompt and
honours them for later steps, which would rotate one row's keys two ways. Rotary attention depends only on the
distance between positions, so a row shifted by its padding gets the answer it gets alone (the tests check it).
The cached keys are therefore rotated by slot: this cache is not interchangeable with optimum's graph's.

What it does not cover falls back to optimum's graph (``fused_unsupported`` says why): other architectures,
activations other than SiLU, partial rotary, rope scalings whose tables depend on the sequence length, and a
sliding window narrower than the model's positions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

ARCHITECTURES = ("llama", "qwen2", "mistral")
STATIC_ROPE = ("default", "linear", "llama3", "yarn")  # cos/sin tables that do not depend on the sequence length
_NEG = -1e9  # additive bias of a padded key: finite, so a row of padding (all keys masked) stays finite too


def fused_unsupported(config: Any) -> str | None:
    """Why this checkpoint cannot get the fused graph; None when it can."""
    if config.model_type not in ARCHITECTURES:
        return f"architecture {config.model_type!r} (fused: {', '.join(ARCHITECTURES)})"
    if getattr(config, "hidden_act", "silu") != "silu":
        return f"activation {config.hidden_act!r} (fused: silu)"
    if getattr(config, "partial_rotary_factor", 1.0) != 1.0:
        return "partial rotary embeddings"
    rope = getattr(config, "rope_scaling", None) or {}
    kind = rope.get("rope_type", rope.get("type", "default"))
    if kind not in STATIC_ROPE:
        return f"rope scaling {kind!r} (fused: {', '.join(STATIC_ROPE)})"
    heads = int(config.num_attention_heads)
    head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // heads)
    if head_dim % 16:
        return f"head size {head_dim} (GroupQueryAttention on CPU needs a multiple of 16)"
    window = getattr(config, "sliding_window", None)
    uses_window = getattr(config, "use_sliding_window", True)
    if window is not None and uses_window and window < config.max_position_embeddings:
        return f"a sliding window of {window} positions (< {config.max_position_embeddings})"
    return None


def _rope_tables(config: Any) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin, (positions, head_dim / 2), computed by transformers' own rope initialisation."""
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    rope = getattr(config, "rope_scaling", None) or {}
    kind = rope.get("rope_type", rope.get("type", "default"))
    inv_freq, scaling = ROPE_INIT_FUNCTIONS[kind](config, "cpu")  # type: ignore[arg-type]  # torch takes the name
    inv = inv_freq.double().numpy()
    angles = np.outer(np.arange(config.max_position_embeddings, dtype=np.float64), inv)
    return (np.cos(angles) * scaling).astype(np.float32), (np.sin(angles) * scaling).astype(np.float32)


class _Graph:
    """Nodes and initializers, with fresh names."""

    def __init__(self) -> None:
        self.nodes: list[Any] = []  # onnx NodeProtos
        self.inits: list[Any] = []  # onnx TensorProtos
        self._n = 0

    def init(self, name: str, array: np.ndarray) -> str:
        from onnx import numpy_helper

        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def op(self, op_type: str, inputs: list[str], n_out: int = 1, domain: str = "", **attrs: Any) -> list[str]:
        from onnx import helper

        self._n += 1
        name = f"{op_type}_{self._n}"
        outs = [f"{name}_out{i}" for i in range(n_out)]
        self.nodes.append(helper.make_node(op_type, inputs, outs, name=name, domain=domain, **attrs))
        return outs

    def one(self, op_type: str, inputs: list[str], domain: str = "", **attrs: Any) -> str:
        return self.op(op_type, inputs, 1, domain, **attrs)[0]


def build_fused(model: Any, path: Path) -> Path:
    """Write ``model`` (a transformers Llama-family causal LM, see ``fused_unsupported``) to ``path``."""
    import onnx
    from onnx import TensorProto, helper

    cfg = model.config
    sd = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
    heads, kv_heads = int(cfg.num_attention_heads), int(cfg.num_key_value_heads)
    head_dim = int(getattr(cfg, "head_dim", None) or cfg.hidden_size // heads)
    eps, layers = float(cfg.rms_norm_eps), int(cfg.num_hidden_layers)
    g = _Graph()
    ms = "com.microsoft"

    def linear(x: str, prefix: str) -> str:
        """x @ W^T (+ b): transformers' Linear as a MatMul on the transposed weight, which the low-bit pass
        turns into MatMulNBits."""
        y = g.one("MatMul", [x, g.init(prefix + ".weight_t", sd[prefix + ".weight"].T)])
        if prefix + ".bias" in sd:
            y = g.one("Add", [y, g.init(prefix + ".bias", sd[prefix + ".bias"])])
        return y

    # -- shared inputs of every attention: lengths, padding bias, rotary tables ------------------------------
    one = g.init("c1", np.array(1, dtype=np.int64))
    ids_shape, mask_shape = g.one("Shape", ["input_ids"]), g.one("Shape", ["attention_mask"])
    batch = g.one("Gather", [mask_shape, g.init("c0v", np.array([0], dtype=np.int64))])
    total = g.one("Gather", [mask_shape, one])  # scalar: past + new
    # Every row's cache holds ``total`` entries (left padding is inside the buffer), so seqlens_k = total - 1
    # for all rows; the padded keys are masked by the bias instead.
    seqlens = g.one("Cast", [g.one("Expand", [g.one("Sub", [total, one]), batch])], to=TensorProto.INT32)
    total32 = g.one("Cast", [total], to=TensorProto.INT32)
    keep = g.one("Cast", ["attention_mask"], to=TensorProto.FLOAT)
    padded = g.one("Sub", [g.init("c1f", np.array(1.0, np.float32)), keep])
    bias2d = g.one("Mul", [padded, g.init("neg", np.array(_NEG, np.float32))])  # 0 for a key, _NEG for padding
    bias4d = g.one("Unsqueeze", [bias2d, g.init("axes12", np.array([1, 2], dtype=np.int64))])  # (B, 1, 1, T)
    new_len = g.one("Gather", [ids_shape, g.init("c1v", np.array([1], dtype=np.int64))])
    ones2 = g.init("ones2", np.array([1, 1], dtype=np.int64))
    rows = g.one("Concat", [ones2, new_len, g.init("one1", np.array([1], np.int64))], axis=0)
    bias = g.one("Expand", [bias4d, rows])  # (B, 1, S, T): GroupQueryAttention broadcasts only B and heads
    cos, sin = _rope_tables(cfg)
    cos_cache, sin_cache = g.init("cos_cache", cos), g.init("sin_cache", sin)

    x = g.one("Gather", [g.init("embed_tokens", sd["model.embed_tokens.weight"]), "input_ids"])
    residual: str = x
    pending: str | None = None  # pending: the last block's output, added to the residual by the next norm
    inputs = [
        helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch_size", "sequence_length"]),
        helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch_size", "total_sequence_length"]),
        helper.make_tensor_value_info("position_ids", TensorProto.INT64, ["batch_size", "sequence_length"]),
    ]
    outputs = [
        helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch_size", "sequence_length", cfg.vocab_size])
    ]

    def norm(weight_name: str) -> str:
        nonlocal residual, pending
        gamma = g.init(weight_name, sd[weight_name])
        if pending is None:
            return g.one("SimplifiedLayerNormalization", [residual, gamma], axis=-1, epsilon=eps, stash_type=1)
        normed, _, _, summed = g.op("SkipSimplifiedLayerNormalization", [pending, residual, gamma], 4, ms, epsilon=eps)
        residual, pending = summed, None
        return normed

    for i in range(layers):
        p = f"model.layers.{i}"
        h = norm(f"{p}.input_layernorm.weight")
        a = f"{p}.self_attn"
        weight = np.concatenate([sd[f"{a}.{n}_proj.weight"] for n in "qkv"], axis=0)
        qkv = g.one("MatMul", [h, g.init(f"{a}.qkv_proj.weight_t", weight.T)])
        if f"{a}.q_proj.bias" in sd:
            qkv_bias = np.concatenate([sd[f"{a}.{n}_proj.bias"] for n in "qkv"])
            qkv = g.one("Add", [qkv, g.init(f"{a}.qkv_proj.bias", qkv_bias)])
        past = (f"past_key_values.{i}.key", f"past_key_values.{i}.value")
        present = (f"present.{i}.key", f"present.{i}.value")
        for name in past:
            shape: list[str | int | None] = ["batch_size", kv_heads, "past_sequence_length", head_dim]
            inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, shape))
        for name in present:
            shape = ["batch_size", kv_heads, "total_sequence_length", head_dim]
            outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, shape))
        attn = f"{a}.attn_out"
        g.nodes.append(
            helper.make_node(
                "GroupQueryAttention",
                [qkv, "", "", *past, seqlens, total32, cos_cache, sin_cache, "", bias],
                [attn, *present],
                name=f"{a}.GroupQueryAttention",
                domain=ms,
                num_heads=heads,
                kv_num_heads=kv_heads,
                scale=float(head_dim**-0.5),
                do_rotary=1,
                rotary_interleaved=0,
            )
        )
        pending = linear(attn, f"{a}.o_proj")
        h = norm(f"{p}.post_attention_layernorm.weight")
        m = f"{p}.mlp"
        gate = linear(h, f"{m}.gate_proj")
        silu = g.one("Mul", [gate, g.one("Sigmoid", [gate])])
        pending = linear(g.one("Mul", [silu, linear(h, f"{m}.up_proj")]), f"{m}.down_proj")
    h = norm("model.norm.weight")
    head = sd.get("lm_head.weight", sd["model.embed_tokens.weight"])  # tied embeddings: the same matrix
    g.nodes.append(helper.make_node("MatMul", [h, g.init("lm_head.weight_t", head.T)], ["logits"], name="lm_head"))

    graph = helper.make_graph(g.nodes, "decoder", inputs, outputs, g.inits)
    onnx_model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(ms, 1)], producer_name="onnxpipe"
    )
    onnx_model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    big = sum(t.nbytes for t in sd.values()) > 1_800_000_000  # protobuf's 2 GB limit: weights beside the graph
    onnx.save_model(onnx_model, str(path), save_as_external_data=big, location=path.name + ".data")
    return path
