"""Encoder-decoder generation at batch 1, greedy and beam 4: tokens/s and peak RSS, onnxpipe against transformers
on PyTorch, Optimum's ORTModelForSeq2SeqLM and CTranslate2.

RANDOM WEIGHTS, TIMING ONLY: the checkpoints are built here from real configs (``t5-small``: transformers'
T5Config defaults, d_model 512, 6+6 layers, 8 heads, d_ff 2048, vocabulary 32128) with random weights and the
tests' small tokenizer (tests/_tiny.py), so no text means anything. Random models emit eos early or loop, so
every engine is told to generate exactly ``--new-tokens`` tokens (``min_new_tokens = max_new_tokens``; in
CTranslate2 ``min_decoding_length = max_decoding_length``), and the bench checks that every engine returned that
many, and that fp32 greedy and beam tokens equal transformers'. The encoder input is ``--encoder-tokens`` random
token ids ending with eos.

Engines, each in a process of its own per round (load, then for greedy and for beam 4: a warm-up and one timed
generation), every one on 2 threads:
* ``transformers-fp32``: ``model.generate`` on PyTorch (``torch.set_num_threads(2)``);
* ``optimum-fp32``: Optimum's ``ORTModelForSeq2SeqLM`` on onnxpipe's own fp32 files (the export's folder is an
  Optimum folder: encoder_model.onnx and decoder_model_merged.onnx), its ``generate``;
* ``onnxpipe-fp32`` / ``onnxpipe-int8``: onnxpipe's encoder + merged decoder loop (``_seq2seq``, ``_beam``);
* ``onnxpipe-<precision>-1thread`` (only when named in --engines): the same session on one thread, as
  CTranslate2's 1-thread row;
* ``onnxpipe-<precision>-nospin`` / ``-spin<N>`` (only when named in --engines): the same with onnxruntime's
  intra-op threads not spinning (the session profile "low-power" at the same 2 threads), or spinning at most N us
  before they sleep (``session.intra_op.spin_duration_us``, a profile of this bench's). A decode step runs ~470
  small ops at batch 1, each a fork/join of the pool: on a loaded machine spinning threads take the time slices
  the descheduled ones wait for, which these rows show beside the default's;
* ``ctranslate2-int8`` / ``ctranslate2-fp32``: CTranslate2's converter on the same checkpoint and its
  ``Translator``, on the venv bench/engine_venvs.py builds (bench/.venvs/ctranslate2); ``ctranslate2-int8-1thread``
  the same on one thread (on the 2-core Xeon its 2-thread decoding was about half its 1-thread speed, so the
  int8 target compares with the faster of the two).

tokens/s: the new tokens of the returned sequence over the wall time of the whole call (encoder included), so
beam 4 counts one sequence's tokens, not the four beams'. Peak RSS: the worker's ``VmHWM`` (/proc/self/status)
after loading and generating, imports included: the memory a user's process needs for it (``ru_maxrss`` is not
used because Linux carries the parent's high-water mark over fork+exec). Rounds rotate the engine order; the
best round and the median are reported.

    python bench/seq2seq.py [--rounds 3] [--models t5-small] [--engines a,b] [--new-tokens 32]

Also the floor of a cached decode step on this machine, per precision (``step_floor``): the weight products the
step runs (its MatMul-type nodes with a weight initializer), alone, in the same ops, at batch 1: at batch 1 they
read every weight once a step, so they are bound by memory bandwidth, and the ceiling tokens/s (1 / floor) is the
most a decode running these weights through onnxruntime's kernels for those ops can reach (the encoder not counted).

Writes bench/results/seq2seq.json and seq2seq.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

# -- configuration ----------------------------------------------------------------------------------------
MODELS: dict[str, tuple[str, dict]] = {
    # transformers' T5Config defaults are t5-small's shape; the ids are t5-small's.
    "t5-small": ("t5", {"pad_token_id": 0, "eos_token_id": 1, "decoder_start_token_id": 0}),
    # tests/_tiny.py's tiny T5: the smoke's model.
    "tiny-t5": ("t5", {}),
}
ENGINES = [
    "transformers-fp32",
    "optimum-fp32",
    "onnxpipe-fp32",
    "onnxpipe-int8",
    "ctranslate2-int8",
    "ctranslate2-int8-1thread",
    "ctranslate2-fp32",
]
MODES = {"greedy": 1, "beam4": 4}
ENCODER_TOKENS, NEW_TOKENS, ROUNDS, THREADS, SEED = 128, 32, 3, 2, 0
TOKENIZER_VOCAB = 700  # tests/_tiny.py's Unigram: the input ids are drawn below it
CACHE = HERE / ".cache" / "seq2seq"
OUT = HERE / "results"
REFERENCE = "transformers-fp32"
# (target, goal, numerator engine, denominator engine, mode): ratios of the best rounds' tokens/s
TARGETS = [(f"{m}: onnxpipe-fp32 / transformers-fp32", 2.0, "onnxpipe-fp32", REFERENCE, m) for m in MODES] + [
    (f"{m}: onnxpipe-fp32 / optimum-fp32", 1.3, "onnxpipe-fp32", "optimum-fp32", m) for m in MODES
]
CT2_INT8 = ("ctranslate2-int8", "ctranslate2-int8-1thread")  # a target's denominator: the faster one present
TARGETS += [(f"{m}: onnxpipe-int8 / the faster ctranslate2-int8", 0.8, "onnxpipe-int8", CT2_INT8, m) for m in MODES]
RSS_GOAL = 0.5  # onnxpipe's peak RSS / transformers'
# ----------------------------------------------------------------------------------------------------------


def _paths(model: str, cache: Path) -> dict[str, Path]:
    return {k: cache / f"{model}-{k}" for k in ("ckpt", "onnx", "ct2-int8", "ct2-fp32")}


# -- preparation (main process) ---------------------------------------------------------------------------
def build_checkpoint(model: str, folder: Path) -> Path:
    """A random-weight checkpoint of ``MODELS[model]`` with tests/_tiny.py's T5 tokenizer."""
    if (folder / "config.json").is_file():
        return folder
    sys.path.insert(0, str(ROOT / "tests"))
    import _tiny

    arch, kw = MODELS[model]
    if model.startswith("tiny-"):
        return _tiny.build_checkpoint(arch, "text2text-generation", folder)
    from random_checkpoint import save_random

    return save_random(folder, "AutoModelForSeq2SeqLM", arch, kw, SEED, _tiny._seq2seq_tokenizer(arch))


def export_code() -> str:
    """A digest of the export's code (export/ and the runtime's side of the contract): a cached folder that an
    older export wrote is exported again, not measured as if it were the current one."""
    import hashlib

    h = hashlib.sha256()
    for path in sorted([*(ROOT / "export").rglob("*.py"), ROOT / "runtime" / "onnxpipe" / "_for_export.py"]):
        h.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:16]


def export_folder(ckpt: Path, folder: Path) -> Path:
    stamp, code = folder.parent / f"{folder.name}.export-code", export_code()
    current = (folder / "manifest.json").is_file() and stamp.is_file() and stamp.read_text() == code
    if not current:
        from onnxpipe_export import export

        export(ckpt, task="text2text-generation", out=folder, precisions="fp32,int8", progress=False, force=True)
        stamp.write_text(code)
    return folder


def ct2_folder(python: str, ckpt: Path, folder: Path, quantization: str) -> str:
    """Convert ``ckpt`` with CTranslate2's converter (on its venv); '' or why it failed."""
    if (folder / "model.bin").is_file():
        return ""
    cmd = [python, "-m", "ctranslate2.converters.transformers", "--model", str(ckpt), "--output_dir", str(folder)]
    run = subprocess.run(
        cmd + ["--quantization", quantization.replace("fp32", "float32"), "--force"], capture_output=True, text=True
    )
    if run.returncode != 0:
        return f"conversion failed: {(run.stderr or run.stdout).strip().splitlines()[-1:]}"
    return ""


# -- the weight-streaming floor of a decode step (main process) -----------------------------------------------
FLOOR_CALLS = 20  # timed runs of the floor graph per round (best of all)
WEIGHT_OPS = ("MatMul", "Gemm", "MatMulInteger", "MatMulNBits")


def step_weights(decoder: Path) -> list[tuple[str, str, list[int], int, dict]]:
    """The weight products one cached decode step runs, in order: the nodes of the merged decoder's with-past
    branch (``use_cache_branch`` true: the If's then_branch) among WEIGHT_OPS whose second input is an initializer,
    as (node name, op, weight dims, weight ONNX dtype, attributes). The cross-attention key and value projections
    run once per input, in the other branch, so they are not in it."""
    import onnx
    from onnx import helper

    graph = onnx.load(str(decoder), load_external_data=False).graph
    (branch,) = [
        helper.get_attribute_value(a)
        for n in graph.node
        if n.op_type == "If"
        for a in n.attribute
        if a.name == "then_branch"
    ]
    inits = {i.name: i for i in [*graph.initializer, *branch.initializer]}
    return [
        (
            n.name,
            n.op_type,
            list(inits[n.input[1]].dims),
            inits[n.input[1]].data_type,
            {a.name: helper.get_attribute_value(a) for a in n.attribute},
        )
        for n in branch.node
        if n.op_type in WEIGHT_OPS and len(n.input) > 1 and n.input[1] in inits
    ]


def floor_graph(weights: list[tuple[str, str, list[int], int, dict]]):
    """A graph of the same weight products, one after another at batch 1, with random weights of the same
    shapes and types and the ops the decoder runs them with: MatMul/Gemm in float; MatMulInteger after a
    DynamicQuantizeLinear and rescaled to float (what onnxruntime's quantize_dynamic writes, which onnxruntime
    fuses as it fuses the decoder's); MatMulNBits with the decoder's attributes. A product reads the one before
    it when the widths chain (T5's and BART's do), else an input of its width; unread results are outputs."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits, inputs, outputs = [], [], {}, []
    cur, width = None, None
    rng = np.random.default_rng(0)
    for i, (_, op, dims, dtype, attrs) in enumerate(weights):
        w, y = f"w{i}", f"y{i}"
        # Random weights, not one constant: tables of equal shape and equal contents (every layer's q, k, v...)
        # run as if fewer bytes were read (onnxruntime also holds less memory for them: 134 MB against 194 MB for
        # this graph), so such a floor is too low. Side by side, t5-small fp32: one constant 3.3 ms, a different
        # constant per table 5.8 ms, random tables 6.4 ms (int8: 0.82, 1.07, 1.05).
        if op == "MatMulNBits":
            k, n = attrs["K"], attrs["N"]
            blocks = -(-k // attrs["block_size"])
            inits += [
                numpy_helper.from_array(rng.integers(0, 256, dims, dtype=np.uint8), w),
                numpy_helper.from_array(np.full(n * blocks, 1 / k, dtype=np.float32), w + "s"),
            ]
        else:
            k, n = dims[::-1] if op == "Gemm" and attrs.get("transB") else dims
            np_type = helper.tensor_dtype_to_np_dtype(dtype)
            if dtype == TensorProto.FLOAT:  # scaled so activations keep their size down the chain (no denormals)
                values = (rng.standard_normal((k, n), dtype=np.float32) / np.float32(np.sqrt(k))).astype(np_type)
            elif dtype == TensorProto.INT8:  # 7-bit, as the int8 recipe writes them
                values = rng.integers(-64, 64, (k, n)).astype(np_type)
            else:
                values = rng.integers(0, 256, (k, n)).astype(np_type)
            inits.append(numpy_helper.from_array(values, w))
        if width != k:
            if cur is not None:
                outputs.append((cur, width))
            cur = inputs.setdefault(k, f"x{k}")
        if op == "MatMulNBits":
            nodes.append(helper.make_node(op, [cur, w, w + "s"], [y], domain="com.microsoft", **attrs))
        elif op == "MatMulInteger":
            # uniform u8 around 128 has a spread of ~74, uniform 7-bit s8 around 0 of ~37: these scales keep
            # activations their size, as in fp32
            signed = dtype == TensorProto.INT8
            zero = numpy_helper.from_array(np.array(0 if signed else 128, dtype=np_type), w + "z")
            spread = 37 if signed else 74
            inits += [zero, numpy_helper.from_array(np.array(1 / (spread * np.sqrt(k)), dtype=np.float32), w + "s")]
            nodes += [
                helper.make_node("DynamicQuantizeLinear", [cur], [f"q{i}", f"q{i}s", f"q{i}z"]),
                helper.make_node(op, [f"q{i}", w, f"q{i}z", w + "z"], [f"i{i}"]),
                helper.make_node("Cast", [f"i{i}"], [f"c{i}"], to=TensorProto.FLOAT),
                helper.make_node("Mul", [f"q{i}s", w + "s"], [f"s{i}"]),
                helper.make_node("Mul", [f"c{i}", f"s{i}"], [y]),
            ]
        else:
            nodes.append(helper.make_node("MatMul", [cur, w], [y]))
        cur, width = y, n
    outputs.append((cur, width))
    graph = helper.make_graph(
        nodes,
        "step_floor",
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, k]) for k, x in inputs.items()],
        [helper.make_tensor_value_info(y, TensorProto.FLOAT, [1, n]) for y, n in outputs],
        inits,
    )
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    return onnx.helper.make_model(graph, opset_imports=opsets), {x: k for k, x in inputs.items()}


def step_floor(decoder: Path, rounds: int) -> dict:
    """The floor of one cached decode step of ``decoder`` on this machine: its weight products alone (floor_graph),
    on onnxruntime with onnxpipe's session options and THREADS threads, best of ``rounds`` x FLOOR_CALLS runs. At
    batch 1 these read every weight once a step, so they are bound by memory bandwidth: the step cannot be faster
    than this, nor the decode than ``ceiling_tokens_per_s`` (the encoder's time not counted)."""
    import numpy as np
    import onnxruntime as ort
    from onnx import helper

    from onnxpipe._session import session_options

    weights = step_weights(decoder)
    model, inputs = floor_graph(weights)
    session = ort.InferenceSession(model.SerializeToString(), session_options(THREADS), ["CPUExecutionProvider"])
    rng = np.random.default_rng(SEED)
    feeds = {x: rng.standard_normal((1, k), dtype=np.float32) for x, k in inputs.items()}
    best = float("inf")
    for _ in range(rounds):
        session.run(None, feeds)
        for _ in range(FLOOR_CALLS):
            start = time.perf_counter()
            session.run(None, feeds)
            best = min(best, time.perf_counter() - start)
    nbytes = sum(int(np.prod(d)) * helper.tensor_dtype_to_np_dtype(t).itemsize for _, _, d, t, _ in weights)
    return {
        "weight_products": len(weights),
        "ops": sorted({op for _, op, *_ in weights}),
        "weight_mb": round(nbytes / 1e6, 2),
        "ms_per_step": round(best * 1e3, 3),
        "gb_per_s": round(nbytes / best / 1e9, 1),
        "ceiling_tokens_per_s": round(1 / best, 1),
    }


# -- workers (one process per engine, any venv: stdlib imports only at module level) ------------------------
def encoder_ids(n: int) -> list[int]:
    """``n`` token ids: random ones below the tokenizer's vocabulary (past its 3 specials), then eos (1)."""
    import random

    rng = random.Random(SEED)
    return [rng.randrange(3, TOKENIZER_VOCAB) for _ in range(n - 1)] + [1]


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _time(generate, rounds: int) -> tuple[list[float], list[int]]:
    """One warm-up, then ``rounds`` timed calls of ``generate()`` (-> the new token ids)."""
    tokens = generate()
    seconds = []
    for _ in range(rounds):
        start = time.perf_counter()
        tokens = generate()
        seconds.append(time.perf_counter() - start)
    return seconds, tokens


def _torch_generate(model, ids: list[int], new: int):
    import torch

    x = torch.tensor([ids])

    def make(beams: int):
        def run() -> list[int]:
            with torch.inference_mode():
                out = model.generate(
                    input_ids=x,
                    attention_mask=torch.ones_like(x),
                    do_sample=False,
                    num_beams=beams,
                    min_new_tokens=new,
                    max_new_tokens=new,
                )
            return [int(t) for t in out[0, 1:]]  # after the decoder start token

        return run

    return make


def worker_transformers(paths: dict[str, Path], ids: list[int], new: int):
    import torch

    torch.set_num_threads(THREADS)
    from transformers import AutoModelForSeq2SeqLM

    model = AutoModelForSeq2SeqLM.from_pretrained(paths["ckpt"]).eval()
    return _torch_generate(model, ids, new), {"torch": torch.__version__}


def worker_optimum(paths: dict[str, Path], ids: list[int], new: int):
    import onnxruntime as ort
    import optimum.version
    from optimum.onnxruntime import ORTModelForSeq2SeqLM

    options = ort.SessionOptions()
    options.intra_op_num_threads = THREADS
    model = ORTModelForSeq2SeqLM.from_pretrained(
        paths["onnx"],
        subfolder="onnx",
        encoder_file_name="encoder_model.onnx",  # the fp32 files; the merged decoder is found by its standard name
        use_merged=True,
        session_options=options,
        provider="CPUExecutionProvider",
    )
    return _torch_generate(model, ids, new), {"optimum": optimum.version.__version__, "onnxruntime": ort.__version__}


def worker_onnxpipe(
    paths: dict[str, Path], ids: list[int], new: int, precision: str, profile: str = "default", threads: int = THREADS
):
    import numpy as np
    import onnxruntime as ort

    from onnxpipe._beam import beam_search
    from onnxpipe._manifest import load_manifest
    from onnxpipe._seq2seq import Seq2SeqModel, sample_or_greedy
    from onnxpipe._seq2seq_config import merged_config, resolve

    s2s = Seq2SeqModel.load(load_manifest(paths["onnx"]), precision=precision, threads=threads, profile=profile)
    g = s2s.encoder.manifest.generation or {}
    token_ids = {k: g.get(k) for k in ("eos_token_id", "pad_token_id", "decoder_start_token_id", "bos_token_id")}
    x = np.array([ids], dtype=np.int64)
    mask = np.ones_like(x)

    def make(beams: int):
        call = {"num_beams": beams, "do_sample": False, "min_new_tokens": new, "max_new_tokens": new}
        settings = resolve(merged_config(g.get("config", {}), None, {}, call, pipeline_defaults={}), token_ids)

        def run() -> list[int]:
            hidden = s2s.encode(x, mask)
            if beams > 1:
                return beam_search(s2s, hidden, mask, settings)[0][0]
            return sample_or_greedy(s2s, hidden, mask, settings)[0]

        return run

    return make, {"onnxruntime": ort.__version__, "threads": str(threads)}


def worker_ctranslate2(paths: dict[str, Path], ids: list[int], new: int, precision: str, threads: int = THREADS):
    import ctranslate2

    folder = paths[f"ct2-{precision}"]
    vocab = json.loads((folder / "shared_vocabulary.json").read_text())
    index = {t: i for i, t in enumerate(vocab)}
    source = [vocab[i] for i in ids]
    translator = ctranslate2.Translator(
        str(folder), device="cpu", compute_type=precision.replace("fp32", "float32"), intra_threads=threads
    )

    def make(beams: int):
        def run() -> list[int]:
            out = translator.translate_batch(
                [source], beam_size=beams, min_decoding_length=new, max_decoding_length=new, num_hypotheses=1
            )
            return [index[t] for t in out[0].hypotheses[0]]

        return run

    return make, {"ctranslate2": ctranslate2.__version__, "intra_threads": str(threads)}


def session_profile(engine: str) -> str:
    """The session profile of an onnxpipe engine (see the module docstring); "-spin<N>" registers its own in
    onnxpipe's PROFILES, which only the engine's worker process calls this for."""
    suffix = engine.split("-")[2] if engine.count("-") == 2 else ""
    if suffix == "1thread":  # one thread: no pool to spin; the default profile's other settings
        return "default"
    if suffix == "nospin":
        return "low-power"
    if suffix.startswith("spin") and suffix[4:].isdigit():
        from onnxpipe._session import PROFILES, Profile

        PROFILES[suffix] = Profile(threads=None, config=(("session.intra_op.spin_duration_us", suffix[4:]),))
        return suffix
    if suffix:
        raise SystemExit(
            f"unknown engine {engine!r}: the onnxpipe engines' suffixes are -1thread, -nospin and -spin<N>"
        )
    return "default"


def worker(args: argparse.Namespace) -> None:
    """The engines of ``--worker`` (one, but for the smoke's --shared-process) one after another: a JSON line each."""
    for engine in args.worker.split(","):
        worker_engine(args, engine)


def worker_engine(args: argparse.Namespace, engine: str) -> None:
    paths = _paths(args.model, Path(args.cache))
    ids = encoder_ids(args.encoder_tokens)
    threads = 1 if engine.endswith("-1thread") else THREADS  # onnxpipe's and CTranslate2's 1-thread rows
    if engine == "transformers-fp32":
        make, versions = worker_transformers(paths, ids, args.new_tokens)
    elif engine == "optimum-fp32":
        make, versions = worker_optimum(paths, ids, args.new_tokens)
    elif engine.startswith("onnxpipe-"):
        profile = session_profile(engine)
        make, versions = worker_onnxpipe(paths, ids, args.new_tokens, engine.split("-")[1], profile, threads)
    elif engine.startswith("ctranslate2-"):
        make, versions = worker_ctranslate2(paths, ids, args.new_tokens, engine.split("-")[1], threads)
    else:
        raise SystemExit(f"unknown engine {engine!r}; valid: {', '.join(ENGINES)}")
    row: dict = {"versions": versions, "rss_after_load_mb": peak_rss_mb(), "modes": {}}
    for mode, beams in MODES.items():
        seconds, tokens = _time(make(beams), args.rounds)
        row["modes"][mode] = {"seconds": seconds, "tokens": tokens, "peak_rss_mb": peak_rss_mb()}
    print(json.dumps(row))


# -- orchestration ------------------------------------------------------------------------------------------
def worker_groups(order: list[str], shared: list[str]) -> list[list[str]]:
    """One round's worker processes, in order: an engine each, but the engines in ``shared`` go together in one
    process, where the first of them is."""
    groups: list[list[str]] = []
    pooled: list[str] = []
    for engine in order:
        if engine not in shared:
            groups.append([engine])
        else:
            if not pooled:
                groups.append(pooled)
            pooled.append(engine)
    return groups


def rotated(items: list, rnd: int) -> list:
    """Round ``rnd``'s order: ``items`` shifted left by ``rnd``, so every item leads once in len(items) rounds."""
    k = rnd % len(items) if items else 0
    return items[k:] + items[:k]


def summarize(rounds: list[dict], new_tokens: int, reference: dict | None) -> dict:
    """One engine's rounds: per mode the tokens/s of each round, median and best, the token count check and, for
    the fp32 engines, whether the tokens equal transformers'; the peak RSS (largest over rounds)."""
    out: dict = {"versions": rounds[0]["versions"], "modes": {}}
    for mode in MODES:
        rates = [round(new_tokens / s, 2) for r in rounds for s in r["modes"][mode]["seconds"]]
        tokens = rounds[-1]["modes"][mode]["tokens"]
        row = {
            "tokens_per_s": rates,
            "median": statistics.median(rates),
            "best": max(rates),
            "new_tokens": len(tokens),
            "count_ok": all(len(r["modes"][mode]["tokens"]) == new_tokens for r in rounds),
        }
        if reference is not None:
            row["same_tokens_as_transformers"] = tokens == reference["modes"][mode]["tokens"]
        out["modes"][mode] = row
    out["peak_rss_mb"] = round(max(r["modes"][m]["peak_rss_mb"] for r in rounds for m in MODES), 1)
    out["rss_after_load_mb"] = round(max(r["rss_after_load_mb"] for r in rounds), 1)
    return out


def targets(engines: dict) -> list[dict]:
    from provenance import target

    rows = []
    for name, goal, num, dens, mode in TARGETS:
        present = [d for d in ((dens,) if isinstance(dens, str) else dens) if "modes" in engines.get(d, {})]
        if "modes" not in engines.get(num, {}) or not present:
            rows.append(target(f"{name} >= {goal}", None, None, "engine missing"))
            continue
        den = max(present, key=lambda d: engines[d]["modes"][mode]["best"])
        a, b = engines[num]["modes"][mode]["best"], engines[den]["modes"][mode]["best"]
        detail = f"{a} / {b} tokens/s (best rounds)" + ("" if isinstance(dens, str) else f", {den}")
        rows.append(target(f"{name} >= {goal}", a / b, a / b >= goal, detail))
    for engine in ("onnxpipe-fp32", "onnxpipe-int8"):
        if engine in engines and REFERENCE in engines:
            a, b = engines[engine]["peak_rss_mb"], engines[REFERENCE]["peak_rss_mb"]
            name = f"peak RSS: {engine} / transformers-fp32 <= {RSS_GOAL}"
            rows.append(target(name, a / b, a / b <= RSS_GOAL, f"{a} / {b} MB"))
    return rows


def markdown(report: dict) -> str:
    from provenance import run_header, target_table

    lines = [
        "# Encoder-decoder generation, batch 1 (bench/seq2seq.py)",
        "",
        *run_header(report, lead="**Random weights: timing only.** "),
        f"Encoder input {report['encoder_tokens']} tokens, exactly {report['new_tokens']} new tokens (eos held off "
        f"in every engine), {report['threads']} threads per engine. {report['rounds']} rounds, each engine its own "
        f"process per round (engines rotated), {report['timed_per_round']} timed generation(s) per mode after a "
        "warm-up; tokens/s = new tokens / wall time of the whole call (encoder included; beam 4 counts the "
        "returned sequence's tokens). Peak RSS: the worker's VmHWM after loading and generating, imports included.",
        "",
    ]
    for model, engines in report["models"].items():
        lines += [
            f"## {model}",
            "",
            "| engine | greedy tokens/s best (median) | greedy / step ceiling | beam 4 tokens/s best (median) | tokens "
            "| same tokens as transformers (greedy, beam) | peak RSS MB (after load) | versions |",
            "|---|---|---|---|---|---|---|---|",
        ]
        floors = report.get("floor", {}).get(model, {})
        for name, e in engines.items():
            if "modes" not in e:
                lines.append(f"| {name} | {e['status']} | | | | | | |")
                continue
            g, b = e["modes"]["greedy"], e["modes"]["beam4"]
            same = (
                f"{g.get('same_tokens_as_transformers', '-')}, {b.get('same_tokens_as_transformers', '-')}"
                if "same_tokens_as_transformers" in g
                else "(the reference)"
                if name == REFERENCE
                else "- (int8)"
            )
            counts = f"{g['new_tokens']}, {b['new_tokens']}" + ("" if g["count_ok"] and b["count_ok"] else " **!**")
            versions = ", ".join(f"{k} {v}" for k, v in sorted(e["versions"].items()))
            floor = floors.get(name.split("-")[1])
            of_ceiling = f"{g['best'] / floor['ceiling_tokens_per_s']:.0%}" if floor else "-"
            lines.append(
                f"| {name} | {g['best']:.1f} ({g['median']:.1f}) | {of_ceiling} | {b['best']:.1f} ({b['median']:.1f}) "
                f"| {counts} | {same} | {e['peak_rss_mb']:.0f} ({e['rss_after_load_mb']:.0f}) | {versions} |"
            )
        if floors:
            lines += [
                "",
                "Decode-step floor (`step_floor`): one cached step's weight products alone (the with-past branch's "
                "MatMul-type nodes with an initializer weight, in the decoder's own ops, random weights of the same "
                "shapes and types, chained at batch 1, onnxpipe's session options), best run; the step cannot be "
                "faster, nor greedy decode than the ceiling (encoder not counted; the measured tokens/s above count "
                "it). CTranslate2's rows are set against the onnxpipe file's floor of the same precision.",
                "",
                "| precision | weight products (ops) | weights MB | floor ms per step | GB/s | ceiling tokens/s |",
                "|---|---|---|---|---|---|",
            ]
            for precision, f in floors.items():
                lines.append(
                    f"| {precision} | {f['weight_products']} ({', '.join(f['ops'])}) | {f['weight_mb']} | "
                    f"{f['ms_per_step']} | {f['gb_per_s']} | {f['ceiling_tokens_per_s']} |"
                )
        lines += ["", *target_table(report["targets"][model])]
        lines.append("")
    if report.get("note"):
        lines += [report["note"], ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="t5-small")
    ap.add_argument("--engines", default=",".join(ENGINES))
    ap.add_argument("--rounds", type=int, default=ROUNDS, help="processes per engine (rotated)")
    ap.add_argument("--timed", type=int, default=1, help="timed generations per mode in each process")
    ap.add_argument("--new-tokens", type=int, default=NEW_TOKENS)
    ap.add_argument("--encoder-tokens", type=int, default=ENCODER_TOKENS)
    ap.add_argument("--cache", type=Path, default=CACHE, help="checkpoints, exports and conversions (git-ignored)")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--note", default="", help="a paragraph added under the tables")
    # pytest's smoke, which times nothing: these engines share one worker process per round (a process start with
    # PyTorch's import is seconds of it); their RSS figures then include each other's
    ap.add_argument("--shared-process", default="", help=argparse.SUPPRESS)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    argv = sys.argv[1:] if argv is None else list(argv)
    a = ap.parse_args(argv)
    if a.worker:
        a.rounds = a.timed
        worker(a)
        return 0
    sys.path.insert(0, str(HERE))
    from provenance import provenance, simd_flags, write_report

    prov = provenance(__file__, argv)
    load_start = round(os.getloadavg()[0], 2)
    report: dict = {
        "provenance": prov,
        "random_weights": True,
        "simd_flags": simd_flags(),
        "encoder_tokens": a.encoder_tokens,
        "new_tokens": a.new_tokens,
        "threads": THREADS,
        "rounds": a.rounds,
        "timed_per_round": a.timed,
        "models": {},
        "floor": {},
        "targets": {},
        "note": a.note,
    }
    wanted = a.engines.split(",")
    shared = [e for e in a.shared_process.split(",") if e]
    if any(e.startswith("ctranslate2-") for e in shared):  # those run on their own venv's interpreter
        raise SystemExit("--shared-process: the ctranslate2 engines cannot share a process with the others")
    table = ""
    for model in a.models.split(","):
        paths = _paths(model, a.cache)
        export_folder(build_checkpoint(model, paths["ckpt"]), paths["onnx"])
        from onnxpipe._manifest import load_manifest

        variants = load_manifest(paths["onnx"]).variants
        report["floor"][model] = {
            p: step_floor(paths["onnx"] / str(variants[p].decoder), a.rounds)
            for p in sorted({e.split("-")[1] for e in wanted})
            if p in variants
        }
        status: dict[str, str] = {}
        ct2_python = ""
        if any(e.startswith("ctranslate2-") for e in wanted):
            import engine_venvs

            try:
                ct2_python = str(engine_venvs.python("ctranslate2"))
            except engine_venvs.VenvError as e:
                status.update({x: f"unavailable: {e}" for x in wanted if x.startswith("ctranslate2-")})
        for e in wanted:
            if e.startswith("ctranslate2-") and e not in status:
                why = ct2_folder(ct2_python, paths["ckpt"], paths[f"ct2-{e.split('-')[1]}"], e.split("-")[1])
                if why:
                    status[e] = f"unavailable: {why}"
        runs: dict[str, list[dict]] = {e: [] for e in wanted if e not in status}
        for rnd in range(a.rounds):
            order = [e for e in rotated(list(runs), rnd) if e not in status]  # not those failed in a round before
            for group in worker_groups(order, shared):
                python = ct2_python if group[0].startswith("ctranslate2-") else sys.executable
                cmd = [python, __file__, "--worker", ",".join(group), "--model", model, "--cache", str(a.cache)]
                cmd += ["--timed", str(a.timed), "--new-tokens", str(a.new_tokens)]
                cmd += ["--encoder-tokens", str(a.encoder_tokens)]
                env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "runtime"), str(ROOT / "export")])}
                run = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
                if run.returncode != 0:
                    status.update({e: "failed: " + (run.stderr.strip().splitlines() or ["?"])[-1][:300] for e in group})
                    continue
                for engine, line in zip(group, run.stdout.strip().splitlines()[-len(group) :]):
                    runs[engine].append(json.loads(line))
                    print(f"{model} round {rnd + 1} {engine} done", flush=True)
            # written after every round, so a run stopped early keeps the rounds it finished
            report["rounds_done"] = rnd + 1
            _record(report, model, wanted, runs, status, a.new_tokens)
            report["loadavg"] = {"start": load_start, "end": round(os.getloadavg()[0], 2)}
            table = write_report(a.out, "seq2seq", report, markdown)
    print(table)
    return 0


def _record(report: dict, model: str, wanted: list[str], runs: dict, status: dict, new_tokens: int) -> None:
    ok = {e: r for e, r in runs.items() if e not in status and r}
    ref = ok[REFERENCE][-1] if REFERENCE in ok else None
    engines: dict = {}
    for e in wanted:
        if e in ok:
            fp32 = e.split("-")[1] == "fp32"
            engines[e] = summarize(ok[e], new_tokens, ref if fp32 and e != REFERENCE else None)
        else:
            engines[e] = {"status": status.get(e, "no rounds")}
    report["models"][model] = engines
    report["targets"][model] = targets({e: v for e, v in engines.items() if "modes" in v})


if __name__ == "__main__":
    sys.exit(main())
