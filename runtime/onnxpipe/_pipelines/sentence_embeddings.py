"""sentence-embeddings: pooled, L2-normalised vectors, computed as sentence-transformers computes them."""

from __future__ import annotations

from functools import cached_property
from typing import Any

import numpy as np
from tokenizers import Encoding

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

    def _finish(self, results: list[Any], single: bool, inputs: Any, kwargs: dict[str, Any]) -> Any:
        if single:
            return results[0]
        if results:
            return np.stack(results)
        return np.zeros((0, self.model.manifest.hidden_size or 0), np.float32)

    @cached_property
    def _pooling(self) -> Pooling:
        # Checked when called (a cached_property that raises caches nothing), so a bad manifest fails each call.
        pooling = self.model.manifest.pooling or Pooling()
        if pooling.mode not in _POOLING:
            raise ValueError(f"manifest pooling mode {pooling.mode!r} is not one of {list(_POOLING)}")
        return pooling

    def _sanitize_parameters(
        self, normalize: bool | None = None, truncation: bool = True, **kwargs: Any
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        if kwargs:
            raise TypeError(f"unexpected arguments {sorted(kwargs)}; sentence-embeddings takes normalize, truncation")
        norm = self._pooling.normalize if normalize is None else normalize
        return {"truncation": truncation}, {"normalize": bool(norm)}

    def postprocess(self, outputs: dict[str, np.ndarray], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        hidden = outputs["last_hidden_state"].astype(np.float32)
        mask = feeds["attention_mask"][:, :, None].astype(np.float32)
        mode = self._pooling.mode
        if mode == "mean":
            vectors = (hidden * mask).sum(axis=1) / np.clip(mask.sum(axis=1), 1e-9, None)
        elif mode == "cls":
            vectors = hidden[:, 0]
        else:
            vectors = np.where(mask > 0, hidden, -1e9).max(axis=1)
        return list(vectors)

    def gather(  # type: ignore[override]  # takes only the gather params its _sanitize_parameters returns
        self,
        info: None,
        encodings: list[Encoding],
        rows: list[np.ndarray],
        normalize: bool = True,
    ) -> np.ndarray:
        vector = rows[0]
        if normalize:  # the batch expression on one row: bit for bit what a batch of rows would give
            vector = (vector[None] / np.clip(np.linalg.norm(vector[None], axis=1, keepdims=True), 1e-12, None))[0]
        return vector
