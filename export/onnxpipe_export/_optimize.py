"""Graph fusion, INT8 quantization and fp16 conversion of the exported fp32 graph.

INT8 is dynamic (weights quantized offline, activations per call) and meant for CPU. The recipe is
per-channel QInt8 weights on the fused graph: on minilm-sst2 per-tensor quantization loses 1.6-1.8 points of
SST-2 dev accuracy, per-channel about 0.1 (issue 3's measurements; the benchmark re-checks them).
"""

from __future__ import annotations

from pathlib import Path

import onnx
from onnxruntime.quantization import QuantType, quantize_dynamic
from onnxruntime.transformers.onnx_model import OnnxModel
from onnxruntime.transformers.optimizer import optimize_model

INT8_RECIPE = {
    "method": "dynamic",
    "weight_type": "QInt8",
    "per_channel": True,
    "reduce_range": False,  # VNNI / AVX-512 CPUs multiply full-range int8; reduce_range is for pre-VNNI x86
    "graph": "fused",
}


def _heads_and_hidden(config) -> tuple[int, int]:
    heads = getattr(config, "num_attention_heads", None) or getattr(config, "n_heads", 0)
    hidden = getattr(config, "hidden_size", None) or getattr(config, "dim", 0)
    return int(heads or 0), int(hidden or 0)


def fuse(raw: Path, out: Path, fusion: str | None, config) -> dict[str, int]:
    """Write the fused fp32 graph to ``out``; return the non-zero fused-operator counts."""
    if fusion is None:
        out.write_bytes(raw.read_bytes())
        return {}
    heads, hidden = _heads_and_hidden(config)
    model = optimize_model(str(raw), model_type=fusion, num_heads=heads, hidden_size=hidden)
    model.save_model_to_file(str(out))
    return {k: int(v) for k, v in model.get_fused_operator_statistics().items() if v}


def quantize_int8(fused: Path, out: Path) -> dict:
    quantize_dynamic(
        str(fused), str(out), weight_type=QuantType.QInt8, per_channel=INT8_RECIPE["per_channel"],
        reduce_range=INT8_RECIPE["reduce_range"],
        # The fused graph carries contrib ops without type info; without this the quantizer cannot infer types.
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )
    return dict(INT8_RECIPE)


def to_fp16(fused: Path, out: Path) -> None:
    # Inputs (int64 ids) and outputs stay as they are, so the runtime feeds every precision the same way.
    model = OnnxModel(onnx.load(str(fused)))
    model.convert_float_to_float16(keep_io_types=True)
    model.save_model_to_file(str(out))
