"""Graph fusion, INT8 quantization and fp16 conversion of the exported fp32 graph.

INT8 is dynamic (weights quantized offline, activations per call) and meant for CPU. Recipes are plain data
(INT8_CANDIDATES); `--int8-recipe search` (_int8_search.py) measures them all on labelled data and this CPU.
Per-channel weights matter most: on minilm-sst2 per-tensor quantization loses 1.6-1.8 points of SST-2 dev
accuracy, per-channel about 0.1.
"""

from __future__ import annotations

import logging
from pathlib import Path

import onnx
from onnxruntime.quantization import QuantType, quantize_dynamic
from onnxruntime.transformers.onnx_model import OnnxModel
from onnxruntime.transformers.optimizer import optimize_model

# The default recipe (DEFAULT_INT8 below), chosen on minilm-sst2 by `--int8-recipe search`; that model's
# manifest keeps every candidate's numbers. "graph" names the fp32 graph that gets quantized (GRAPHS).
INT8_RECIPE = {
    "method": "dynamic",
    "weight_type": "QInt8",
    "per_channel": True,
    "reduce_range": False,  # VNNI / AVX-512 CPUs multiply full-range int8; reduce_range is for pre-VNNI x86
    "graph": "fused",
    "op_types": ["Attention", "EmbedLayerNormalization", "Gather", "MatMul"],
    # onnxruntime load-time fusions the runtime turns off for this file on the CPU provider (the manifest
    # carries the list). SkipLayerNormFusion: its CPU kernel took 27 % of int8 minilm-sst2's time, where
    # Add + LayerNormalization take 8 % (onnxruntime 1.32 profile, bench/README.md).
    "cpu_disabled_optimizers": [],
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
    "fused-attention-only-pc-s8-no-skipln": {"graph": "fused-attention-only",
                                             "cpu_disabled_optimizers": ["SkipLayerNormFusion"]},
    "fused-no-attention-pc-s8": {"graph": "fused-no-attention"},
    "unfused-pc-s8": {"graph": "unfused", "op_types": ["Gather", "MatMul"]},
    "unfused-pc-s8-no-skipln": {"graph": "unfused", "op_types": ["Gather", "MatMul"],
                                "cpu_disabled_optimizers": ["SkipLayerNormFusion"]},
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
        from onnxpipe.errors import ExportError

        raise ExportError(f"unknown int8 recipe {name!r}; valid: {', '.join(INT8_CANDIDATES)} (or 'search')")
    return {**INT8_RECIPE, **INT8_CANDIDATES[name], "name": name}


def _heads_and_hidden(config) -> tuple[int, int]:
    heads = getattr(config, "num_attention_heads", None) or getattr(config, "n_heads", 0)
    hidden = getattr(config, "hidden_size", None) or getattr(config, "dim", 0)
    return int(heads or 0), int(hidden or 0)


# The fp32 graphs an INT8 recipe can start from: onnxruntime fusion options per graph, None for the raw export.
# onnxruntime fuses LayerNorm / SkipLayerNorm / Gelu again at load time where the export left them unfused.
GRAPHS = {
    "fused": {},
    "fused-attention-only": {"enable_skip_layer_norm": False, "enable_bias_skip_layer_norm": False,
                             "enable_bias_gelu": False, "enable_embed_layer_norm": False},
    "fused-no-attention": {"enable_attention": False},
    "unfused": None,
}


def fuse(raw: Path, out: Path, fusion: str | None, config, graph: str = "fused") -> dict[str, int]:
    """Write the fused fp32 graph to ``out``; return the non-zero fused-operator counts."""
    if fusion is None or GRAPHS[graph] is None:
        out.write_bytes(raw.read_bytes())
        return {}
    from onnxruntime.transformers.fusion_options import FusionOptions

    options = FusionOptions(fusion)
    for name, value in GRAPHS[graph].items():
        setattr(options, name, value)
    heads, hidden = _heads_and_hidden(config)
    model = optimize_model(str(raw), model_type=fusion, num_heads=heads, hidden_size=hidden,
                           optimization_options=options)
    model.save_model_to_file(str(out))
    return {k: int(v) for k, v in model.get_fused_operator_statistics().items() if v}


def int8_source(recipe: dict, raw: Path, fused: Path, fusion: str | None, config) -> Path:
    """The fp32 graph ``recipe["graph"]`` names, built next to ``raw`` when it is not one already at hand."""
    graph = recipe["graph"]
    if graph == "fused":
        return fused
    out = raw.with_name(f"{graph}.onnx")
    if not out.exists():
        fuse(raw, out, fusion, config, graph)
    return out


def quantize_int8(source: Path, out: Path, recipe: dict | None = None) -> dict:
    """Quantize the fp32 graph ``source`` (see int8_source) with ``recipe`` (default INT8_RECIPE)."""
    recipe = dict(recipe or recipe_named(DEFAULT_INT8))
    root = logging.getLogger()
    level = root.level
    # The quantizer logs "consider pre-processing" on the root logger on every call; that advice is for static
    # quantization of CNNs (shape inference for calibration) and does not apply to this dynamic recipe.
    root.setLevel(max(level, logging.ERROR))
    try:
        quantize_dynamic(
            str(source), str(out), weight_type=QuantType[recipe["weight_type"]], per_channel=recipe["per_channel"],
            reduce_range=recipe["reduce_range"], op_types_to_quantize=list(recipe["op_types"]),
            # The fused graph carries contrib ops without type info; without this the quantizer cannot infer types.
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
    finally:
        root.setLevel(level)
    return recipe


def int8_variant(rel_file: str, recipe: dict) -> dict:
    """The manifest's int8 entry for a file made with ``recipe`` (what the runtime needs to load it)."""
    entry = {"file": rel_file}
    if recipe.get("cpu_disabled_optimizers"):
        entry["cpu_disabled_optimizers"] = list(recipe["cpu_disabled_optimizers"])
    return entry


def to_fp16(fused: Path, out: Path) -> None:
    # Inputs (int64 ids) and outputs stay as they are, so the runtime feeds every precision the same way.
    model = OnnxModel(onnx.load(str(fused)))
    model.convert_float_to_float16(keep_io_types=True)
    model.save_model_to_file(str(out))
