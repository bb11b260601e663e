"""Which int8 kernel goes wrong under QEMU's ``-cpu max`` ARM64? Not part of the test suite: the evidence behind
docs/performance.md, kept so it can be rerun (needs the export extra for onnx). From the repository root:

    PYTHONPATH=runtime python tests/emulated/int8_kernels_probe.py native arm64:neoverse-n1 arm64:max \
        arm64:max,sve=off arm64:max,sme=off

Part 1: 48 MatMulInteger products (u8 x s8 and u8 x u8, with and without a zero point, M 1-64, K and N up to
1536) against numpy's int32 product; MLAS's NEON / dot-product / i8mm kernels run these. Part 2:
DynamicQuantizeMatMul, the fused op the int8 models run, against numpy's float reference of the same arithmetic;
onnxruntime sends it to KleidiAI's SME kernels where the CPU reports SME. QEMU 7.2: part 1 exact everywhere; part 2
wrong under ``max`` only, right with ``sve=off`` or ``sme=off``.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
from onnx import TensorProto as T, helper, numpy_helper, save

sys.path.insert(0, str(Path(__file__).parent))
import cpus  # noqa: E402


def matmul_integer_cases(rng: np.random.Generator) -> tuple[list, dict, dict]:
    nodes, inputs, outputs, feeds, reference = [], [], [], {}, {}
    for m in (1, 4, 16, 64):
        for k, n in ((64, 64), (384, 384), (384, 1536)):
            for signed in (True, False):
                a = rng.integers(0, 256, (m, k)).astype(np.uint8)
                b = rng.integers(-128, 128, (k, n)).astype(np.int8) if signed else rng.integers(0, 256, (k, n))
                b = b.astype(np.int8 if signed else np.uint8)
                for zp in (None, 128):
                    name = f"M{m}K{k}N{n}{'s8' if signed else 'u8'}{'zp' if zp else ''}"
                    inputs += [
                        helper.make_tensor_value_info("A" + name, T.UINT8, list(a.shape)),
                        helper.make_tensor_value_info("B" + name, T.INT8 if signed else T.UINT8, list(b.shape)),
                    ]
                    feeds["A" + name], feeds["B" + name] = a, b
                    ins = ["A" + name, "B" + name]
                    if zp is not None:
                        inputs.append(helper.make_tensor_value_info("Z" + name, T.UINT8, []))
                        feeds["Z" + name] = np.array(zp, dtype=np.uint8)
                        ins.append("Z" + name)
                    nodes.append(helper.make_node("MatMulInteger", ins, ["Y" + name]))
                    outputs.append(helper.make_tensor_value_info("Y" + name, T.INT32, None))
                    reference["Y" + name] = (a.astype(np.int64) - (zp or 0)) @ b.astype(np.int64)
    graph = helper.make_graph(nodes, "matmul_integer", inputs, outputs)
    return [graph, []], feeds, reference


def dynamic_quantize_matmul_case(rng: np.random.Generator) -> tuple[list, dict, dict]:
    k, n = 384, 384
    w = rng.integers(-127, 128, (k, n)).astype(np.int8)
    ws = rng.random(n).astype(np.float32) * 0.01 + 0.001
    graph = helper.make_graph(
        [helper.make_node("DynamicQuantizeMatMul", ["A", "W", "ws"], ["Y"], domain="com.microsoft")],
        "dqmm",
        [helper.make_tensor_value_info("A", T.FLOAT, ["M", k])],
        [helper.make_tensor_value_info("Y", T.FLOAT, None)],
        initializer=[numpy_helper.from_array(w, "W"), numpy_helper.from_array(ws, "ws")],
    )
    a = (rng.standard_normal((16, k)) * 2).astype(np.float32)
    lo, hi = min(0.0, float(a.min())), max(0.0, float(a.max()))
    scale = (hi - lo) / 255
    zp = np.clip(np.round(-lo / scale), 0, 255)
    q = np.clip(np.round(a / scale) + zp, 0, 255)  # u8 activations, as onnxruntime quantizes them
    return [graph, [helper.make_opsetid("com.microsoft", 1)]], {"A": a}, {"Y": ((q - zp) @ w) * scale * ws}


def main(specs: list[str]) -> None:
    rng = np.random.default_rng(1)
    with tempfile.TemporaryDirectory() as tmp:
        for label, (spec, feeds, reference) in {
            "MatMulInteger": matmul_integer_cases(rng),
            "DynamicQuantizeMatMul": dynamic_quantize_matmul_case(rng),
        }.items():
            graph, extra = spec
            model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13), *extra])
            model.ir_version = 8
            path = Path(tmp) / f"{label}.onnx"
            save(model, str(path))
            for s in specs:
                cpu, _, arm64_cpu = s.partition(":")
                got = cpus.run_graph(cpu, path, feeds, arm64_cpu or cpus.ARM64_CPU)
                if label == "MatMulInteger":
                    wrong = [k for k, v in reference.items() if not np.array_equal(got[k], v)]
                    print(f"{s} ({got['onnxruntime']}) {label}: {len(reference) - len(wrong)}/{len(reference)} exact")
                else:
                    err = np.abs(got["Y"] - reference["Y"]).max() / np.abs(reference["Y"]).max()
                    print(f"{s} ({got['onnxruntime']}) {label}: max error / max |output| = {err:.1e}")


if __name__ == "__main__":
    main(sys.argv[1:] or ["native", "arm64:neoverse-n1", "arm64:max", "arm64:max,sve=off", "arm64:max,sme=off"])
