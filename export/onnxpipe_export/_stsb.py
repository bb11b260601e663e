"""Embedding quality as a gate: Spearman (x100) of cosine similarity vs gold on an STS Benchmark file.

``onnxpipe export --task feature-extraction --validation-data sts-dev.csv`` scores PyTorch (the checkpoint with
the folder's pooling and truncation, i.e. what sentence-transformers computes) and every variant, batched as the
runtime's pipelines batch (plan_batches: length-sorted, padded) and one sentence at a time: dynamic int8
quantizes activations with one scale per batch, so the two differ for int8, and each variant's
``batch_invariance`` records by how much (cosine of each sentence's pooled vector alone vs batched). The export
fails when int8 falls more than INT8_MAX_DROP points below fp32 on either.
"""

from __future__ import annotations

import csv
from typing import Any

import numpy as np

from onnxpipe._for_export import AutoTokenizer, Manifest, OnnxModel
from onnxpipe.errors import ExportError, ValidationError

from ._invariance import alone_and_batched, vector_invariance

INT8_MAX_DROP = 1.0  # Spearman x100 points below fp32
SCORES = ("batched", "one_at_a_time")  # the Spearman figures of a variant, beside its batch_invariance


def read_sts(path: Any) -> tuple[list[str], list[str], np.ndarray]:
    """STS Benchmark rows: genre, file, years, id, score (0-5), sentence 1, sentence 2 (extra columns ignored)."""
    s1, s2, gold = [], [], []
    with open(path, encoding="utf-8", newline="") as f:
        for n, row in enumerate(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE), 1):
            try:
                gold.append(float(row[4]))
            except (IndexError, ValueError):
                raise ExportError(
                    f"{path} line {n}: not an STS Benchmark row (genre, file, years, id, score, "
                    "sentence 1, sentence 2, tab-separated); pass the STS-B dev.csv"
                ) from None
            s1.append(row[5])
            s2.append(row[6])
    if len(gold) < 10:
        raise ExportError(f"{path}: {len(gold)} STS pairs; a Spearman figure needs at least 10")
    return s1, s2, np.array(gold)


def spearman_x100(a: np.ndarray, b: np.ndarray) -> float:
    def ranks(x: Any) -> np.ndarray:  # average ranks for ties, as scipy.stats.spearmanr
        order = np.argsort(x, kind="mergesort")
        r = np.empty(len(x))
        r[order] = np.arange(len(x))
        _, inv, counts = np.unique(x, return_inverse=True, return_counts=True)
        sums = np.bincount(inv, weights=r)
        return sums[inv] / counts[inv]

    return round(float(np.corrcoef(ranks(a), ranks(b))[0, 1]) * 100, 2)


def _pool(hidden: np.ndarray, mask: np.ndarray, mode: str) -> np.ndarray:
    m = mask[..., None].astype(hidden.dtype)
    pooled: np.ndarray
    if mode == "cls":
        pooled = hidden[:, 0]
    elif mode == "max":
        pooled = np.where(m > 0, hidden, -np.inf).max(1)
    else:
        pooled = (hidden * m).sum(1) / np.clip(m.sum(1), 1e-9, None)
    return pooled


def _cosine_scores(vectors: dict[str, np.ndarray], s1: Any, s2: Any) -> np.ndarray:
    a = np.stack([vectors[s] for s in s1]).astype(np.float64)
    b = np.stack([vectors[s] for s in s2]).astype(np.float64)
    scores: np.ndarray = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    return scores


def _torch_vectors(ckpt: Any, texts: list[str], mode: str, max_length: int) -> dict[str, np.ndarray]:
    import torch

    out: dict[str, np.ndarray] = {}
    base = getattr(ckpt.model, "base_model", ckpt.model)  # a classifier's encoder gives the hidden states
    with torch.no_grad():
        for i in range(0, len(texts), 64):
            chunk = texts[i : i + 64]
            enc = ckpt.tokenizer(chunk, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
            hidden = base(**enc).last_hidden_state.numpy()
            out.update(zip(chunk, _pool(hidden, enc["attention_mask"].numpy(), mode)))
    return out


def sts_figures(ckpt: Any, manifest: Manifest, tokenizer: AutoTokenizer, path: Any) -> dict[str, Any]:
    """The manifest's ``validation_data`` block for an STS file; ValidationError when int8 drops > 1 point."""
    s1, s2, gold = read_sts(path)
    texts = list(dict.fromkeys(s1 + s2))
    mode = manifest.pooling.mode if manifest.pooling else "mean"
    torch_vecs = _torch_vectors(ckpt, texts, mode, manifest.max_length)
    figures: dict[str, Any] = {
        "file": str(path),
        "pairs": len(gold),
        "metric": "Spearman x100 of cosine similarity vs gold",
        "pytorch": spearman_x100(_cosine_scores(torch_vecs, s1, s2), gold),
        "variants": {},
    }
    for precision in manifest.variants:
        try:
            model = OnnxModel(manifest, device="cpu", precision=precision)
        except Exception as e:  # fp16 kernels missing on CPU: recorded by validate_variant already
            figures["variants"][precision] = {"skipped": str(e).splitlines()[0][:200]}
            continue
        alone, batched = alone_and_batched(
            model, tokenizer, texts, "last_hidden_state", lambda out, feeds: _pool(out, feeds["attention_mask"], mode)
        )
        figures["variants"][precision] = {
            "batched": spearman_x100(_cosine_scores(dict(zip(texts, batched)), s1, s2), gold),
            "one_at_a_time": spearman_x100(_cosine_scores(dict(zip(texts, alone)), s1, s2), gold),
            "batch_invariance": vector_invariance(alone, batched),
        }
    _gate(figures)
    return figures


def _gate(figures: dict[str, Any]) -> None:
    v = figures["variants"]
    if "int8" not in v or "skipped" in v["int8"]:
        return
    ref = v["fp32"] if "fp32" in v and "skipped" not in v["fp32"] else None
    base = min(ref[k] for k in SCORES) if ref else figures["pytorch"]
    worst = min(v["int8"][k] for k in SCORES)
    figures["int8_gate"] = {"max_drop": INT8_MAX_DROP, "against": "fp32" if ref else "pytorch", "met": True}
    if not worst >= base - INT8_MAX_DROP:
        figures["int8_gate"]["met"] = False
        raise ValidationError(
            f"int8 embeddings score Spearman {worst:.2f} on {figures['file']}, more than {INT8_MAX_DROP} point "
            f"below {figures['int8_gate']['against']} ({base:.2f}): the int8 recipe loses too much for this model. "
            "Export --precision fp32, or try another --int8-recipe."
        )
