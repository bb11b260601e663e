"""Make the int8 and fp16 variants of the fused fp32 graph, and their typed manifest entries.

The file names are the ones transformers.js and Optimum read (docs/model-folder.md). A variant's entry says how
it was made (recipe, fusion counts); validation figures are added later by _validate.validate_variants.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from onnxpipe._for_export import Variant

VARIANT_FILES = {
    "fp32": "onnx/model.onnx",
    "int8": "onnx/model_quantized.onnx",
    "fp16": "onnx/model_fp16.onnx",
    # 8-bit weights with float arithmetic only: the same numbers on every CPU (_int8_recipes.EXACT_RECIPE)
    "int8-exact": "onnx/model_int8_exact.onnx",
}
FP16_NOTE = "fp16 weights, fp32 inputs/outputs; meant for CUDA"


def fp32_variant(fused_ops: dict[str, int]) -> Variant:
    return Variant(VARIANT_FILES["fp32"], fused_operators=fused_ops)


def int8_variant(
    recipe: dict[str, Any],
    fused_ops: dict[str, int] | None = None,
    *,
    file: str = VARIANT_FILES["int8"],
    recipe_search: dict[str, Any] | None = None,
) -> Variant:
    """The int8 entry of ``file``, quantized with ``recipe``. Fusion counts only when the recipe quantized the
    fused graph: an unfused graph is fused by onnxruntime at load, not here."""
    # No load-time switch (cpu_disabled_optimizers): the recipe bakes it into the graph (residual_add_as_sum),
    # so every consumer computes the same; the runtime still honours the key in folders exported before.
    return Variant(
        file,
        fused_operators=fused_ops if recipe.get("graph", "fused") == "fused" else None,
        recipe=recipe,
        recipe_search=recipe_search,
    )


def make_variant(
    precision: str,
    folder: Path,
    fused_ops: dict[str, int],
    recipe: dict[str, Any] | None,
    source_for: Callable[[dict[str, Any]], Path],
    calibration: Any = None,
) -> Variant | None:
    """Write ``precision``'s file from ``folder``'s fused fp32 graph and return its entry.

    int8 with ``recipe`` None (``--int8-recipe search``) returns None: the search quantizes its candidates once
    the folder can be loaded. ``source_for(recipe)`` is the fp32 graph a recipe quantizes; ``calibration``
    (_calibrate.Calibration) the sentences a static recipe calibrates on.
    """
    from ._optimize import (  # onnx and the quantizer load only when an export runs
        quantize_int8,
        to_fp16,
    )

    if precision == "int8":
        if recipe is None:
            return None
        made = quantize_int8(source_for(recipe), folder / VARIANT_FILES["int8"], recipe, calibration)
        return int8_variant(made, fused_ops)
    if precision == "int8-exact":
        from ._int8_recipes import EXACT_RECIPE

        made = quantize_int8(source_for(EXACT_RECIPE), folder / VARIANT_FILES["int8-exact"], EXACT_RECIPE)
        return Variant(VARIANT_FILES["int8-exact"], recipe=made, cpu_exact=True)
    if precision == "fp16":
        to_fp16(folder / VARIANT_FILES["fp32"], folder / VARIANT_FILES["fp16"])
        return Variant(VARIANT_FILES["fp16"], fused_operators=fused_ops, note=FP16_NOTE)
    raise ValueError(f"no variant {precision!r} to make; choose from {sorted(VARIANT_FILES)}")
