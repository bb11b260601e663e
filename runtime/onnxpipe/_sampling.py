"""Choosing the next token from logits, in numpy: greedy, or sampling with temperature, top-k and top-p, after a
repetition penalty, in the order transformers' ``generate`` applies them (penalty, temperature, top-k, top-p).

Sampling draws from a ``numpy.random.Generator`` seeded by the caller: the same seed gives the same text
(not the text PyTorch's sampler gives; its random stream differs).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NoReturn

import numpy as np

from .errors import GenerationArgumentError

_INVALID = "{name}={value!r} is invalid; use {valid}"
# Bounds that keep every logit finite: logits (|x| < 1e5) divided by the temperature in float64, and scaled by
# the penalty in float32 (max 3.4e38). transformers takes any positive number and computes inf and NaN with them.
MIN_TEMPERATURE = 1e-6
PENALTY_RANGE = (1e-4, 1e4)


def _number(x: Any) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool) and math.isfinite(x)


@dataclass(frozen=True)
class Sampling:
    """How the next token is chosen. ``do_sample=False`` is greedy (argmax) and ignores the other knobs.

    Example:
        >>> Sampling(do_sample=True, temperature=0.7, top_k=50, top_p=0.9, seed=0).check()
    """

    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 50  # transformers' default; 0 turns it off
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    seed: int | None = None

    def check(self) -> None:
        """Raise GenerationArgumentError (a ValueError) naming the bad setting and its valid range."""

        def refuse(name: str, value: Any, valid: str) -> NoReturn:
            raise GenerationArgumentError(_INVALID.format(name=name, value=value, valid=valid))

        if not _number(self.temperature) or not self.temperature >= MIN_TEMPERATURE:
            refuse(
                "temperature",
                self.temperature,
                f"a finite number >= {MIN_TEMPERATURE:g} (lower is more deterministic; do_sample=False for greedy)",
            )
        if not isinstance(self.top_k, int) or isinstance(self.top_k, bool) or self.top_k < 0:
            refuse("top_k", self.top_k, "an int >= 0 (0: no top-k filter)")
        if not _number(self.top_p) or not 0 < self.top_p <= 1:
            refuse("top_p", self.top_p, "a number in (0, 1]")
        low, high = PENALTY_RANGE
        rp = self.repetition_penalty
        if not _number(rp) or not low <= rp <= high:
            refuse(
                "repetition_penalty", rp, f"a number from {low:g} to {high:g} (1.0: none; above 1 discourages repeats)"
            )
        if self.seed is not None and (not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0):
            refuse("seed", self.seed, "a non-negative int or None")


def penalize(logits: np.ndarray, seen: np.ndarray, penalty: float) -> None:
    """transformers' repetition penalty, in place: seen tokens' logits divided by ``penalty`` (multiplied when
    negative), so a penalty > 1 always makes them less likely."""
    if penalty == 1.0:
        return
    chosen = logits[seen]
    logits[seen] = np.where(chosen < 0, chosen * penalty, chosen / penalty)


def _filter_top_k(logits: np.ndarray, k: int) -> None:
    if 0 < k < logits.shape[-1]:
        kth = np.partition(logits, -k, axis=-1)[:, -k, None]
        logits[logits < kth] = -np.inf


def _filter_top_p(logits: np.ndarray, p: float) -> None:
    # Keep the smallest set of likeliest tokens whose probability sums to at least p (always the top one).
    if p >= 1.0:
        return
    order = np.argsort(-logits, axis=-1, kind="stable")
    ranked = np.take_along_axis(logits, order, axis=-1)
    probs = np.exp(ranked - ranked[:, :1])
    probs /= probs.sum(axis=-1, keepdims=True)
    before = np.cumsum(probs, axis=-1) - probs  # probability of the tokens ranked above each one
    drop = before >= p
    drop[:, 0] = False
    rows = np.nonzero(drop)
    logits[rows[0], order[rows]] = -np.inf


def choose(logits: np.ndarray, sampling: Sampling, rng: np.random.Generator | None) -> np.ndarray:
    """Next token per row of ``logits`` (batch, vocabulary), which it may modify. Greedy ties go to the
    lowest id, as torch.argmax."""
    if not sampling.do_sample:
        greedy: np.ndarray = np.argmax(logits, axis=-1)
        return greedy
    if rng is None:
        raise ValueError("sampling needs a random generator (pass seed=... or let the pipeline make one)")
    scores = logits.astype(np.float64, copy=False) / sampling.temperature
    _filter_top_k(scores, sampling.top_k)
    _filter_top_p(scores, sampling.top_p)
    probs = np.exp(scores - scores.max(axis=-1, keepdims=True))
    cdf = np.cumsum(probs, axis=-1)
    draws = rng.random(len(cdf))[:, None] * cdf[:, -1:]
    picked: np.ndarray = np.minimum((cdf <= draws).sum(axis=-1), logits.shape[-1] - 1)  # rounding at the top
    return picked


def generator(seed: int | None) -> np.random.Generator:
    return np.random.default_rng(seed)


def from_config(config: dict[str, Any], **overrides: Any) -> Sampling:
    """Sampling settings from a generation_config dict (the folder's defaults) and the caller's overrides."""
    names = ("do_sample", "temperature", "top_k", "top_p", "repetition_penalty", "seed")
    merged = {n: config[n] for n in names if config.get(n) is not None}
    merged.update({n: v for n, v in overrides.items() if v is not None})
    sampling = Sampling(**merged)
    sampling.check()
    return sampling
