"""The INT8 recipes as plain data (no heavy imports), so the CLI can list them without loading onnx.

Three methods, each with its base recipe (METHODS) that a candidate's entry overrides:
- ``dynamic``: onnxruntime's dynamic quantizer; activations get one scale per batch tensor at run time, so a
  text's result depends on its batch-mates (so the runtime runs such files one sequence at a time);
- ``MatMulNBits``: weight-only 4- or 8-bit blocks (_lowbit.py); accuracy_level 4 quantizes activations per row
  and block, so rows stay independent;
- ``static``: QDQ with activation ranges calibrated once on sample sentences (_calibrate.py, needs
  --calibration-data); fixed scales, so rows stay independent;
- ``fixed-scales``: the dynamic quantizer's graph with each activation's scale and zero point calibrated once
  (_fixed_scales.py) on --calibration-data or, without it, the package's own English sentences; rows stay
  independent, and another CPU's last-bit float differences can no longer move a whole tensor's scale.
"""

from __future__ import annotations

from typing import Any

from onnxpipe.errors import ExportError

# The default recipe (DEFAULT_INT8 below), chosen on minilm-sst2 by `--int8-recipe search`; that model's
# manifest keeps every candidate's numbers. "graph" names the fp32 graph that gets quantized (GRAPHS).
INT8_RECIPE = {
    "method": "dynamic",
    "weight_type": "QInt8",
    "per_channel": True,
    # False: full-range s8 weights, which AVX2-only x86 (vpmaddubsw: u8 x s8 pair sums in saturating 16-bit
    # lanes) overflows; True: 7-bit weights (|w| <= 64), which no CPU saturates (_int8_saturation.py)
    "reduce_range": False,
    "graph": "fused",
    "op_types": ["Attention", "EmbedLayerNormalization", "Gather", "MatMul"],
    # Residual Add before each LayerNormalization written as Sum (_optimize.residual_add_as_sum), so that
    # onnxruntime's load-time SkipLayerNormFusion does not apply in any consumer: its CPU kernel took 27 % of
    # int8 minilm-sst2's time, where Add + LayerNormalization take 8 % (onnxruntime 1.32 profile; docs/cli.md,
    # bench/int8_no_switch.py). Baked into the graph rather than a load-time switch, so that every consumer of the file
    # (Optimum, transformers.js, fastembed) computes the same scores as onnxpipe.
    "residual_add_as_sum": False,
}

# Weight-only low-bit MatMuls (onnxruntime's MatMulNBits): symmetric blocks along K, one scale per block. The
# graph's Gemm nodes (the 2-D pooler and classifier heads) stay fp32: a negligible share of the work.
NBITS_RECIPE = {
    "method": "MatMulNBits",
    "bits": 8,
    "block_size": 32,
    "symmetric": True,
    "accuracy_level": 4,  # int8 activations per row and block: fast, and each row its own scales
    "op_types": ["MatMul"],
    "graph": "unfused",
}

# Static QDQ: per-channel s8 weights, u8 activations with ranges from calibration sentences (never the
# validation data). Only MatMuls: quantizing every operator lets padding leak through the mask (measured:
# 163 SST-2 label flips between a sentence alone and in a padded batch); the Gemm heads are negligible work.
STATIC_RECIPE = {
    "method": "static",
    "format": "QDQ",
    "op_types": ["MatMul"],
    "per_channel": True,
    "weight_type": "QInt8",
    "activation_type": "QUInt8",
    "reduce_range": False,
    "calibration": "minmax",  # or "percentile", "entropy"
    # "fixed": batches of 16 padded to one fixed length (padding positions are part of the ranges);
    # "none": each sentence alone, so the ranges see real tokens only (mask-aware)
    "calibration_padding": "fixed",
    "calibration_sentences": 512,
    "graph": "fused",
}

# The dynamic quantizer's graph, then each DynamicQuantizeLinear fixed to calibrated constants (_fixed_scales.py):
# ranges as DynamicQuantizeLinear computes them, from min and max over the calibration sentences run alone.
FIXED_SCALES_RECIPE = {
    **INT8_RECIPE,
    "method": "fixed-scales",
    "calibration": "minmax",
    "calibration_sentences": 512,
}

# The CPU-exact variant (--precision int8-exact): 8-bit weight-only MatMulNBits with accuracy_level 1, so the
# activations stay fp32 and only float kernels run. Dynamic int8 quantizes each activation tensor with a scale
# the CPU's float kernels computed, so a last-bit difference between two CPUs' GELU or LayerNorm code now and then
# moves a whole tensor's scale (up to 0.11 of a probability apart, AVX2 vs VNNI); float kernels differ in the
# last bits only. The graph and residual Sum as the default's. Fixed activation scales (static QDQ, the
# fused-attention-only-static-minmax-rr-no-skipln-float-out candidate) are 2.3-2.8x this recipe's throughput but not
# exact: a float difference in the last bit still rounds an element to the next step now and then, and that step
# travels through every later layer (onnxruntime 1.27 vs 1.32 on one CPU: max |dP| 0.089 on 400 SST-2 sentences,
# where this recipe moves 1.1e-6; bench/results/int8_cpu.md).
EXACT_RECIPE = {
    **NBITS_RECIPE,
    "accuracy_level": 1,  # fp32 compute: the weights are dequantized, the activations never are quantized
    "graph": "fused-attention-only",
    "residual_add_as_sum": True,
    "name": "fused-attention-only-nb8-fp32-compute-no-skipln",
}

METHODS = {
    "dynamic": INT8_RECIPE,
    "MatMulNBits": NBITS_RECIPE,
    "static": STATIC_RECIPE,
    "fixed-scales": FIXED_SCALES_RECIPE,
}

# What `--int8-recipe search` tries: the levers that move INT8 accuracy and speed (per-channel or not, QInt8 vs
# QUInt8 weights, fused vs unfused graph, which operators), and the batch-invariant methods (a text's answer
# must not depend on its batch-mates). Each entry overrides the base recipe of its method (METHODS; dynamic
# when it names none).
INT8_CANDIDATES: dict[str, dict[str, Any]] = {
    "fused-pc-s8": {},
    "fused-pc-s8-fp32-embeddings": {"op_types": ["Attention", "MatMul"]},
    "fused-pc-s8-fp32-attention": {"op_types": ["EmbedLayerNormalization", "Gather", "MatMul"]},
    "fused-pt-s8": {"per_channel": False},
    "fused-pc-u8": {"weight_type": "QUInt8"},
    "fused-attention-only-pc-s8": {"graph": "fused-attention-only"},
    "fused-attention-only-pc-s8-no-skipln": {"graph": "fused-attention-only", "residual_add_as_sum": True},
    "fused-no-attention-pc-s8": {"graph": "fused-no-attention"},
    # 7-bit s8 weights (reduce_range): the same numbers on every CPU's integer kernels, AVX2-only x86 included
    "fused-pc-s8-rr": {"reduce_range": True},
    "fused-attention-only-pc-s8-rr": {"graph": "fused-attention-only", "reduce_range": True},
    "fused-attention-only-pc-s8-rr-no-skipln": {
        "graph": "fused-attention-only",
        "reduce_range": True,
        "residual_add_as_sum": True,
    },
    "fused-attention-only-pc-u8-no-skipln": {
        "graph": "fused-attention-only",
        "weight_type": "QUInt8",
        "residual_add_as_sum": True,
    },
    "unfused-pc-s8-rr-no-skipln": {
        "graph": "unfused",
        "op_types": ["Gather", "MatMul"],
        "reduce_range": True,
        "residual_add_as_sum": True,
    },
    "unfused-pc-s8": {"graph": "unfused", "op_types": ["Gather", "MatMul"]},
    "unfused-pc-s8-no-skipln": {"graph": "unfused", "op_types": ["Gather", "MatMul"], "residual_add_as_sum": True},
    "unfused-pt-s8": {"graph": "unfused", "per_channel": False, "op_types": ["Gather", "MatMul"]},
    # weight-only MatMulNBits: the unfused graph quantizes attention's Q/K/V projections too, the fused
    # Attention operator keeps them fp32
    "unfused-nb8-b32": {"method": "MatMulNBits"},
    "unfused-nb8-b64": {"method": "MatMulNBits", "block_size": 64},
    "unfused-nb8-b128": {"method": "MatMulNBits", "block_size": 128},
    "unfused-nb4-b32": {"method": "MatMulNBits", "bits": 4},
    "fused-attention-only-nb8-b32": {"method": "MatMulNBits", "graph": "fused-attention-only"},
    "fused-attention-only-nb8-b32-no-skipln": {
        "method": "MatMulNBits",
        "graph": "fused-attention-only",
        "residual_add_as_sum": True,
    },
    "fused-attention-only-nb4-b32": {"method": "MatMulNBits", "bits": 4, "graph": "fused-attention-only"},
    # static QDQ (skipped by the search without --calibration-data). On minilm-sst2 the fully fused graph
    # keeps 99.9 % label agreement, the fused-attention-only one 98.6 %, the unfused one 95 % (min-max,
    # AVX2 EPYC): the fused graph leaves attention's Q/K/V projections and the score products in fp32.
    "fused-static-minmax": {"method": "static", "graph": "fused"},
    "fused-static-percentile": {"method": "static", "graph": "fused", "calibration": "percentile"},
    "fused-static-entropy": {"method": "static", "graph": "fused", "calibration": "entropy"},
    "fused-static-minmax-unpadded": {"method": "static", "graph": "fused", "calibration_padding": "none"},
    # 7-bit weights: CPUs without an int8 dot product (AVX2 only) saturate u8 x s8 pair sums in 16 bits
    "fused-static-minmax-rr": {"method": "static", "graph": "fused", "reduce_range": True},
    "fused-attention-only-static-minmax": {"method": "static", "graph": "fused-attention-only"},
    # the default's graph with fixed scales and float MatMul outputs (QuantizeLinear -> MatMulIntegerToFloat):
    # SST-2 dev 0.8899, 99.0 % label agreement, batch-invariant; 0.58-0.73x the default at batch 1 and 0.61-0.72x
    # its throughput; emulated ARM64 p99 |dP| 1.2e-3 (the default 0.012) but max 0.024 (bench/results/int8_cpu.md)
    "fused-attention-only-static-minmax-rr-no-skipln-float-out": {
        "method": "static",
        "graph": "fused-attention-only",
        "reduce_range": True,
        "residual_add_as_sum": True,
        "quantize_outputs": False,
    },
    "unfused-static-minmax": {"method": "static", "graph": "unfused"},
    # the previous default's graph and 7-bit weights with fixed activation scales (calibrated on
    # --calibration-data, else the built-in sentences): batch-invariant, faster at batch 1, and another CPU's
    # float kernels can no longer move a whole tensor's scale (bench/results/int8_cpu.md)
    "fused-attention-only-pc-s8-rr-no-skipln-fixed": {
        "method": "fixed-scales",
        "graph": "fused-attention-only",
        "reduce_range": True,
        "residual_add_as_sum": True,
    },
}


# Chosen by `--int8-recipe search` on minilm-sst2 (2-core AVX-512 VNNI Xeon) among the candidates that cannot
# saturate on any CPU: the previous default's graph (fused attention only, residual Add as Sum: onnxruntime's
# SkipLayerNormalization CPU kernel took 27 % of the time) with 7-bit weights and fixed activation scales.
# Against the dynamic recipe of the same graph it keeps quality, is batch-invariant and faster, and moves P by
# less on another CPU (bench/results/int8_cpu.md, bench/results/cpu_agreement.json); models/minilm-sst2's
# manifest keeps every candidate's figures.
DEFAULT_INT8 = "fused-attention-only-pc-s8-rr-no-skipln-fixed"


def recipe_named(name: str) -> dict[str, Any]:
    if name not in INT8_CANDIDATES:
        raise ExportError(f"unknown int8 recipe {name!r}; valid: {', '.join(INT8_CANDIDATES)} (or 'search')")
    entry = INT8_CANDIDATES[name]
    return {**METHODS[entry.get("method", "dynamic")], **entry, "name": name}


def needs_calibration(recipe: dict[str, Any]) -> bool:
    """Whether ``recipe`` calibrates activation ranges on the task's own sentences (--calibration-data)."""
    return recipe.get("method") == "static"
