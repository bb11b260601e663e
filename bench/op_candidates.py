"""The fewer-operator prototypes (op_variants.py) judged as a recipe would be: speed through onnxpipe's own
pipeline and the quality gates, beside the shipped int8 file.

    python bench/op_candidates.py [--variants embed-layernorm,skipln] [--rounds 3] [--out bench/results]

Each file is put into a copy of the model folder (verify off: its hash differs) and loaded by
``onnxpipe.pipeline`` with the default execution. Speed, in alternated rounds (each round runs every file once,
order rotated; best round and median): batch 1 on the seed sentence (p50 of --calls calls) and SST-2 dev in
requests of 32 (sentences/s). Quality, once per file: SST-2 dev accuracy and label agreement with PyTorch
(transformers on the checkpoint, fp32), and batch invariance as the export measures it (every sentence alone
vs inside the runtime's padded batches, ``_invariance.py``): max probability change and label flips.
Writes op_candidates.json and .md. Needs the export extra (torch, transformers, onnx).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from op_variants import build_all  # noqa: E402
from provenance import provenance, write_report  # noqa: E402
from workloads import SEED, read_sst2  # noqa: E402

# ---- configuration ---------------------------------------------------------------------------------------
MODEL = HERE.parent / "models/minilm-sst2"
CHECKPOINT = HERE.parents[1] / "shared/checkpoints/minilm-sst2"
FILE = "onnx/model_quantized.onnx"
VARIANTS = ["embed-layernorm", "skipln", "embed-layernorm+skipln"]
ROUNDS, CALLS, BATCH = 3, 300, 32
# ----------------------------------------------------------------------------------------------------------


def folder_with(src: Path, model_file: Path, dest: Path) -> Path:
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns("*.onnx"))
    shutil.copy(model_file, dest / FILE)
    return dest


def pytorch_labels(texts: list[str]) -> np.ndarray:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(CHECKPOINT))
    model = AutoModelForSequenceClassification.from_pretrained(str(CHECKPOINT)).eval()
    out = []
    with torch.no_grad():
        for t in texts:
            out.append(int(model(**tok(t, return_tensors="pt", truncation=True)).logits.argmax(-1)))
    return np.array(out)


def quality(folder: Path, texts: list[str], gold: np.ndarray, torch_labels: np.ndarray) -> dict:
    from onnxpipe._for_export import AutoTokenizer, OnnxModel
    from onnxpipe._manifest import load_manifest
    from onnxpipe_export._invariance import alone_and_batched, score_invariance

    model = OnnxModel(load_manifest(folder, verify=False), precision="int8")
    alone, batched = alone_and_batched(model, AutoTokenizer.from_pretrained(folder, verify=False), texts, "logits")
    labels = alone.argmax(-1)
    return {
        "accuracy": round(float((labels == gold).mean()), 4),
        "agreement_with_pytorch": round(float((labels == torch_labels).mean()), 4),
        "batch_invariance": score_invariance(alone, batched),
    }


def speed_rounds(folders: dict[str, Path], texts: list[str], rounds: int, calls: int) -> dict[str, dict]:
    import onnxpipe

    pipes = {k: onnxpipe.pipeline("text-classification", model=str(f), verify=False) for k, f in folders.items()}
    requests = [texts[i : i + BATCH] for i in range(0, len(texts), BATCH)]
    seed: dict[str, list[float]] = {k: [] for k in pipes}
    sps: dict[str, list[float]] = {k: [] for k in pipes}
    fastest = dict.fromkeys(pipes, float("inf"))  # the quickest single call: least disturbed by other processes
    names = list(pipes)
    for rnd in range(rounds):
        for k in names[rnd % len(names) :] + names[: rnd % len(names)]:
            pipe = pipes[k]
            for _ in range(30):
                pipe(SEED)
            lat = []
            for _ in range(calls):
                t = time.perf_counter()
                pipe(SEED)
                lat.append(time.perf_counter() - t)
            seed[k].append(1e3 * float(np.median(lat)))
            fastest[k] = min(fastest[k], 1e3 * min(lat))
            pipe(requests[0])
            t = time.perf_counter()
            for r in requests:
                pipe(r)
            sps[k].append(len(texts) / (time.perf_counter() - t))
    return {
        k: {
            "batch1_ms": {
                "best": round(min(seed[k]), 4),
                "median": round(statistics.median(seed[k]), 4),
                "fastest_call": round(fastest[k], 4),
            },
            "b32_sps": {"best": round(max(sps[k]), 1), "median": round(statistics.median(sps[k]), 1)},
            "rounds": {"batch1_ms": seed[k], "b32_sps": sps[k]},
        }
        for k in pipes
    }


def markdown(report: dict) -> str:
    prov, m = report["provenance"], report["provenance"]["machine"]
    lines = [
        "# Fewer-operator int8 prototypes judged as recipes (bench/op_candidates.py)",
        "",
        f"Command: `{prov['command']}`; commit `{prov['git']['commit']}`; {prov['date']}.  ",
        f"CPU: {m['cpu']}, {m['cores']} cores, {' '.join(m['simd_flags'])}; load average "
        f"{report['loadavg']['start']} at start, {report['loadavg']['end']} at end.  ",
        f"onnxpipe.pipeline, default execution; {report['rounds']} alternated rounds, best round (median). "
        "Batch 1: the seed sentence, p50. Requests of 32: SST-2 dev, sentences/s. Quality: SST-2 dev (872), "
        "each sentence alone; invariance: alone vs the runtime's padded batches.",
        "",
        "| file | nodes onnxruntime runs | batch 1 ms | fastest batch-1 call ms | requests of 32 /s | SST-2 acc | "
        "agrees with PyTorch | invariance: max dP, flips |",
        "|---|---|---|---|---|---|---|---|",
    ]
    files = dict(sorted(report["files"].items(), key=lambda kv: (kv[0] != "shipped int8", kv[0])))
    for k, r in files.items():
        s, q = r["speed"], r["quality"]
        inv = q["batch_invariance"]
        lines.append(
            f"| {k} | {r.get('ort_nodes', '-')} | {s['batch1_ms']['best']:.3f} ({s['batch1_ms']['median']:.3f}) | "
            f"{s['batch1_ms'].get('fastest_call', '-')} | "
            f"{s['b32_sps']['best']:.0f} ({s['b32_sps']['median']:.0f}) | {q['accuracy']:.4f} | "
            f"{100 * q['agreement_with_pytorch']:.1f} % | {inv['max_score_change']:.3g}, {inv['label_flips']} |"
        )
    if report.get("note"):
        lines += ["", report["note"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--rounds", type=int, default=ROUNDS)
    ap.add_argument("--calls", type=int, default=CALLS)
    ap.add_argument("--sentences", type=int, help="first N SST-2 dev sentences (default all 872)")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--note", default="")
    argv = sys.argv[1:] if argv is None else list(argv)
    a = ap.parse_args(argv)
    import onnx

    from op_profile import session

    prov = provenance(__file__, argv)
    load_start = round(os.getloadavg()[0], 2)
    texts, gold_list = read_sst2(limit=a.sentences)
    gold = np.array(gold_list)
    torch_labels = pytorch_labels(texts)
    wanted = [v for v in a.variants.split(",") if v]
    with tempfile.TemporaryDirectory(prefix="op-candidates-") as tmp_name:
        tmp = Path(tmp_name)
        built = build_all(MODEL / FILE, tmp)
        files = {"shipped int8": MODEL / FILE, **{k: built[k][0] for k in wanted}}
        folders = {k: folder_with(MODEL, p, tmp / f"folder-{i}") for i, (k, p) in enumerate(files.items())}
        report_files: dict[str, dict] = {}
        for k, p in files.items():
            optimized = tmp / f"opt-{len(report_files)}.onnx"
            session(p, optimized=optimized)
            report_files[k] = {
                "ort_nodes": len(onnx.load(str(optimized), load_external_data=False).graph.node),
                "quality": quality(folders[k], texts, gold, torch_labels),
            }
        for k, s in speed_rounds(folders, texts, a.rounds, a.calls).items():
            report_files[k]["speed"] = s
    report = {
        "provenance": prov,
        "rounds": a.rounds,
        "sentences": len(texts),
        "files": report_files,
        "loadavg": {"start": load_start, "end": round(os.getloadavg()[0], 2)},
        "note": a.note,
    }
    print(write_report(a.out, "op_candidates", report, markdown))
    return 0


if __name__ == "__main__":
    sys.exit(main())
