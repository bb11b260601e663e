"""Batch invariance of a model file: does a text get the same answer alone as inside a padded batch?

Dynamic int8 quantizes each matmul's activations with one scale per batch tensor, so a text's result depends on
its batch-mates. Every text is run alone and inside the batches the runtime's pipelines cut
(``plan_batches`` with the pipelines' defaults), calling ``OnnxModel.run`` on the padded feeds directly: the
figures describe the FILE, whatever execution mode the runtime later picks for it (it runs dynamic int8 files
one sequence at a time precisely because they fail this check).

    >>> alone, batched = alone_and_batched(model, tokenizer, texts, "logits")
    >>> score_invariance(alone, batched)
    {'max_score_change': 0.0, 'p99_score_change': 0.0, 'label_flips': 0}
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from onnxpipe._for_export import DEFAULT_BATCH_TOKENS, AutoTokenizer, OnnxModel, plan_batches

PIPELINE_BATCH_SIZE = 32  # the pipelines' default batch_size (onnxpipe._pipelines._base.Pipeline)
# What counts as invariant: a probability moves by at most this much and no label flips (classification), or
# every pooled vector keeps at least this cosine with its alone twin (embeddings).
MAX_SCORE_CHANGE = 1e-3
MIN_COSINE = 0.9999

Rows = Callable[[np.ndarray, dict[str, np.ndarray]], np.ndarray]  # (output, feeds) -> one row per text


def runtime_batches(lengths: list[int]) -> list[list[int]]:
    """Indices of ``lengths`` grouped as a pipeline call over all of them groups them."""
    return list(plan_batches(lengths, batch_size=PIPELINE_BATCH_SIZE, max_batch_tokens=DEFAULT_BATCH_TOKENS))


def alone_and_batched(
    model: OnnxModel, tokenizer: AutoTokenizer, texts: list[str], output: str, rows: Rows | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``output`` for every text run alone, and run inside the runtime's padded batches, in text order.
    ``rows(out, feeds)`` reduces an output to one row per text (pooling); the default takes it as it is."""
    rows = rows or (lambda out, feeds: out)
    singles = [tokenizer([t], truncation=True, return_tensors="np") for t in texts]
    alone = np.concatenate([rows(model.run(model.feeds(s), [output])[0], s) for s in singles])
    batched = np.empty_like(alone)
    for idx in runtime_batches([int(s["input_ids"].shape[1]) for s in singles]):
        feeds = tokenizer([texts[i] for i in idx], padding=True, truncation=True, return_tensors="np")
        batched[idx] = rows(model.run(model.feeds(feeds), [output])[0], feeds)
    return alone, batched


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max(-1, keepdims=True))
    out: np.ndarray = z / z.sum(-1, keepdims=True)
    return out


def score_invariance(alone_logits: np.ndarray, batched_logits: np.ndarray) -> dict[str, Any]:
    """Per text, the largest change of any class probability between alone and batched; its max and p99 over
    the texts, and how many labels (argmax) differ."""
    change = np.abs(softmax(alone_logits.astype(np.float64)) - softmax(batched_logits.astype(np.float64))).max(-1)
    return {
        "max_score_change": float(change.max()),
        "p99_score_change": float(np.quantile(change, 0.99)),
        "label_flips": int((alone_logits.argmax(-1) != batched_logits.argmax(-1)).sum()),
    }


def vector_invariance(alone: np.ndarray, batched: np.ndarray) -> dict[str, Any]:
    """Cosine between each text's pooled vector alone and batched: the worst and the mean."""
    a, b = alone.astype(np.float64), batched.astype(np.float64)
    cos = (a * b).sum(-1) / np.clip(np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1), 1e-12, None)
    return {"min_cosine": float(cos.min()), "mean_cosine": float(cos.mean())}


def is_invariant(figures: dict[str, Any]) -> bool:
    """Whether ``score_invariance`` or ``vector_invariance`` figures meet the invariance gate."""
    if "min_cosine" in figures:
        return bool(figures["min_cosine"] >= MIN_COSINE)
    return bool(figures["max_score_change"] <= MAX_SCORE_CHANGE and figures["label_flips"] == 0)
