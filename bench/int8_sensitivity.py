"""How far do tiny float differences move a dynamic int8 file's answers? A native stand-in for other CPUs.

    python bench/int8_sensitivity.py [--checkpoint ../shared/checkpoints/minilm-sst2] [--sentences 400]
        [--seeds 3] [--stages [--stage-sentences 100]] [--out bench/results/int8_sensitivity.json]

Dynamic int8 quantizes each activation tensor with a scale and rounding that the float kernels before it decide,
so two CPUs whose GELU, LayerNorm or softmax differ in the last bits now and then round an element the other way,
and the difference grows through every later quantized stage. Emulating ARM64 takes minutes per hundred
sentences; this measures the same effect natively, per int8 candidate, in seconds:

- ``release``: this CPU with the ARM64 side's onnxruntime (tests/emulated, ``native-pinned``) against the
  installed one: other float kernels, as another CPU has;
- ``noise``: every DynamicQuantizeLinear input multiplied by 1 +- ``--rel`` (a fixed random sign per channel,
  ``--seeds`` draws), pooled;
- ``--stages``: the default recipe with one stage perturbed at a time: which quantized activations the
  answers are most sensitive to.

Candidates: the default recipe, the same with some MatMuls left in float (the head, layer 0's first stages,
layer 0), and two other graphs. Each row has SST-2 dev accuracy (872 sentences) and agreement with fp32, and
label flips, p99, max and mean |change of P(positive)| on the first ``--sentences``. One sentence per run, one
thread, as the emulated tier runs. Writes one JSON file.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SST2_DEV = ROOT.parent / "shared" / "data" / "sst2" / "dev.tsv"
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
L0 = "/bert/encoder/layer.0/"
# name -> (graph, MatMul nodes left in float). quantize_dynamic names a Gemm's MatMul "<Gemm>_MatMul".
CANDIDATES = {
    "default": ("fused-attention-only", []),
    "head-fp32": ("fused-attention-only", ["/bert/pooler/dense/Gemm_MatMul", "/classifier/Gemm_MatMul"]),
    "layer0-attention-fp32": ("fused-attention-only", ["Attention_0"]),
    "layer0-first3-fp32": (
        "fused-attention-only",
        ["Attention_0", L0 + "attention/output/dense/MatMul", L0 + "intermediate/dense/MatMul"],
    ),
    "layer0-fp32": (
        "fused-attention-only",
        [
            "Attention_0",
            *(L0 + m + "/MatMul" for m in ("attention/output/dense", "intermediate/dense", "output/dense")),
        ],
    ),
    "fused-graph": ("fused", []),
    "unfused-graph": ("unfused", []),
}


def side(model: str, feeds: str, out: str, n: int) -> None:
    """Run ``model`` on the first ``n`` sentences of ``feeds`` (npz), one at a time on one thread; save logits.
    Imports only numpy and onnxruntime, so it runs under another onnxruntime release."""
    import numpy as np
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sess = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    with np.load(feeds) as f:
        rows = [sess.run(["logits"], {k: f[f"{k}.{i}"] for k in names})[0][0] for i in range(n)]
    np.save(out, np.array(rows, dtype=np.float64))
    Path(out).with_suffix(".txt").write_text(ort.__version__, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--side"]:
        side(argv[1], argv[2], argv[3], int(argv[4]))
        return 0
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default=str(ROOT.parent / "shared" / "checkpoints" / "minilm-sst2"))
    ap.add_argument("--sentences", type=int, default=400)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--rel", type=float, default=1e-7)
    ap.add_argument("--stages", action="store_true", help="also perturb the default's stages one at a time")
    ap.add_argument("--stage-sentences", type=int, default=100, help="sentences per stage (26 stages x 2 draws)")
    ap.add_argument("--candidates", default=",".join(CANDIDATES))
    ap.add_argument("--out", type=Path, default=HERE / "results" / "int8_sensitivity.json")
    a = ap.parse_args(argv)
    names = [c for c in a.candidates.split(",") if c]
    if unknown := sorted(set(names) - set(CANDIDATES)):
        ap.error(f"--candidates {unknown}: choose from {sorted(CANDIDATES)}")

    import numpy as np

    from provenance import provenance

    sys.path.insert(0, str(ROOT / "tests" / "emulated"))
    import cpus

    report: dict = {"provenance": provenance(__file__, argv), "checkpoint": a.checkpoint, "data": "SST-2 dev"}

    def write() -> None:  # after every candidate: a long run stopped midway keeps what it measured
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n", encoding="utf-8")

    with tempfile.TemporaryDirectory(prefix="onnxpipe-sensitivity-") as tmp_name:
        tmp = Path(tmp_name)
        labels, feeds = _feeds(a.checkpoint, tmp)
        graphs = _graphs(a.checkpoint, tmp, {CANDIDATES[c][0] for c in names})

        def logits(model: Path, n: int = len(labels), cpu: str = "native") -> np.ndarray:
            out = tmp / f"{model.stem}.{cpu}.npy"
            cpus.run_script(cpu, [__file__, "--side", str(model), str(feeds), str(out), str(n)])
            report.setdefault("onnxruntime", {})[cpu] = out.with_suffix(".txt").read_text(encoding="utf-8")
            return np.load(out)

        n = min(a.sentences, len(labels))
        fp32 = logits(graphs["fused-attention-only"])
        report["fp32_accuracy"] = float((fp32.argmax(1) == labels).mean())
        report["rel"], report["seeds"], report["n"] = a.rel, a.seeds, n
        report["candidates"] = {}
        for name in names:
            graph, exclude = CANDIDATES[name]
            start = time.perf_counter()
            model = _quantize(graphs[graph], tmp / f"{name}.onnx", exclude)
            base = logits(model)
            noisy = [logits(_perturbed(model, tmp / f"{name}.noise{s}.onnx", a.rel, s), n) for s in range(a.seeds)]
            report["candidates"][name] = {
                "graph": graph,
                "fp32_matmuls": exclude,
                "accuracy": float((base.argmax(1) == labels).mean()),
                "vs_fp32": _compare(fp32, base),
                "release": _compare(base[:n], logits(model, n, "native-pinned")),
                "noise": _compare(np.concatenate([base[:n]] * a.seeds), np.concatenate(noisy)),
                "seconds": round(time.perf_counter() - start, 1),
            }
            print(name, json.dumps(report["candidates"][name]), flush=True)
            write()
        if a.stages:
            model = (
                tmp / "default.onnx"
                if "default" in names
                else _quantize(graphs[CANDIDATES["default"][0]], tmp / "default.onnx", [])
            )
            ns = min(a.stage_sentences, n)
            base = logits(model, ns)
            report["stages"], report["stage_sentences"] = [], ns
            for i, stage in enumerate(_stage_inputs(model)):
                pert = [
                    logits(_perturbed(model, tmp / f"stage{i}.{s}.onnx", a.rel, s, only=stage), ns) for s in range(2)
                ]
                row = {"stage": i, "input": stage, **_compare(np.concatenate([base] * 2), np.concatenate(pert))}
                report["stages"].append(row)
                print(json.dumps(row), flush=True)
    write()
    return 0


def _compare(ref, other) -> dict:
    import numpy as np

    def p(x):
        e = np.exp(x - x.max(1, keepdims=True))
        return (e / e.sum(1, keepdims=True))[:, -1]

    d = np.abs(p(ref) - p(other))
    return {
        "n": len(ref),
        "flips": int((ref.argmax(1) != other.argmax(1)).sum()),
        "p99_abs_dp": float(np.percentile(d, 99)),
        "max_abs_dp": float(d.max()),
        "mean_abs_dp": float(d.mean()),
    }


def _feeds(checkpoint: str, tmp: Path):
    import numpy as np
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(checkpoint)
    with open(SST2_DEV, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    arrays = {}
    for i, r in enumerate(rows):
        enc = tok([r["content"]], truncation=True, return_tensors="np")
        arrays.update({f"{k}.{i}": enc[k].astype(np.int64) for k in INPUTS})
    np.savez(tmp / "feeds.npz", **arrays)
    return np.array([int(r["label"]) for r in rows]), tmp / "feeds.npz"


def _graphs(checkpoint: str, tmp: Path, wanted: set[str]) -> dict[str, Path]:
    """The export's fp32 graphs (onnxpipe_export's own steps), by the recipes' graph names."""
    from onnxpipe_export._load import load_checkpoint
    from onnxpipe_export._onnx import export_fp32
    from onnxpipe_export._optimize import fuse

    ckpt = load_checkpoint(checkpoint, "text-classification", False, False, None)
    raw = export_fp32(ckpt.model, "text-classification", tmp / "raw")
    out = {}
    for graph in wanted | {"fused-attention-only"}:
        out[graph] = tmp / f"fp32-{graph}.onnx"
        fuse(raw, out[graph], ckpt.settings["fusion"], ckpt.config, graph)
    return out


def _quantize(source: Path, out: Path, exclude: list[str]) -> Path:
    """The default recipe's quantizer call (onnxpipe_export._optimize), with ``exclude`` left in float."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from onnxpipe_export._int8_recipes import DEFAULT_INT8, recipe_named
    from onnxpipe_export._optimize import residual_add_as_sum

    recipe = recipe_named(DEFAULT_INT8)
    ops = recipe["op_types"] if "fused" in source.stem else ["Gather", "MatMul"]
    quantize_dynamic(
        str(source),
        str(out),
        weight_type=QuantType[recipe["weight_type"]],
        per_channel=recipe["per_channel"],
        reduce_range=recipe["reduce_range"],
        op_types_to_quantize=list(ops),
        nodes_to_exclude=list(exclude),
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )
    if recipe["residual_add_as_sum"]:
        residual_add_as_sum(out)
    return out


def _stage_inputs(model: Path) -> list[str]:
    import onnx

    return [n.input[0] for n in onnx.load(str(model)).graph.node if n.op_type == "DynamicQuantizeLinear"]


def _perturbed(model: Path, out: Path, rel: float, seed: int, only: str | None = None) -> Path:
    """``model`` with each DynamicQuantizeLinear input (or ``only`` that one) times 1 +- ``rel`` per channel."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    m = onnx.load(str(model))
    inits = {i.name: i for i in m.graph.initializer}
    readers: dict[str, list] = {}
    for node in m.graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    rng = np.random.default_rng(seed)
    nodes = []
    for node in m.graph.node:
        if node.op_type == "DynamicQuantizeLinear" and only in (None, node.input[0]):
            # the channel count is the K of the integer matmul weights that read the quantized tensor
            k = next(inits[r.input[1]].dims[0] for r in readers[node.output[0]] if r.input[1] in inits)
            factor = f"{node.name}_noise"
            m.graph.initializer.append(
                numpy_helper.from_array((1 + rel * rng.choice([-1.0, 1.0], size=k)).astype(np.float32), factor)
            )
            src = node.input[0]
            nodes.append(helper.make_node("Mul", [src, factor], [f"{src}_noisy"], name=f"{factor}_mul"))
            node.input[0] = f"{src}_noisy"
        nodes.append(node)
    del m.graph.node[:]
    m.graph.node.extend(nodes)
    onnx.save(m, str(out))
    return out


if __name__ == "__main__":
    sys.exit(main())
