"""Workloads: named lists of requests (each request a list of texts) that every engine gets unchanged.

A ``sst2-bN`` workload sends the 872 SST-2 dev sentences as requests of N consecutive sentences, in file
order, so every engine sees the same batches; ``sst2-stream`` hands the whole list over in one call and lets
each engine batch it its own way (batch size 32), which is where onnxpipe's length-sorted batching shows.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

SEED = "I've been waiting for a HuggingFace course my whole life."
SEED2 = [SEED, "I hate this so much!"]
SST2_DEV = Path(__file__).resolve().parents[2] / "shared" / "data" / "sst2" / "dev.tsv"


@dataclass
class Workload:
    name: str
    requests: list[list[str]]
    batch_size: int  # the batch size an engine is told to use (sst2-stream: its own batching)
    labels: list[int] | None = None  # gold labels, request order flattened (SST-2 only)

    @property
    def sentences(self) -> int:
        return sum(len(r) for r in self.requests)


def read_sst2(path: Path = SST2_DEV, limit: int | None = None) -> tuple[list[str], list[int]]:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    rows = rows[:limit] if limit else rows
    return [r["content"] for r in rows], [int(r["label"]) for r in rows]


def synthetic(tokens: int) -> str:
    """A text of exactly ``tokens`` WordPiece tokens with [CLS] and [SEP] ("hello" is one token, uncased)."""
    return " ".join(["hello"] * (tokens - 2))


def build(names: list[str], sst2_limit: int | None = None) -> list[Workload]:
    texts, labels = read_sst2(limit=sst2_limit)
    out = []
    for name in names:
        if name == "seed1":
            out.append(Workload(name, [[SEED]], 1))
        elif name == "seed2":
            out.append(Workload(name, [list(SEED2)], 2))
        elif name.startswith("sst2-b"):
            b = int(name[len("sst2-b") :])
            out.append(Workload(name, [texts[i : i + b] for i in range(0, len(texts), b)], b, labels))
        elif name == "sst2-stream":
            out.append(Workload(name, [list(texts)], 32, labels))
        elif name.startswith("syn"):  # synN: one input of N tokens; synN-bB: B of them in one request
            tokens, _, batch = name[3:].partition("-b")
            b = int(batch or 1)
            out.append(Workload(name, [[synthetic(int(tokens))] * b], b))
        else:
            raise ValueError(f"unknown workload {name!r}; valid: seed1, seed2, sst2-bN, sst2-stream, synN, synN-bB")
    return out
