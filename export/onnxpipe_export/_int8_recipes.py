"""The INT8 recipes as plain data (no heavy imports), so the CLI can list them without loading onnx."""

from __future__ import annotations

from onnxpipe.errors import ExportError

# The default recipe (DEFAULT_INT8 below), chosen on minilm-sst2 by `--int8-recipe search`; that model's
# manifest keeps every candidate's numbers. "graph" names the fp32 graph that gets quantized (GRAPHS).
INT8_RECIPE = {
    "method": "dynamic",
    "weight_type": "QInt8",
    "per_channel": True,
    "reduce_range": False,  # VNNI / AVX-512 CPUs multiply full-range int8; reduce_range is for pre-VNNI x86
    "graph": "fused",
    "op_types": ["Attention", "EmbedLayerNormalization", "Gather", "MatMul"],
    # Residual Add before each LayerNormalization written as Sum (_optimize.residual_add_as_sum), so that
    # onnxruntime's load-time SkipLayerNormFusion does not apply in any consumer: its CPU kernel took 27 % of
    # int8 minilm-sst2's time, where Add + LayerNormalization take 8 % (onnxruntime 1.32 profile,
    # bench/README.md). Until issue 13 this was a load-time switch only onnxpipe applied.
    "residual_add_as_sum": False,
}

# What `--int8-recipe search` tries: the levers issue 3 names (per-channel or not, QInt8 vs QUInt8 weights,
# fused vs unfused graph, which operators). Each entry overrides INT8_RECIPE.
INT8_CANDIDATES = {
    "fused-pc-s8": {},
    "fused-pc-s8-fp32-embeddings": {"op_types": ["Attention", "MatMul"]},
    "fused-pc-s8-fp32-attention": {"op_types": ["EmbedLayerNormalization", "Gather", "MatMul"]},
    "fused-pt-s8": {"per_channel": False},
    "fused-pc-u8": {"weight_type": "QUInt8"},
    "fused-attention-only-pc-s8": {"graph": "fused-attention-only"},
    "fused-attention-only-pc-s8-no-skipln": {"graph": "fused-attention-only", "residual_add_as_sum": True},
    "fused-no-attention-pc-s8": {"graph": "fused-no-attention"},
    "unfused-pc-s8": {"graph": "unfused", "op_types": ["Gather", "MatMul"]},
    "unfused-pc-s8-no-skipln": {"graph": "unfused", "op_types": ["Gather", "MatMul"], "residual_add_as_sum": True},
    "unfused-pt-s8": {"graph": "unfused", "per_channel": False, "op_types": ["Gather", "MatMul"]},
}


# Chosen by `--int8-recipe search` on minilm-sst2 (2-core AVX-512 VNNI Xeon): SST-2 dev 0.8956 vs PyTorch's
# 0.8933, 98.6 % label agreement; against the fully fused graph (fused-pc-s8) 1.36x the throughput (996 vs
# 731 sentences/s) and 17 % less batch-1 latency (1.48 vs 1.78 ms). Most of it is SkipLayerNormalization's
# CPU kernel, the rest export-time BiasGelu / EmbedLayerNorm fusions that onnxruntime's own load-time ones
# beat. models/minilm-sst2/manifest.json keeps every candidate's figures.
DEFAULT_INT8 = "fused-attention-only-pc-s8-no-skipln"


def recipe_named(name: str) -> dict:
    if name not in INT8_CANDIDATES:
        raise ExportError(f"unknown int8 recipe {name!r}; valid: {', '.join(INT8_CANDIDATES)} (or 'search')")
    return {**INT8_RECIPE, **INT8_CANDIDATES[name], "name": name}
