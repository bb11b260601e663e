"""Where prepare.py puts what the engines load: the model folder's variant files and the name of Optimum's
int8 config for this CPU. engines.py and prepare.py both read it here, so neither imports the other."""

from __future__ import annotations

VARIANT_FILES = {"int8": "onnx/model_quantized.onnx", "fp32": "onnx/model.onnx", "fp16": "onnx/model_fp16.onnx"}


def optimum_int8_config() -> str:
    """Optimum's own quantization config for this CPU: avx512_vnni (s8 weights) where the CPU has VNNI, else avx2
    (u8 weights): on AVX2-only CPUs onnxruntime's u8 x s8 kernel saturates (docs/performance.md), and the
    avx512_vnni file then gave wrong labels on the tiny test model, which is no fair engine (b)."""
    from onnxpipe._bench import machine_info

    return "avx512_vnni" if {"avx512_vnni", "avx_vnni"} & set(machine_info()["simd_flags"]) else "avx2"
