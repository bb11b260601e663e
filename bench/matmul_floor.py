"""The physical limit: this CPU's int8 and fp32 matrix-multiply rate through onnxruntime, the SST-2 batch-32
workload's multiply-accumulates from the model's shape, the floor time they imply, and onnxpipe's ratio to it.

    .venv-bench/bin/python bench/matmul_floor.py [--model models/minilm-sst2] [--threads N] [--quick]

The rate is measured on one-node graphs (MatMulInteger uint8 x int8 -> int32, MatMul fp32) at the shapes the
encoder's projections have, with the session settings onnxpipe uses; the best shape counts as the peak. The
floor charges the linear layers at the int8 rate and the attention products (QK^T, AV, computed in fp32 by
QAttention) at the fp32 rate: what the arithmetic alone would cost if nothing else took any time.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from provenance import provenance, rel  # noqa: E402
from workloads import read_sst2  # noqa: E402

# ---- configuration (defaults of the arguments) -----------------------------------------------------------
ROWS = (256, 768, 2048)  # activation rows (tokens in a batch): small, SST-2 batch-32-sized, large
REPEATS = 30  # session.run calls per timed round
ROUNDS = 7  # best of rounds
PASSES = 3  # onnxpipe passes over SST-2 dev at batch 32
QUICK = {"rounds": 2, "passes": 1}
# ----------------------------------------------------------------------------------------------------------


def matmul_graph(m: int, k: int, n: int, int8: bool) -> bytes:
    rng = np.random.default_rng(0)
    if int8:
        b = numpy_helper.from_array(rng.integers(-127, 128, size=(k, n), dtype=np.int8), "B")
        a_zp = numpy_helper.from_array(np.array(128, dtype=np.uint8), "a_zp")
        node = helper.make_node("MatMulInteger", ["A", "B", "a_zp"], ["Y"])
        inputs = [helper.make_tensor_value_info("A", TensorProto.UINT8, [m, k])]
        out = helper.make_tensor_value_info("Y", TensorProto.INT32, [m, n])
        inits = [b, a_zp]
    else:
        b = numpy_helper.from_array(rng.standard_normal((k, n)).astype(np.float32), "B")
        node = helper.make_node("MatMul", ["A", "B"], ["Y"])
        inputs = [helper.make_tensor_value_info("A", TensorProto.FLOAT, [m, k])]
        out = helper.make_tensor_value_info("Y", TensorProto.FLOAT, [m, n])
        inits = [b]
    graph = helper.make_graph([node], "mm", inputs, [out], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def session(model_bytes: bytes, threads: int) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(model_bytes, sess_options=opts, providers=["CPUExecutionProvider"])


def gmacs(m: int, k: int, n: int, int8: bool, threads: int, rounds: int, repeats: int) -> float:
    """Multiply-accumulates per second (x1e9), best of rounds: a floor should be optimistic, and on a shared
    machine the best round is the one least disturbed."""
    sess = session(matmul_graph(m, k, n, int8), threads)
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, size=(m, k), dtype=np.uint8) if int8 else rng.standard_normal((m, k)).astype(np.float32)
    for _ in range(5):
        sess.run(None, {"A": a})
    rates = []
    for _ in range(rounds):
        t = time.perf_counter()
        for _ in range(repeats):
            sess.run(None, {"A": a})
        rates.append(m * k * n * repeats / (time.perf_counter() - t) / 1e9)
    return float(np.max(rates))


def workload_macs(model: Path, batch: int = 32) -> dict:
    """MACs of SST-2 dev in file-order batches of ``batch``, each padded to its longest sentence (as every
    engine runs the sst2-b32 workload), split into linear-layer and attention-product MACs."""
    from tokenizers import Tokenizer

    cfg = json.loads((model / "config.json").read_text())
    h, inter, layers = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
    tok = Tokenizer.from_file(str(model / "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(512)
    texts, _ = read_sst2()
    lengths = [len(e.ids) for e in tok.encode_batch(texts)]
    linear = attention = tokens = unpadded = 0
    for i in range(0, len(lengths), batch):
        chunk = lengths[i : i + batch]
        t = max(chunk)
        rows = len(chunk)
        tokens += rows * t
        unpadded += sum(chunk)
        linear += layers * rows * t * (4 * h * h + 2 * h * inter)  # QKV + output projection + FFN
        attention += layers * rows * 2 * t * t * h  # QK^T and AV over all heads
    linear += len(lengths) * (h * h + h * cfg.get("num_labels", len(cfg.get("id2label", {0: 0, 1: 1}))))  # pooler, head
    return {
        "sentences": len(lengths),
        "padded_tokens": tokens,
        "real_tokens": unpadded,
        "linear_macs": linear,
        "attention_macs": attention,
        "hidden": h,
        "intermediate": inter,
        "layers": layers,
    }


def onnxpipe_seconds(model: Path, passes: int, batch: int = 32) -> float:
    import onnxpipe

    texts, _ = read_sst2()
    pipe = onnxpipe.pipeline("text-classification", model=str(model), precision="int8", batch_size=batch, verify=False)
    requests = [texts[i : i + batch] for i in range(0, len(texts), batch)]
    for r in requests[:3]:
        pipe(r)
    times = []
    for _ in range(passes):
        t = time.perf_counter()
        for r in requests:
            pipe(r)
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--model",
        type=Path,
        default=HERE.parent / "models" / "minilm-sst2",
        help="int8 model folder (default models/minilm-sst2)",
    )
    ap.add_argument("--threads", type=int, default=None, help="default: the usable cores")
    ap.add_argument("--rounds", type=int, help=f"timed rounds per shape, best counts (default {ROUNDS})")
    ap.add_argument("--repeats", type=int, default=REPEATS, help=f"runs per round (default {REPEATS})")
    ap.add_argument("--passes", type=int, help=f"onnxpipe passes over SST-2 dev, median (default {PASSES})")
    ap.add_argument("--quick", action="store_true", help=f"defaults {QUICK} instead: a smoke, not figures")
    ap.add_argument(
        "--out",
        type=Path,
        default=HERE / "results" / "matmul_floor.json",
        help="JSON out (default bench/results/matmul_floor.json)",
    )
    argv = sys.argv[1:] if argv is None else list(argv)
    a = ap.parse_args(argv)
    rounds = a.rounds or (QUICK["rounds"] if a.quick else ROUNDS)
    passes = a.passes or (QUICK["passes"] if a.quick else PASSES)
    prov = provenance(__file__, argv)
    threads = a.threads or prov["machine"]["cores"]
    w = workload_macs(a.model)
    h, inter = w["hidden"], w["intermediate"]
    shapes = [(m, k, n) for m in ROWS for k, n in ((h, h), (h, inter), (inter, h))]
    rates = {"int8": {}, "fp32": {}}
    for m, k, n in shapes:
        for kind in rates:
            rates[kind][f"{m}x{k}x{n}"] = round(gmacs(m, k, n, kind == "int8", threads, rounds, a.repeats), 2)
    peak = {kind: max(r.values()) for kind, r in rates.items()}
    floor_s = w["linear_macs"] / (peak["int8"] * 1e9) + w["attention_macs"] / (peak["fp32"] * 1e9)
    measured = onnxpipe_seconds(a.model, passes)
    result = {
        "provenance": prov,
        "machine": prov["machine"],
        "threads": threads,
        "model": rel(a.model),
        "rounds": rounds,
        "repeats": a.repeats,
        "passes": passes,
        "workload": "sst2-b32",
        "macs": w,
        "gmacs_per_s": rates,
        "peak_gmacs_per_s": peak,
        "floor_s": round(floor_s, 4),
        "floor_sentences_per_s": round(w["sentences"] / floor_s, 1),
        "onnxpipe_int8_s": round(measured, 4),
        "onnxpipe_sentences_per_s": round(w["sentences"] / measured, 1),
        "onnxpipe_over_floor": round(measured / floor_s, 2),
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    print(f"int8 peak {peak['int8']:.1f} GMAC/s, fp32 peak {peak['fp32']:.1f} GMAC/s ({threads} threads)")
    print(
        f"SST-2 dev at batch 32: {w['linear_macs'] / 1e9:.1f} G linear MACs + {w['attention_macs'] / 1e9:.2f} G "
        f"attention MACs over {w['padded_tokens']} padded tokens ({w['real_tokens']} real)"
    )
    print(
        f"floor {floor_s:.3f} s ({result['floor_sentences_per_s']} sentences/s); onnxpipe int8 {measured:.3f} s "
        f"-> {result['onnxpipe_over_floor']}x the floor"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
