"""Integer reference for an int8 file's matmuls: onnxruntime's int32 products against numpy's, bit for bit.

AVX2-only x86 sums u8 x s8 product pairs in saturating 16-bit lanes (``vpmaddubsw``); CPUs with an int8 dot
product do not. So an int8 file's integer matmuls can compute other integers on some CPUs than numpy's exact
int32 matmul. This module builds, for every integer matmul weight in a file, a one-node ``MatMulInteger`` graph
holding the file's own weight initializer and zero point, with adversarial u8 activations (all 255, all 0,
alternating), and compares onnxruntime's int32 result with numpy's.

``MatMulInteger`` is the op the dynamic recipes write for each weight MatMul; a ``QAttention`` or
``DynamicQuantizeMatMul`` weight (fused graphs, load-time fusions) goes through the same u8 x s8 GEMM kernel in
onnxruntime's MLAS, and its float output cannot be compared exactly, so its weight is checked as a
``MatMulInteger`` too.

Two halves, so the emulated-CPU tier can run the second under QEMU: ``write_cases`` (needs onnx) writes the
graphs and inputs to a folder; ``run_cases`` (onnxruntime and numpy only) runs and compares them.
``unsafe_weights`` is the static check: every integer matmul weight must be one no CPU can saturate on.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

SAFE_S8 = (-64, 64)  # 2 * 255 * 64 = 32640 <= 32767: no u8 x s8 pair sum leaves a signed 16-bit lane
ACTIVATION_ZERO_POINTS = (0, 128)


def integer_weights(path: str | Path) -> list[tuple[str, str, np.ndarray, np.ndarray | None]]:
    """``(op_type, weight name, weight, zero point)`` of every integer matmul with a constant weight in the
    file at ``path``, as the export's saturation gate finds them (QDQ: each int8 DequantizeLinear initializer
    that feeds a MatMul or Gemm). The range rule below stays this module's own, an independent check of it."""
    import onnx

    from onnxpipe_export._int8_saturation import integer_matmul_weights

    found, seen = [], set()
    for e in integer_matmul_weights(onnx.load(str(path))):
        if e["weight"] is not None and e["weight_name"] not in seen:
            seen.add(e["weight_name"])
            found.append((e["op_type"], e["weight_name"], e["weight"], e["zero_point"]))
    return found


def unsafe_weights(path: str | Path) -> list[str]:
    """Integer matmul weights of the file that some CPU can saturate on: s8 outside [-64, 64] (u8 weights
    are multiplied as u8 x u8, widened to 16 bits first, and cannot)."""
    bad = []
    for op, name, w, _ in integer_weights(path):
        if w.dtype == np.int8 and (int(w.min()) < SAFE_S8[0] or int(w.max()) > SAFE_S8[1]):
            bad.append(f"{op} {name}: s8 weights in [{int(w.min())}, {int(w.max())}]")
        elif w.dtype not in (np.int8, np.uint8):
            bad.append(f"{op} {name}: {w.dtype} weights, a kernel this check does not know")
    return bad


def adversarial_rows(k: int) -> np.ndarray:
    """u8 activations that drive the pair sums to their extremes: all 255, all 0, 255/0 alternating both ways."""
    alternating = np.resize(np.array([255, 0], dtype=np.uint8), k)
    return np.stack([np.full(k, 255, np.uint8), np.zeros(k, np.uint8), alternating, alternating[::-1].copy()])


def write_cases(path: str | Path, folder: str | Path) -> int:
    """Write one ``case_<i>.onnx`` (MatMulInteger on the file's weight and zero point) and ``case_<i>.npz``
    (activations, activation zero points, and the weight for numpy) per integer matmul weight of ``path``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cases = 0
    for i, (_, name, w, zp) in enumerate(integer_weights(path)):
        if w.ndim != 2:
            continue
        k, n = w.shape
        b_zp = np.zeros(n, w.dtype) if zp is None or zp.size not in (1, n) else np.broadcast_to(zp, (n,)).copy()
        inits = [numpy_helper.from_array(w, "B"), numpy_helper.from_array(b_zp.astype(w.dtype), "b_zp")]
        node = helper.make_node("MatMulInteger", ["A", "B", "a_zp", "b_zp"], ["Y"], name=f"reference_{name}")
        graph = helper.make_graph(
            [node],
            f"int8_reference_{i}",
            [
                helper.make_tensor_value_info("A", TensorProto.UINT8, [None, k]),
                helper.make_tensor_value_info("a_zp", TensorProto.UINT8, []),
            ],
            [helper.make_tensor_value_info("Y", TensorProto.INT32, [None, n])],
            inits,
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
        model.ir_version = 8
        onnx.save(model, str(folder / f"case_{i}.onnx"))
        np.savez(folder / f"case_{i}.npz", a=adversarial_rows(k), b=w, b_zp=b_zp, name=np.array(name))
        cases += 1
    return cases


def run_cases(folder: str | Path) -> list[str]:
    """Run every case in ``folder`` (write_cases) with onnxruntime on this CPU; return the cases whose int32
    result differs from numpy's exact matmul, with the first differing value."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    mismatches = []
    for graph in sorted(Path(folder).glob("case_*.onnx")):
        data = np.load(graph.with_suffix(".npz"))
        a, b, b_zp = data["a"], data["b"], data["b_zp"]
        session = ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
        for a_zp in ACTIVATION_ZERO_POINTS:
            got = session.run(["Y"], {"A": a, "a_zp": np.array(a_zp, np.uint8)})[0]
            want = (a.astype(np.int32) - a_zp) @ (b.astype(np.int32) - b_zp.astype(np.int32))
            if not np.array_equal(got, want):
                r, c = np.argwhere(got != want)[0]
                mismatches.append(
                    f"{data['name']} (a_zp {a_zp}, activation row {r}, column {c}): onnxruntime "
                    f"{int(got[r, c])}, numpy {int(want[r, c])}"
                )
    return mismatches
