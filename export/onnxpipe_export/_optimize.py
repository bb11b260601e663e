"""Graph fusion, INT8 quantization and fp16 conversion of the exported fp32 graph.

INT8 is meant for CPU: dynamic (weights quantized offline, activations per call), weight-only MatMulNBits
(_lowbit.py) or static QDQ (_calibrate.py). Recipes are plain data (INT8_CANDIDATES); `--int8-recipe search`
(_int8_search.py) measures them all on labelled data and this CPU. Per-channel weights matter most for dynamic:
on minilm-sst2 per-tensor quantization loses 1.6-1.8 points of SST-2 dev accuracy, per-channel about 0.1.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import onnx
from onnxruntime.transformers.onnx_model import OnnxModel
from onnxruntime.transformers.optimizer import optimize_model

from onnxpipe.errors import ExportError

from ._int8_recipes import (  # re-exported: `X as X` says so to mypy
    DEFAULT_INT8 as DEFAULT_INT8,
    INT8_CANDIDATES as INT8_CANDIDATES,
    INT8_RECIPE as INT8_RECIPE,
    needs_calibration as needs_calibration,
    recipe_named as recipe_named,
)


def _heads_and_hidden(config: Any) -> tuple[int, int]:
    heads = getattr(config, "num_attention_heads", None) or getattr(config, "n_heads", 0)
    hidden = getattr(config, "hidden_size", None) or getattr(config, "dim", 0)
    return int(heads or 0), int(hidden or 0)


# The fp32 graphs an INT8 recipe can start from: onnxruntime fusion options per graph, None for the raw export.
# onnxruntime fuses LayerNorm / SkipLayerNorm / Gelu again at load time where the export left them unfused.
GRAPHS = {
    "fused": {},
    "fused-attention-only": {
        "enable_skip_layer_norm": False,
        "enable_bias_skip_layer_norm": False,
        "enable_bias_gelu": False,
        "enable_embed_layer_norm": False,
    },
    "fused-no-attention": {"enable_attention": False},
    "unfused": None,
}


def fuse(raw: Path, out: Path, fusion: str | None, config: Any, graph: str = "fused") -> dict[str, int]:
    """Write the fused fp32 graph to ``out``; return the non-zero fused-operator counts."""
    switches = GRAPHS[graph]
    if fusion is None or switches is None:
        out.write_bytes(raw.read_bytes())
        return {}
    from onnxruntime.transformers.fusion_options import FusionOptions

    options = FusionOptions(fusion)
    for name, value in switches.items():
        setattr(options, name, value)
    heads, hidden = _heads_and_hidden(config)
    model = optimize_model(
        str(raw), model_type=fusion, num_heads=heads, hidden_size=hidden, optimization_options=options
    )
    model.save_model_to_file(str(out))
    return {k: int(v) for k, v in model.get_fused_operator_statistics().items() if v}


def int8_source(recipe: dict[str, Any], raw: Path, fused: Path, fusion: str | None, config: Any) -> Path:
    """The fp32 graph ``recipe["graph"]`` names, built next to ``raw`` when it is not one already at hand."""
    graph = recipe["graph"]
    if graph == "fused":
        return fused
    out = raw.with_name(f"{graph}.onnx")
    if not out.exists():
        fuse(raw, out, fusion, config, graph)
    return out


def quantize_int8(
    source: Path, out: Path, recipe: dict[str, Any] | None = None, calibration: Any = None
) -> dict[str, Any]:
    """Quantize the fp32 graph ``source`` (see int8_source) with ``recipe`` (default DEFAULT_INT8); return the
    recipe as the manifest records it. ``calibration`` (_calibrate.Calibration): static and fixed-scales
    recipes only."""
    recipe = dict(recipe or recipe_named(DEFAULT_INT8))
    if recipe.get("method") == "MatMulNBits":
        from ._lowbit import quantize_nbits

        made = quantize_nbits(source, out, recipe)
    elif recipe.get("method") == "static":
        from ._calibrate import quantize_static_int8

        made = quantize_static_int8(source, out, recipe, calibration)
    else:
        from ._lowbit import quantize_8bit

        made = quantize_8bit(source, out, recipe)
    if recipe.get("residual_add_as_sum"):
        residual_add_as_sum(out)
    if recipe.get("method") == "fixed-scales":  # after the Sum rewrite, which reads the bias Adds it fuses away
        from ._fixed_scales import fix_activation_scales

        if calibration is None:
            raise ExportError(f"int8 recipe {recipe.get('name', 'fixed-scales')!r} needs calibration sentences")
        made = fix_activation_scales(out, made, calibration)
    return made


def residual_add_as_sum(path: Path) -> int:
    """Write each residual Add that feeds a LayerNormalization as a two-input Sum; return how many.

    onnxruntime's load-time SkipLayerNormFusion (on by default) turns Add + LayerNormalization into its
    SkipLayerNormalization kernel, which on CPU is slower (27 % of int8 minilm-sst2's time against 8 %) and, in
    an int8 graph, computes other activations for the next dynamic quantization (scores up to 0.07 apart on
    SST-2 dev). The fusion matches Add only; Sum of two tensors is the same float addition, so every consumer
    (transformers.js, Optimum, fastembed, sentence-transformers, all with onnxruntime's default options)
    computes exactly what the runtime does, with no load-time switch in the manifest that only onnxpipe would
    apply.
    """
    model = onnx.load(str(path))
    nodes = model.graph.node
    producer = {o: n for n in nodes for o in n.output}
    uses: dict[str, int] = {}
    for n in nodes:
        for i in n.input:
            uses[i] = uses.get(i, 0) + 1
    constants = {i.name for i in model.graph.initializer}
    graph_outputs = {o.name for o in model.graph.output}
    count = 0
    for n in nodes:
        add = producer.get(n.input[0]) if n.op_type == "LayerNormalization" else None
        # only an Add of two activations read by the LayerNormalization alone: a bias Add (one constant input)
        # is left for the fusions that fold biases, and an Add whose sum is reused elsewhere is not a skip
        if (
            add is not None
            and add.op_type == "Add"
            and uses[add.output[0]] == 1
            and add.output[0] not in graph_outputs
            and not set(add.input) & constants
        ):
            add.op_type = "Sum"
            count += 1
    onnx.save(model, str(path))
    return count


def to_fp16(fused: Path, out: Path) -> None:
    # Inputs (int64 ids) and outputs stay as they are, so the runtime feeds every precision the same way.
    model = OnnxModel(onnx.load(str(fused)))
    model.convert_float_to_float16(keep_io_types=True)
    model.save_model_to_file(str(out))
