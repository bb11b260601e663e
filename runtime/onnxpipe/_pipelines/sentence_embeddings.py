"""sentence-embeddings: pooled, L2-normalised vectors, computed as sentence-transformers computes them."""

from __future__ import annotations

from typing import Any

import numpy as np

from .._manifest import Pooling
from ._base import Pipeline

_POOLING = ("mean", "cls", "max")


class SentenceEmbeddingsPipeline(Pipeline):
    """One vector per input (float32, shape (hidden,)); pooling and normalisation come from the manifest.

    Example:
        >>> embed = pipeline("sentence-embeddings")
        >>> vectors = embed(["A man is eating food.", "A man is eating pasta."])
        >>> float(vectors[0] @ vectors[1])   # cosine similarity (vectors are unit length)
    """

    task = "sentence-embeddings"
    output_names = ("last_hidden_state",)

    def __call__(self, inputs: Any, **kwargs: Any) -> Any:
        single, items = self._normalize(inputs)
        rows = list(self.iter(items, **kwargs))
        if single:
            return rows[0]
        return np.stack(rows) if rows else np.zeros((0, self.model.manifest.hidden_size or 0), np.float32)

    def _sanitize_parameters(self, normalize: bool | None = None, truncation: bool = True, **kwargs: Any):
        if kwargs:
            raise TypeError(f"unexpected arguments {sorted(kwargs)}; sentence-embeddings takes normalize, truncation")
        pooling = self.model.manifest.pooling or Pooling()
        if pooling.mode not in _POOLING:
            raise ValueError(f"manifest pooling mode {pooling.mode!r} is not one of {list(_POOLING)}")
        norm = pooling.normalize if normalize is None else normalize
        return {"truncation": truncation}, {"mode": pooling.mode, "normalize": bool(norm)}

    def postprocess(self, outputs, feeds, mode="mean", normalize=True) -> list[Any]:
        hidden = outputs["last_hidden_state"].astype(np.float32)
        mask = feeds["attention_mask"][:, :, None].astype(np.float32)
        if mode == "mean":
            vectors = (hidden * mask).sum(axis=1) / np.clip(mask.sum(axis=1), 1e-9, None)
        elif mode == "cls":
            vectors = hidden[:, 0]
        else:
            vectors = np.where(mask > 0, hidden, -1e9).max(axis=1)
        if normalize:
            vectors = vectors / np.clip(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12, None)
        return list(vectors)
