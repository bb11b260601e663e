"""Text generation at batch 1: tokens/s and time to first token, onnxpipe vs transformers vs onnxruntime-genai.

RANDOM WEIGHTS, TIMING ONLY: the two models are built here from configs (GPT-2 small, 124M; a SmolLM-135M-style
Llama with grouped-query attention, 30 layers) with random weights, so no text they produce means anything and
the low-bit variants' quality is not measured here (the export's manifest records their agreement with
PyTorch). Eos is disabled so that every run generates exactly ``--new-tokens`` tokens after a prompt of
``--prompt-tokens`` random token ids, greedy.

Each engine runs in its own process (``--worker``), one warm-up then ``--rounds`` timed generations:
* ``onnxpipe-fp32`` / ``onnxpipe-int4`` / ``onnxpipe-int8``: onnxpipe's loop (``generate_tokens``: IO binding,
  the cache kept in OrtValues, numpy argmax);
* ``bare-ort-fp32``: the same session driven by plain ``session.run`` with numpy feeds and argmax, nothing else:
  the reference for onnxpipe's per-token overhead (target <= 10 %);
* ``transformers-fp32``: ``model.generate`` on PyTorch (CPU), timed through a streamer;
* ``ortgenai-fp32`` / ``ortgenai-int4``: onnxruntime-genai's model builder on the same checkpoint and its
  generator, run by ``--genai-python``: a separate venv (its builder needs transformers >= 5 and onnx-ir,
  which the dev venv must not get), e.g. ``python -m venv /tmp/genai-venv``, a ``.pth`` file naming the dev
  venv's site-packages (torch, onnxruntime), then ``pip install onnxruntime-genai==0.18.0 onnx-ir
  'transformers>=5'`` into it. Missing, it is reported as unavailable with the reason.

    python bench/generate.py [--quick] [--models gpt2-small,llama-135m] [--rounds 3]

TTFT: prompt in -> first new token chosen. tokens/s: the remaining new tokens over the time they took (decode
rate); end-to-end tokens/s is also recorded. Writes bench/results/generate.json and generate.md.
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

ROOT = Path(__file__).resolve().parents[1]
# -- configuration ----------------------------------------------------------------------------------------
MODELS = {
    "gpt2-small": (
        "gpt2",
        {
            "n_layer": 12,
            "n_embd": 768,
            "n_head": 12,
            "vocab_size": 50257,
            "n_positions": 1024,
            "bos_token_id": 0,
            "eos_token_id": 0,
        },
    ),
    "llama-135m": (
        "llama",
        {
            "hidden_size": 576,
            "intermediate_size": 1536,
            "num_hidden_layers": 30,
            "num_attention_heads": 9,
            "num_key_value_heads": 3,
            "vocab_size": 49152,
            "max_position_embeddings": 2048,
            "tie_word_embeddings": True,
            "rms_norm_eps": 1e-5,
            "bos_token_id": 1,
            "eos_token_id": 2,
        },
    ),
}
ENGINES = [
    "onnxpipe-fp32",
    "onnxpipe-int4",
    "onnxpipe-int8",
    "bare-ort-fp32",
    "transformers-fp32",
    "ortgenai-fp32",
    "ortgenai-int4",
]
PROMPT_TOKENS, NEW_TOKENS, ROUNDS, SEED = 32, 128, 3, 0
CACHE = ROOT / "bench" / ".cache" / "generate"
OUT = ROOT / "bench" / "results"


# -- preparation (main process) ---------------------------------------------------------------------------
def build_checkpoint(name: str, folder: Path) -> Path:
    """A random-weight checkpoint of ``MODELS[name]`` with a small byte-level BPE tokenizer (tests/_tiny.py's)."""
    if (folder / "config.json").is_file():
        return folder
    sys.path.insert(0, str(ROOT / "tests"))
    from _tiny import _decoder_bpe
    from random_checkpoint import save_random

    arch, kw = MODELS[name]
    return save_random(folder, "AutoModelForCausalLM", arch, kw, SEED, _decoder_bpe(arch))


def export_folder(ckpt: Path, folder: Path) -> Path:
    if not (folder / "manifest.json").is_file():
        from onnxpipe_export import export

        export(ckpt, task="text-generation", out=folder, precisions="fp32,int4,int8", progress=True)
    return folder


def genai_folder(python: str, ckpt: Path, folder: Path, precision: str) -> tuple[Path | None, str]:
    if (folder / "genai_config.json").is_file():
        return folder, ""
    cmd = [
        python,
        "-m",
        "onnxruntime_genai.models.builder",
        "-i",
        str(ckpt),
        "-o",
        str(folder),
        "-p",
        precision,
        "-e",
        "cpu",
        "-c",
        str(folder) + "-cache",
    ]
    run = subprocess.run(cmd, capture_output=True, text=True)
    if run.returncode != 0:
        return None, f"model builder failed: {(run.stderr or run.stdout).strip().splitlines()[-1:]}"
    return folder, ""


# -- workers (one process per engine) ---------------------------------------------------------------------
def _prompt(vocab: int) -> list[int]:
    import numpy as np

    return np.random.default_rng(SEED).integers(3, min(vocab, 600), PROMPT_TOKENS).tolist()


def _timed(run_once, rounds: int) -> list[dict]:
    """``run_once()`` yields once per new token; the time of each yield is recorded."""
    out = []
    for r in range(rounds + 1):
        stamps = []
        start = time.perf_counter()
        for _ in run_once():
            stamps.append(time.perf_counter())
        if r == 0:
            continue  # warm-up
        ttft, total = stamps[0] - start, stamps[-1] - start
        out.append(
            {
                "ttft_s": ttft,
                "decode_tokens_per_s": (len(stamps) - 1) / (stamps[-1] - stamps[0]),
                "e2e_tokens_per_s": len(stamps) / total,
                "new_tokens": len(stamps),
            }
        )
    return out


def worker_onnxpipe(folder: str, precision: str, rounds: int) -> list[dict]:
    import numpy as np

    import onnxpipe
    from onnxpipe._generate import generate_tokens
    from onnxpipe._sampling import Sampling

    pipe = onnxpipe.pipeline("text-generation", model=folder, precision=precision)
    ids = np.array([_prompt((pipe.model.manifest.generation or {})["vocab_size"])])
    mask = np.ones_like(ids)

    def once():
        for _ in generate_tokens(pipe.model, pipe.graph, ids, mask, NEW_TOKENS, Sampling(), [], 0):
            yield

    return _timed(once, rounds)


def worker_bare(folder: str, rounds: int) -> list[dict]:
    """The same fp32 session, driven by session.run alone: numpy feeds in, numpy outputs back as the past."""
    import numpy as np

    import onnxpipe

    pipe = onnxpipe.pipeline("text-generation", model=folder, precision="fp32")
    session, graph = pipe.model.session, pipe.graph
    ids = np.array([_prompt((pipe.model.manifest.generation or {})["vocab_size"])])
    names = ["logits", *graph.present]

    def once():
        past = [np.zeros((1, graph.kv_heads, 0, graph.head_dim), np.float32)] * len(graph.past)
        tokens, mask = ids, np.ones_like(ids)
        positions = np.arange(ids.shape[1])[None]
        for _ in range(NEW_TOKENS):
            feeds = {"input_ids": tokens, "attention_mask": mask, **dict(zip(graph.past, past))}
            if graph.position_ids:
                feeds["position_ids"] = positions
            logits, *past = session.run(names, feeds)
            tokens = logits[:, -1].argmax(-1)[:, None]
            yield
            mask = np.concatenate([mask, np.ones((1, 1), np.int64)], axis=1)
            positions = np.array([[mask.shape[1] - 1]])

    return _timed(once, rounds)


def worker_transformers(ckpt: str, rounds: int) -> list[dict]:
    import queue
    import threading

    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(ckpt).eval()
    model.generation_config.eos_token_id = None
    ids = torch.tensor([_prompt(model.config.vocab_size)])

    class Stamps:  # transformers' streamer protocol: put() gets the prompt, then each new token
        def __init__(self):
            self.q: queue.Queue = queue.Queue()
            self.first = True

        def put(self, value):
            if self.first:
                self.first = False
                return
            self.q.put(1)

        def end(self):
            self.q.put(None)

    def once():
        s = Stamps()
        t = threading.Thread(
            target=lambda: model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                do_sample=False,
                max_new_tokens=NEW_TOKENS,
                min_new_tokens=NEW_TOKENS,
                streamer=s,
                pad_token_id=0,
            )
        )
        with torch.no_grad():
            t.start()
            while s.q.get() is not None:
                yield
            t.join()

    return _timed(once, rounds)


def worker_genai(folder: str, rounds: int) -> list[dict]:
    import onnxruntime_genai as og

    model = og.Model(folder)
    vocab = json.loads((Path(folder) / "genai_config.json").read_text())["model"]["vocab_size"]
    prompt = _prompt(vocab)

    def once():
        params = og.GeneratorParams(model)
        params.set_search_options(
            do_sample=False, max_length=PROMPT_TOKENS + NEW_TOKENS, min_length=PROMPT_TOKENS + NEW_TOKENS
        )
        gen = og.Generator(model, params)
        gen.append_tokens(prompt)
        for _ in range(NEW_TOKENS):
            if gen.is_done():
                break
            gen.generate_next_token()
            yield

    return _timed(once, rounds)


def worker(args: argparse.Namespace) -> None:
    engine, model = args.worker, args.model
    folder, ckpt = CACHE / f"{model}-onnx", CACHE / f"{model}-ckpt"
    if engine.startswith("onnxpipe-"):
        rows = worker_onnxpipe(str(folder), engine.split("-")[1], args.rounds)
    elif engine == "bare-ort-fp32":
        rows = worker_bare(str(folder), args.rounds)
    elif engine == "transformers-fp32":
        rows = worker_transformers(str(ckpt), args.rounds)
    else:
        rows = worker_genai(str(CACHE / f"{model}-genai-{engine.split('-')[1]}"), args.rounds)
    print(json.dumps(rows))


# -- orchestration ------------------------------------------------------------------------------------------
def _median(rows: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def rotated(items: list, rnd: int) -> list:
    """Round ``rnd``'s order: ``items`` shifted left by ``rnd``, so every item leads once in len(items) rounds."""
    k = rnd % len(items) if items else 0
    return items[k:] + items[:k]


def summarize(runs: list[dict]) -> dict:
    """One engine's rounds: medians, and the best round (shortest TTFT, fastest decode), which outside load on a
    shared machine can only have slowed down."""
    return {
        "ttft_ms": 1e3 * _median(runs, "ttft_s"),
        "decode_tokens_per_s": _median(runs, "decode_tokens_per_s"),
        "e2e_tokens_per_s": _median(runs, "e2e_tokens_per_s"),
        "best_ttft_ms": 1e3 * min(r["ttft_s"] for r in runs),
        "best_decode_tokens_per_s": max(r["decode_tokens_per_s"] for r in runs),
        "runs": runs,
    }


def main(argv: list[str] | None = None) -> int:
    global NEW_TOKENS
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--engines", default=",".join(ENGINES))
    p.add_argument("--rounds", type=int, default=ROUNDS)
    p.add_argument("--new-tokens", type=int, default=NEW_TOKENS)
    p.add_argument("--quick", action="store_true", help="1 round, 16 new tokens: a smoke, not figures")
    p.add_argument(
        "--genai-python",
        default="/tmp/genai-venv/bin/python",
        help="a Python with onnxruntime-genai (and torch/transformers for its model builder)",
    )
    p.add_argument("--out", default=str(OUT))
    p.add_argument(
        "--merge",
        action="store_true",
        help="keep the rows of --out's generate.json for engines not run now (e.g. add genai later)",
    )
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.rounds, args.new_tokens = 1, 16
    NEW_TOKENS = args.new_tokens
    if args.worker:
        worker(args)
        return 0
    results: dict = {
        "random_weights": True,
        "note": "random weights: timing only, the text means nothing",
        "prompt_tokens": PROMPT_TOKENS,
        "new_tokens": NEW_TOKENS,
        "rounds": args.rounds,
        "threads": len(os.sched_getaffinity(0)),
        "models": {},
        "unavailable": {},
    }
    try:
        sys.path.insert(0, str(ROOT / "bench"))
        from provenance import provenance

        results["provenance"] = provenance(__file__, argv if argv is not None else sys.argv[1:])
    except Exception as e:  # provenance is a record, not a reason to lose the figures
        results["provenance"] = {"error": str(e)}
    genai_ok = (
        Path(args.genai_python).is_file()
        and subprocess.run([args.genai_python, "-c", "import onnxruntime_genai"], capture_output=True).returncode == 0
    )
    for model in args.models.split(","):
        ckpt = build_checkpoint(model, CACHE / f"{model}-ckpt")
        export_folder(ckpt, CACHE / f"{model}-onnx")
        engines = []
        for engine in args.engines.split(","):
            if engine.startswith("ortgenai-"):
                why = "" if genai_ok else f"onnxruntime-genai is not importable by {args.genai_python}"
                if not why:
                    _, why = genai_folder(
                        args.genai_python, ckpt, CACHE / f"{model}-genai-{engine.split('-')[1]}", engine.split("-")[1]
                    )
                if why:
                    results["unavailable"][f"{model}/{engine}"] = why
                    continue
            engines.append(engine)
        # Rounds rotate the engines: each round runs every engine once (its own process: warm-up, one timed
        # generation), in an order shifted by one per round, so outside load spreads over all engines instead of
        # landing on whichever ran its rounds back to back when it came.
        timings: dict[str, list[dict]] = {e: [] for e in engines}
        for rnd in range(args.rounds):
            for engine in rotated(engines, rnd):
                if engine not in timings:
                    continue  # failed in an earlier round
                python = args.genai_python if engine.startswith("ortgenai-") else sys.executable
                cmd = [python, __file__, "--worker", engine, "--model", model, "--rounds", "1"]
                run = subprocess.run(cmd + ["--new-tokens", str(NEW_TOKENS)], capture_output=True, text=True, cwd=ROOT)
                if run.returncode != 0:
                    results["unavailable"][f"{model}/{engine}"] = (run.stderr.strip().splitlines() or ["?"])[-1][:300]
                    del timings[engine]
                    continue
                timings[engine] += json.loads(run.stdout.strip().splitlines()[-1])
        rows = {engine: summarize(runs) for engine, runs in timings.items()}
        for engine, r in rows.items():
            print(
                f"{model:11s} {engine:18s} TTFT {r['ttft_ms']:7.1f} ms  {r['decode_tokens_per_s']:7.1f} tok/s "
                f"(best round {r['best_decode_tokens_per_s']:.1f})",
                flush=True,
            )
        results["models"][model] = rows
    results["loadavg_1min_at_end"] = round(os.getloadavg()[0], 2)
    previous = Path(args.out) / "generate.json"
    if args.merge and previous.is_file():
        old = json.loads(previous.read_text())
        for model, rows in old.get("models", {}).items():
            results["models"][model] = {**rows, **results["models"].get(model, {})}
        ran = {f"{m}/{e}" for m, rows in results["models"].items() for e in rows}
        results["unavailable"] = {
            **{k: v for k, v in old.get("unavailable", {}).items() if k not in ran},
            **results["unavailable"],
        }
        results["merged_from"] = old.get("provenance")
    write(results, Path(args.out))
    return 0


def _ratio(rows: dict, a: str, b: str) -> str:
    if a in rows and b in rows:
        return f"{rows[a]['decode_tokens_per_s'] / rows[b]['decode_tokens_per_s']:.2f}x"
    return "n/a"


def write(results: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "generate.json").write_text(json.dumps(results, indent=2) + "\n")
    load = results.get("provenance", {}).get("loadavg_1min_at_start", "?")
    busy = isinstance(load, (int, float)) and load > results["threads"]
    verdict = "above the core count: other jobs shared the cores, treat ratios as rough" if busy else "quiet"
    lines = [
        "# Text generation, batch 1 (bench/generate.py)",
        "",
        f"**Random weights: timing only.** Prompt {results['prompt_tokens']} tokens, {results['new_tokens']} new "
        f"tokens, greedy, eos off; median and best of {results['rounds']} rounds (engines rotated per round, each its "
        f"own process: a warm-up, then one timed generation); {results['threads']} "
        f"usable cores; load average {load} at the start ({verdict})"
        + (f", {results['loadavg_1min_at_end']} at the end." if "loadavg_1min_at_end" in results else "."),
        "",
        "| model | engine | TTFT ms | decode tokens/s | end-to-end tokens/s | best round: TTFT ms, decode tokens/s |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for model, rows in results["models"].items():
        for engine, r in rows.items():
            best = f"{r['best_ttft_ms']:.1f}, {r['best_decode_tokens_per_s']:.1f}" if "best_ttft_ms" in r else "-"
            lines.append(
                f"| {model} | {engine} | {r['ttft_ms']:.1f} | {r['decode_tokens_per_s']:.1f} | "
                f"{r['e2e_tokens_per_s']:.1f} | {best} |"
            )
    lines += [
        "",
        "| model | onnxpipe-fp32 / transformers | onnxpipe-int4 / transformers | onnxpipe-fp32 / genai-fp32 "
        "| onnxpipe-int4 / genai-int4 | bare session.run / onnxpipe-fp32 (loop overhead) |",
        "|---|---|---|---|---|---|",
    ]
    for model, rows in results["models"].items():
        lines.append(
            f"| {model} | {_ratio(rows, 'onnxpipe-fp32', 'transformers-fp32')} | "
            f"{_ratio(rows, 'onnxpipe-int4', 'transformers-fp32')} | "
            f"{_ratio(rows, 'onnxpipe-fp32', 'ortgenai-fp32')} | "
            f"{_ratio(rows, 'onnxpipe-int4', 'ortgenai-int4')} | {_ratio(rows, 'bare-ort-fp32', 'onnxpipe-fp32')} |"
        )
    if results["unavailable"]:
        lines += ["", "Unavailable:", *[f"- {k}: {v}" for k, v in results["unavailable"].items()]]
    (out / "generate.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
