"""Two int8 folders of one model as the runtime runs them, side by side: e.g. today's default against the previous.

    python bench/int8_default.py --folder models/minilm-sst2 --baseline DIR [--sentences 872] [--rounds 5]
        [--out bench/results]

Each folder's int8 variant through ``onnxpipe.pipeline`` with its default options (execution "auto": dynamic
int8 runs each text alone on the pool, fixed-scale int8 too, because it is faster), so the figures are what a
user gets: batch 1 is ``pipe(text)`` per sentence over the first 300 SST-2 dev sentences, throughput one
``pipe(list)`` of all ``--sentences``. The folders alternate round by round (the first one flips each round);
each sentence keeps its fastest time over the rounds and each folder its fastest ``pipe(list)``, since the
machine this ran on is shared and a load spike in one round should not decide. Also: accuracy on the same
sentences, label agreement between the two, and the CPU's int8 flags. Writes OUT/int8_default.json and .md.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from pathlib import Path

import numpy as np

from int8_cpu import cpu_name
from onnxpipe import pipeline
from provenance import markdown, provenance, rel, write_report

ROOT = Path(__file__).resolve().parents[1]
BATCH1_SENTENCES = 300


def _dev(n: int) -> tuple[list[str], np.ndarray]:
    with open(ROOT.parent / "shared/data/sst2/dev.tsv", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[:n]
    return [r["content"] for r in rows], np.array([int(r["label"]) for r in rows])


def table(result: dict) -> str:
    """The markdown table, made from the JSON as written."""
    new, old = result["runs"]["folder"], result["runs"]["baseline"]
    rows = [
        f"| {r['folder']} | {r['recipe']} | {r['execution']} | {r['batch1_p50_ms']:.3f} | {r['sentences_per_s']:.0f} "
        f"| {r['accuracy']:.4f} |"
        for r in (new, old)
    ]
    return "\n".join(
        [
            f"# {new['recipe']} against {old['recipe']}, as the runtime runs them",
            "",
            *markdown(result["provenance"]),
            "",
            f"`bench/int8_default.py`: {result['rounds']} alternated rounds, fastest per sentence and per call; "
            f"batch 1 over the first {result['batch1_sentences']} SST-2 dev sentences, throughput one "
            f"`pipe(list)` of {result['sentences']}; CPU int8 flags: {', '.join(result['cpu']['int8_flags'])}.",
            "",
            "| folder | recipe | execution | batch-1 p50 ms | sentences/s | accuracy |",
            "|---|---|---|---|---|---|",
            *rows,
            "",
            f"Batch 1: {result['batch1_speedup']:.2f}x the baseline's speed; "
            f"throughput {result['throughput_ratio']:.2f}x; "
            f"the two agree on {100 * result['label_agreement']:.1f} % of labels.",
            "",
        ]
    )


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--folder", required=True, help="the folder measured (its int8 variant)")
    ap.add_argument("--baseline", required=True, help="the folder it is compared with (its int8 variant)")
    ap.add_argument("--sentences", type=int, default=872)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results", help="folder for int8_default.json/.md")
    a = ap.parse_args(argv)
    prov = provenance(__file__, argv)
    texts, gold = _dev(a.sentences)
    pipes = {
        name: pipeline("text-classification", model=folder, precision="int8")
        for name, folder in (("folder", a.folder), ("baseline", a.baseline))
    }
    single = {name: np.full(min(BATCH1_SENTENCES, len(texts)), np.inf) for name in pipes}
    whole = dict.fromkeys(pipes, np.inf)
    for r in range(a.rounds):
        for name in list(pipes)[:: 1 if r % 2 == 0 else -1]:
            pipe = pipes[name]
            pipe(texts[:8])  # warm-up: arena growth, the pool's threads
            t0 = time.perf_counter()
            pipe(texts)
            whole[name] = min(whole[name], time.perf_counter() - t0)
            for i, text in enumerate(texts[: len(single[name])]):
                t1 = time.perf_counter()
                pipe(text)
                single[name][i] = min(single[name][i], time.perf_counter() - t1)
    labels = {}
    for name, p in pipes.items():
        ids = {label: i for i, label in p.model.manifest.labels.items()}
        labels[name] = np.array([ids[d["label"]] for d in p(texts)])
    runs = {
        name: {
            "folder": rel(Path(getattr(a, name))),
            "recipe": (p.model.manifest.variants["int8"].recipe or {}).get("name"),
            "execution": p.model.execution,
            "batch1_p50_ms": round(float(np.median(single[name])) * 1e3, 3),
            "sentences_per_s": round(len(texts) / whole[name], 1),
            "accuracy": round(float((labels[name] == gold).mean()), 4),
        }
        for name, p in pipes.items()
    }
    prov["loadavg_1min_at_end"] = round(os.getloadavg()[0], 2)
    new, old = runs["folder"], runs["baseline"]
    result = {
        "provenance": prov,
        "cpu": cpu_name(),
        "sentences": len(texts),
        "batch1_sentences": len(single["folder"]),
        "rounds": a.rounds,
        "runs": runs,
        "batch1_speedup": round(old["batch1_p50_ms"] / new["batch1_p50_ms"], 3),
        "throughput_ratio": round(new["sentences_per_s"] / old["sentences_per_s"], 3),
        "label_agreement": round(float((labels["folder"] == labels["baseline"]).mean()), 4),
    }
    print(write_report(a.out, "int8_default", result, table))


if __name__ == "__main__":
    main()
