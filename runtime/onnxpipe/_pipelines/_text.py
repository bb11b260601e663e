"""Helpers the task pipelines share: special-token ids from the manifest, decoding exactly as transformers'
fast tokenizers decode (Rust decode, then the optional English space clean-up), and the score functions."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .._manifest import Manifest, TokenizerConfig
from .._tokenizer import clean_up
from ..errors import ManifestError


def tokenizer_config(manifest: Manifest, *required: str) -> TokenizerConfig:
    """The manifest's ``tokenizer_config`` (special-token ids, clean-up flag); raise if a required key is missing."""
    config = manifest.tokenizer_config or TokenizerConfig()
    missing = [k for k in required if config.get(k) is None]
    if missing:
        raise ManifestError(
            f"{manifest.folder}/manifest.json has no tokenizer_config {missing} (the checkpoint's tokenizer "
            f"defines no such token, or the folder predates them); {manifest.hint()}"
        )
    return config


def softmax(x: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, shifted by the maximum so large logits cannot overflow."""
    if x.ndim == 1:  # one row (a classifier's logits): the same reductions without the axis bookkeeping
        e = np.exp(x - x.max())
        row: np.ndarray = e / e.sum()
        return row
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    out: np.ndarray = e / e.sum(axis=-1, keepdims=True)
    return out


def sigmoid(x: np.ndarray) -> np.ndarray:
    out: np.ndarray = 1.0 / (1.0 + np.exp(-x))
    return out


class Decoder:
    """``decode`` and ``convert_tokens_to_string`` of one frozen Rust tokenizer, as transformers calls them."""

    def __init__(self, backend: Any, clean_up_spaces: bool):
        self.backend = backend
        self.clean_up_spaces = bool(clean_up_spaces)

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        text = self.backend.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)
        return clean_up(text) if self.clean_up_spaces else text

    def tokens_to_string(self, tokens: list[str]) -> str:
        decoder = self.backend.decoder
        return decoder.decode(tokens) if decoder is not None else " ".join(tokens)
