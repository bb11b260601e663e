"""Int8 files that compute the same integers on every CPU.

Two checks per int8 file (tests/_int8_reference.py): a static one, that every integer matmul weight is one no
CPU can saturate on (AVX2-only x86 sums u8 x s8 pairs in saturating 16-bit lanes: s8 weights must stay within
[-64, 64]); and a run on the CPU at hand, that onnxruntime's int32 products of the file's own weights with
adversarial u8 activations equal numpy's exactly. On a VNNI or ARM dot-product CPU the second passes even for
full-range weights; on an AVX2-only CPU (the emulated tier runs it under qemu -cpu Haswell) it fails for them:
the full-range file shipped before measured 76 of 76 cases wrong there, e.g. -21041 where numpy gives -42075.

The export's own gate (onnxpipe_export.int8_saturation, which `--int8-recipe search` records per candidate) is
checked on hand-made graphs of each integer matmul kind.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from _int8_reference import run_cases, unsafe_weights, write_cases

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "models" / "minilm-sst2" / "onnx" / "model_quantized.onnx"

pytest.importorskip("onnx", reason="building the reference graphs needs onnx (the export extra)")


def test_shipped_int8_weights_cannot_saturate_on_any_cpu():
    assert unsafe_weights(SHIPPED) == []


def test_shipped_int8_matmuls_equal_numpy_int32_on_this_cpu(tmp_path):
    assert write_cases(SHIPPED, tmp_path) > 0
    assert run_cases(tmp_path) == []


@pytest.mark.torch
def test_tiny_default_int8_export_cannot_saturate_and_matches_numpy(tiny_export, tmp_path):
    # the default recipe for every CPU: tiny random weights fill the whole int8 range, the worst case
    model = tiny_export("bert", "text-classification", "int8,fp32") / "onnx" / "model_quantized.onnx"
    assert unsafe_weights(model) == []
    assert write_cases(model, tmp_path) > 0
    assert run_cases(tmp_path) == []


# -- the export's gate, on one-node graphs ---------------------------------------------------------------------
def _graph(path: Path, kind: str, weight: np.ndarray) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    k, n = weight.shape[0], weight.shape[-1]
    a = helper.make_tensor_value_info("A", TensorProto.UINT8, [1, k])
    inits = [numpy_helper.from_array(weight, "W")]
    opsets = [helper.make_opsetid("", 13)]
    if kind == "MatMulInteger":
        nodes = [helper.make_node("MatMulInteger", ["A", "W"], ["Y"])]
        y = helper.make_tensor_value_info("Y", TensorProto.INT32, [1, n])
    elif kind == "QDQ":
        a = helper.make_tensor_value_info("A", TensorProto.FLOAT, [1, k])
        inits.append(numpy_helper.from_array(np.array(0.1, np.float32), "s"))
        nodes = [
            helper.make_node("DequantizeLinear", ["W", "s"], ["Wf"]),
            helper.make_node("MatMul", ["A", "Wf"], ["Y"]),
        ]
        y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, n])
    else:  # MatMulNBits: weight-only, no integer matmul weight to check
        a = helper.make_tensor_value_info("A", TensorProto.FLOAT, [1, k])
        nodes = [helper.make_node("MatMulNBits", ["A", "W"], ["Y"], domain="com.microsoft", K=k, N=n, bits=8)]
        y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, n])
        opsets.append(helper.make_opsetid("com.microsoft", 1))
    model = helper.make_model(helper.make_graph(nodes, "g", [a], [y], inits), opset_imports=opsets)
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize(
    "kind,weights,can_saturate",
    [
        ("MatMulInteger", np.array([[127, -3], [127, 5]], np.int8), True),  # full range: 2*255*127 > 32767
        ("MatMulInteger", np.array([[-65, 0], [0, 0]], np.int8), True),  # one step past the safe range
        ("MatMulInteger", np.array([[64, -64], [-64, 64]], np.int8), False),  # 7-bit: 2*255*64 = 32640
        ("MatMulInteger", np.array([[255, 0], [200, 1]], np.uint8), False),  # u8 weights: u8 x u8 kernels
        ("QDQ", np.array([[100, 0], [0, 0]], np.int8), True),
        ("QDQ", np.array([[60, -60], [0, 0]], np.int8), False),
        ("MatMulNBits", np.zeros((2, 1, 2), np.uint8), False),
    ],
)
def test_the_export_gate_reads_saturation_from_the_graph(tmp_path, kind, weights, can_saturate):
    from onnxpipe_export import int8_saturation

    path = _graph(tmp_path / "g.onnx", kind, weights)
    assert int8_saturation(path)["can_saturate"] is can_saturate
    if kind != "MatMulNBits":  # the test's own static check agrees with the export's
        assert bool(unsafe_weights(path)) is can_saturate


# -- the CPU-exact variant -------------------------------------------------------------------------------------
@pytest.mark.torch
def test_int8_exact_variant_has_only_float_arithmetic_and_loads_by_name(tiny_export):
    import onnx

    from onnxpipe import pipeline
    from onnxpipe._manifest import load_manifest
    from onnxpipe_export import int8_saturation

    out = tiny_export("bert", "text-classification", "int8-exact,fp32")
    variant = load_manifest(out).variants["int8-exact"]
    assert variant.cpu_exact is True and variant.file == "onnx/model_int8_exact.onnx"
    model = onnx.load(str(out / variant.file))
    nbits = [n for n in model.graph.node if n.op_type == "MatMulNBits"]
    levels = {a.i for n in nbits for a in n.attribute if a.name == "accuracy_level"}
    # weight-only 8-bit, activations never quantized: no integer matmul at all, only float kernels run
    assert nbits and levels == {1} and int8_saturation(out / variant.file)["integer_matmuls"] == 0
    texts = ["a gorgeous , witty , seductive movie .", "not bad", "the ending is the longest of them all"]
    exact = pipeline("text-classification", model=out, precision="int8-exact", top_k=None)
    fp32 = pipeline("text-classification", model=out, precision="fp32", top_k=None)
    for got, want in zip(exact(texts), fp32(texts)):  # 8-bit weights of a tiny random model: close to fp32
        assert {r["label"]: r["score"] for r in got} == pytest.approx({r["label"]: r["score"] for r in want}, abs=0.02)
    alone = [exact([t])[0] for t in texts]  # float arithmetic: a text's answer does not depend on its batch-mates
    batched = exact(texts)
    assert (
        np.abs(np.array([[r["score"] for r in a] for a in alone]) - [[r["score"] for r in b] for b in batched]).max()
        < 1e-6
    )
