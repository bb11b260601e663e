"""One line: batch-1 latency of the seed sentence, transformers' pipeline on PyTorch vs onnxpipe (int8).

Each engine runs in its own process (thread pools of one engine otherwise steal cores from the next);
they alternate for --rounds rounds and the medians are compared. PyTorch runs at its default thread count
(one per core) and at one thread, and the faster of the two is the baseline: on a loaded machine its OpenMP
barriers make the default many times slower than one thread, and a baseline handicapped that way would flatter
onnxpipe. The pipeline already runs the model under ``torch.no_grad``. Needs the export extra (torch). Prints
one line and writes no file (make compare runs it):

    .venv/bin/python bench/vs_pytorch.py [--checkpoint ../shared/checkpoints/minilm-sst2] [--rounds 3] [--runs 100]
"""

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

# ../shared beside the checkout, wherever the command is run from (default of --checkpoint).
CHECKPOINT = Path(__file__).resolve().parents[2] / "shared" / "checkpoints" / "minilm-sst2"
SENTENCE = "I've been waiting for a HuggingFace course my whole life."
WARMUP, RUNS, ROUNDS = 10, 100, 3

_TORCH = (
    "import torch; from transformers import pipeline; p = pipeline('sentiment-analysis', model={ckpt!r}, device='cpu')"
)
ENGINES = {
    "PyTorch (transformers pipeline, fp32)": _TORCH,
    "PyTorch (transformers pipeline, fp32, 1 thread)": _TORCH + "; torch.set_num_threads(1)",
    "onnxpipe (int8)": "from onnxpipe import pipeline; p = pipeline('sentiment-analysis')",
}

TIMER = """
import json, time
{setup}
for _ in range({warmup}): p({sentence!r})
t = []
for _ in range({runs}):
    s = time.perf_counter(); p({sentence!r}); t.append(time.perf_counter() - s)
t.sort(); print(json.dumps({{"p50_ms": t[len(t) // 2] * 1e3, "label": p({sentence!r})[0]["label"]}}))
"""


def measure(setup: str, checkpoint: Path, runs: int) -> dict:
    code = TIMER.format(setup=setup.format(ckpt=str(checkpoint)), warmup=WARMUP, runs=runs, sentence=SENTENCE)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--checkpoint",
        type=Path,
        default=CHECKPOINT,
        help="PyTorch checkpoint (default ../shared/checkpoints/minilm-sst2)",
    )
    ap.add_argument("--rounds", type=int, default=ROUNDS, help=f"rounds, engines alternated (default {ROUNDS})")
    ap.add_argument("--runs", type=int, default=RUNS, help=f"timed calls per engine and round (default {RUNS})")
    a = ap.parse_args()
    if not (a.checkpoint / "config.json").is_file():
        sys.exit(f"error: the PyTorch checkpoint {a.checkpoint} is missing; ../shared must sit beside the checkout")
    results = {name: [] for name in ENGINES}
    for _ in range(a.rounds):
        for name, setup in ENGINES.items():
            results[name].append(measure(setup, a.checkpoint, a.runs))
    p50 = {name: statistics.median(r["p50_ms"] for r in rs) for name, rs in results.items()}
    labels = {name: rs[0]["label"] for name, rs in results.items()}
    ours_name = "onnxpipe (int8)"
    ours_ms = p50.pop(ours_name)
    torch_name, torch_ms = min(p50.items(), key=lambda kv: kv[1])  # the faster PyTorch thread count
    print(
        f"latency, seed sentence, batch 1 (median of {a.rounds} rounds x p50 of {a.runs}): "
        f"{torch_name} {torch_ms:.2f} ms [{labels[torch_name]}] (other: "
        + ", ".join(f"{n} {ms:.2f} ms" for n, ms in p50.items() if n != torch_name)
        + f"), {ours_name} {ours_ms:.2f} ms [{labels[ours_name]}] -> {torch_ms / ours_ms:.1f}x faster"
    )


if __name__ == "__main__":
    main()
