"""Speed of the int8 files side by side: today's default, the CPU-exact variant, fp32 (and any other file).

    python bench/int8_cpu.py --folder DIR [--extra NAME=FILE ...] [--sentences 300] [--rounds 3]
        [--out bench/results/int8_cpu]

DIR is a model folder exported with ``--precision int8,int8-exact,fp32``; ``--extra`` adds other .onnx files of
the same model (e.g. the full-range s8 file of the previous default) under a name. Every file runs through the
runtime's own session code (OnnxModel: the options every onnxpipe session gets), one at a time, alternated
round by round. The machine this was written on is shared and noisy, so every sentence and every batch keeps
its fastest time over the rounds (a load spike in one round does not count): batch 1 is the median of those
per-sentence minima over the first ``--sentences`` SST-2 dev sentences one by one, throughput the sentences
over the sum of the per-batch minima in the runtime's length-sorted padded batches. The
CPU is named in the results (its int8 instructions decide which kernels run). Writes OUT.json and OUT.md.
"""

from __future__ import annotations

import argparse
import csv
import gc
import json
import platform
import re
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from onnxpipe._for_export import AutoTokenizer, OnnxModel, Variant, plan_batches
from onnxpipe._manifest import load_manifest

ROOT = Path(__file__).resolve().parents[1]


def cpu_name() -> dict:
    text = Path("/proc/cpuinfo").read_text(encoding="utf-8") if Path("/proc/cpuinfo").exists() else ""
    model = re.search(r"model name\s*:\s*(.*)", text)
    flags = sorted(set(re.findall(r"\b(avx512_vnni|avx_vnni|avx2|amx_int8|asimddp)\b", text)))
    return {"model": model.group(1) if model else platform.processor(), "int8_flags": flags}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--folder", required=True)
    ap.add_argument("--extra", action="append", default=[], metavar="NAME=FILE")
    ap.add_argument("--sentences", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "bench/results/int8_cpu"))
    args = ap.parse_args(argv)
    manifest = load_manifest(Path(args.folder), verify=not args.extra)  # extra files are not in its manifest
    runs = {p: p for p in manifest.variants}
    for item in args.extra:
        name, file = item.split("=", 1)
        rel = Path(file).resolve().relative_to(manifest.folder.resolve())  # the session opens folder-relative files
        manifest = replace(manifest, variants={**manifest.variants, name: Variant(str(rel))})
        runs[name] = name
    with open(ROOT.parent / "shared/data/sst2/dev.tsv", encoding="utf-8", newline="") as f:
        texts = [r["content"] for r in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)][: args.sentences]
    tok = AutoTokenizer.from_manifest(manifest)
    singles = [tok([t], truncation=True, return_tensors="np") for t in texts]
    lengths = [int(s["input_ids"].shape[1]) for s in singles]
    batches = [
        tok([texts[i] for i in idx], padding=True, truncation=True, return_tensors="np")
        for idx in plan_batches(lengths, batch_size=32, max_batch_tokens=1024)
    ]
    fastest_single = {name: np.full(len(singles), np.inf) for name in runs}
    fastest_batch = {name: np.full(len(batches), np.inf) for name in runs}
    # each round's own figures too: the median round shows what the best one may owe to a quiet moment
    round_batch_s: dict[str, list[float]] = {name: [] for name in runs}
    round_single_p50: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.rounds):
        for name in runs:
            model = OnnxModel(manifest, device="cpu", precision=name)
            feeds = [model.feeds(b) for b in batches]
            for b in feeds[:2]:
                model.run(b, ["logits"])  # warm-up
            this_batch, this_single = [], []
            for i, b in enumerate(feeds):
                t0 = time.perf_counter()
                model.run(b, ["logits"])
                this_batch.append(time.perf_counter() - t0)
                fastest_batch[name][i] = min(fastest_batch[name][i], this_batch[-1])
            for i, s in enumerate(singles):
                one = model.feeds(s)
                t1 = time.perf_counter()
                model.run(one, ["logits"])
                this_single.append(time.perf_counter() - t1)
                fastest_single[name][i] = min(fastest_single[name][i], this_single[-1])
            round_batch_s[name].append(sum(this_batch))
            round_single_p50[name].append(float(np.median(this_single)))
            del model
            gc.collect()
    best = {
        name: {
            "sentences_per_s": round(len(texts) / float(fastest_batch[name].sum()), 1),
            "batch1_p50_ms": round(float(np.median(fastest_single[name])) * 1e3, 3),
            "median_round": {
                "sentences_per_s": round(len(texts) / float(np.median(round_batch_s[name])), 1),
                "batch1_p50_ms": round(float(np.median(round_single_p50[name])) * 1e3, 3),
            },
        }
        for name in runs
    }
    for name, row in best.items():
        v = manifest.variants[name]
        row["file"] = v.file
        row["cpu_exact"] = v.cpu_exact  # None for an --extra file: no manifest entry says
        row["recipe"] = (v.recipe or {}).get("name")
    result = {
        "cpu": cpu_name(),
        "sentences": len(texts),
        "rounds": args.rounds,
        "method": "runtime sessions (OnnxModel), files alternated per round; each sentence and batch keeps its "
        "fastest time over the rounds; batch 1: median over sentences, one per run; throughput: length-sorted "
        "padded batches of <= 32 rows / 1024 tokens; median_round: each round's own figures, median over rounds",
        "runs": best,
    }
    out = Path(args.out)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    base = best.get("int8")
    lines = [
        f"# int8 variants side by side on {result['cpu']['model']} ({', '.join(result['cpu']['int8_flags'])})",
        "",
        f"{len(texts)} SST-2 dev sentences, {args.rounds} alternated rounds, each sentence and batch at its "
        "fastest over the rounds (`bench/int8_cpu.py`); beside them, the median round's.",
        "",
        "| file | CPU-exact | batch-1 p50 ms | sentences/s | vs int8 batch 1 | vs int8 throughput "
        "| median round: batch-1 ms, sentences/s |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, row in best.items():
        rel = "- | -"
        if base:
            b1, sps = base["batch1_p50_ms"] / row["batch1_p50_ms"], row["sentences_per_s"] / base["sentences_per_s"]
            rel = f"{b1:.2f}x | {sps:.2f}x"
        lines.append(
            f"| {name} ({row['recipe'] or row['file']}) | { {True: 'yes', False: 'no'}.get(row['cpu_exact'], '-') } | "
            f"{row['batch1_p50_ms']:.2f} | {row['sentences_per_s']:.0f} | {rel} | "
            f"{row['median_round']['batch1_p50_ms']:.2f}, {row['median_round']['sentences_per_s']:.0f} |"
        )
    out.with_suffix(".md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
