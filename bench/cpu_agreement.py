"""Does one model folder give the same answers on other CPUs? Native against emulated AVX2 x86 and ARM64.

    python bench/cpu_agreement.py [--model models/minilm-sst2] [--precision int8] [--sentences 400] [--chunk 100]

Runs the first N sentences of SST-2 dev (a classifier: P(positive) or the last class's probability) or of STS-B
dev's first column (a feature-extraction folder: mean-pooled embeddings) through the runtime natively, under
``qemu-x86_64 -cpu Haswell`` (AVX2, no AVX-512 / VNNI) and under ``qemu-aarch64 -cpu neoverse-n1`` (ARM64 with the
int8 dot product), each text alone on one thread, ``--chunk`` texts per process (tests/emulated/cpus.py, which also
provisions QEMU, the ARM64 userland and its wheels on first use). The ARM64 side runs an older onnxruntime (the
emulator's pin), so it is also compared with this CPU running that release (``native-pinned``). Writes
bench/results/cpu_agreement.json: per emulated CPU against its reference (``against_reference``: native, or
native-pinned for ARM64) and against native (``against_native``; for native-pinned that is the release's own
effect), label flips and max / p99 / mean |change of P| (classifiers) or per-sentence cosine's p1 / min / mean
(embeddings); n; the host's CPU flags line; the emulators' versions; the onnxruntime each side ran; the
folder manifest's own validation figures (accuracy, or STS-B Spearman of int8 and fp32).

Emulation is 10-100x slower than the host (the AVX2 int8 kernels the most): 400 sentences of MiniLM take tens
of minutes on a 2-core machine.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
import time
from pathlib import Path

import numpy as np

from provenance import provenance, rel

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "tests" / "emulated"))
import cpus  # noqa: E402

SST2_DEV = ROOT.parent / "shared" / "data" / "sst2" / "dev.tsv"
STSB_DEV = ROOT.parent / "shared" / "data" / "stsb" / "dev.csv"


def _shared(path: Path) -> str:
    """``../shared/...`` as the checkout sees it (not resolved: ../shared may be a link to elsewhere)."""
    return str(Path("..") / path.relative_to(ROOT.parent))


def texts_for(kind: str, n: int) -> tuple[list[str], str]:
    if kind == "classification":
        with open(SST2_DEV, encoding="utf-8", newline="") as f:
            rows = [r["content"] for r in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)]
        return rows[:n], _shared(SST2_DEV)
    with open(STSB_DEV, encoding="utf-8", newline="") as f:  # genre, source, year, id, score, s1, s2; no header
        rows = [r[5] for r in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)]
    return rows[:n], _shared(STSB_DEV)


def compare(kind: str, native: np.ndarray, other: np.ndarray) -> dict:
    if kind == "classification":
        delta = np.abs(native[:, -1] - other[:, -1])
        return {
            "flips": int((native.argmax(1) != other.argmax(1)).sum()),
            "max_abs_dp": float(delta.max()),
            "p99_abs_dp": float(np.percentile(delta, 99)),
            "mean_abs_dp": float(delta.mean()),
        }
    cos = (native * other).sum(1) / (np.linalg.norm(native, axis=1) * np.linalg.norm(other, axis=1))
    return {
        "p1_cosine": float(np.percentile(cos, 1)),
        "min_cosine": float(cos.min()),
        "mean_cosine": float(cos.mean()),
    }


def host_cpu_flags() -> str:
    """What ``grep -o 'avx512_vnni\\|avx2' /proc/cpuinfo`` finds, once each."""
    found = re.findall(r"\b(avx512_vnni|avx2)\b", Path("/proc/cpuinfo").read_text(encoding="utf-8"))
    return " ".join(sorted(set(found)))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=ROOT / "models" / "minilm-sst2")
    ap.add_argument("--precision", default="int8")
    ap.add_argument("--sentences", type=int, default=400)
    ap.add_argument("--cpus", default="haswell,arm64", help="emulated CPUs to compare with native (cpus.CPUS)")
    ap.add_argument(
        "--chunk",
        type=int,
        default=100,
        help="texts per emulated process: each process must finish within the tier's stuck-run limit (cpus.TIMEOUT_S)",
    )
    ap.add_argument("--out", type=Path, default=HERE / "results" / "cpu_agreement.json")
    a = ap.parse_args(argv)
    if a.chunk < 1:
        ap.error(f"--chunk {a.chunk}: at least 1 text per process")
    others = [c for c in a.cpus.split(",") if c]
    unknown = [c for c in others if c not in cpus.REFERENCE]
    if unknown:
        ap.error(f"--cpus {unknown}: choose from {sorted(cpus.REFERENCE)}")
    manifest = json.loads((a.model / "manifest.json").read_text(encoding="utf-8"))
    if a.precision not in manifest["variants"]:
        ap.error(f"--precision {a.precision}: {a.model} has {sorted(manifest['variants'])}")
    kind = "embeddings" if manifest["task"] == "feature-extraction" else "classification"
    texts, data = texts_for(kind, a.sentences)
    task = "embeddings" if kind == "embeddings" else "probabilities"
    report: dict = {
        "provenance": provenance(__file__, argv),
        "model": rel(a.model),
        "precision": a.precision,
        "kind": kind,
        "data": data,
        "n": len(texts),
        "texts_per_process": a.chunk,
        "host_cpu_flags": host_cpu_flags(),
        "emulators": cpus.emulator_versions(),
        "emulated_cpus": {"haswell": cpus.HASWELL_CPU, "arm64": cpus.ARM64_CPU},
        # the exporter's quality figures of the folder (accuracy, or STS-B Spearman int8 vs fp32), copied so
        # agreement and quality of one export sit in one file
        "folder_validation": manifest.get("validation_data"),
        "sides": {},
        "against_native": {},
        "against_reference": {},
    }
    outputs = {}
    references = [r for r in dict.fromkeys(cpus.REFERENCE[c] for c in others) if r != "native"]
    for cpu in ["native", *references, *others]:
        start = time.perf_counter()
        parts = []
        for i in range(0, len(texts), a.chunk):
            parts.append(cpus.run_with_versions(cpu, a.model, a.precision, texts[i : i + a.chunk], task))
            outputs[cpu] = np.concatenate([p[0] for p in parts])
            done = len(outputs[cpu])
            # "n" of a side still running: how many of the first texts the figures cover so far
            report["sides"][cpu] = {**parts[0][1], "seconds": round(time.perf_counter() - start, 1), "n": done}
            if cpu != "native":
                report["against_native"][cpu] = compare(kind, outputs["native"][:done], outputs[cpu])
            if cpu in cpus.REFERENCE:
                reference = cpus.REFERENCE[cpu]
                report["against_reference"][cpu] = {
                    "reference": reference,
                    "n": done,
                    **compare(kind, outputs[reference][:done], outputs[cpu]),
                }
            # after every chunk, not only at the end: an emulated side takes up to an hour, and the texts done so
            # far are worth keeping when it is stopped
            a.out.parent.mkdir(parents=True, exist_ok=True)
            a.out.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        print(cpu, report["sides"][cpu], report["against_reference"].get(cpu, ""), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
