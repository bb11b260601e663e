"""Beam search for encoder-decoders, a numpy port of transformers' vectorised ``_beam_search`` (4.5x): the same
float32 arithmetic, the same top-k candidate rule (2 x num_beams, more with several eos ids), length penalty,
early stopping (True, False, "never") and the same heuristic for when no running beam can beat the finished ones,
so that its tokens are transformers' tokens.
"""

from __future__ import annotations

import numpy as np

from ._logits import LogitsProcessors
from ._seq2seq import DecoderCache, Seq2SeqModel, trim
from ._seq2seq_config import GenerationSettings

_NEG = np.float32(-1.0e9)


def _topk(x: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` largest values per row, largest first; ties to the lower index: what a stable
    argsort of ``-x`` starts with. A full sort of a row of beams x vocabulary scores costs ~10 ms a step at
    t5-small's 32128 tokens, so wide rows are cut down first: every value above the k-th largest, then the
    lowest indices of those equal to it, sorted by (value descending, index)."""
    n = x.shape[-1]
    if n <= 8 * k:
        return np.argsort(-x, axis=-1, kind="stable")[:, :k]
    out = np.empty((len(x), k), dtype=np.int64)
    for r, row in enumerate(x):
        kth = np.partition(row, n - k)[n - k]
        above = np.flatnonzero(row > kth)
        ties = np.flatnonzero(row == kth)[: k - len(above)]
        picked = np.concatenate([above, ties])
        out[r] = picked[np.lexsort((picked, -row[picked]))]
    return out


def _gather(x: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """``x[b, idx[b, j], ...]`` for every batch b: transformers' ``_gather_beams``."""
    return np.take_along_axis(x, idx.reshape(idx.shape + (1,) * (x.ndim - 2)), axis=1)


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    out: np.ndarray = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    return out.astype(np.float32)


def beam_search(
    model: Seq2SeqModel, hidden: np.ndarray, mask: np.ndarray, settings: GenerationSettings
) -> list[list[list[int]]]:
    """``num_return_sequences`` sequences per input row of ``hidden`` (the encoder output, one row per input),
    best first: the generated tokens after the start token, up to and including eos."""
    s = settings
    batch, beams = len(hidden), s.num_beams
    # Each input's encoder output, once per beam (transformers' repeat_interleave of the encoder outputs).
    cache = DecoderCache(model, np.repeat(hidden, beams, axis=0), np.repeat(mask, beams, axis=0))
    processors = LogitsProcessors(s)
    eos = np.asarray(s.eos_token_id, dtype=np.int64)
    keep = max(2, 1 + len(eos)) * beams
    top_beams = np.zeros(keep, dtype=bool)
    top_beams[:beams] = True
    max_length, prompt = s.max_length, 1
    fill = s.pad_token_id if s.pad_token_id else (int(eos[0]) if len(eos) else -1)  # transformers' `pad or eos`

    running = np.full((batch, beams, max_length), fill, dtype=np.int64)
    running[:, :, 0] = s.decoder_start_token_id
    sequences = running.copy()
    running_scores = np.zeros((batch, beams), dtype=np.float32)
    running_scores[:, 1:] = _NEG
    scores = np.full((batch, beams), _NEG, dtype=np.float32)
    finished = np.zeros((batch, beams), dtype=bool)
    improvable = np.ones((batch, 1), dtype=bool)
    cur_len = 1
    logits = cache.first(running[:, :, :1].reshape(batch * beams, 1))
    while True:
        flat = running[:, :, :cur_len].reshape(batch * beams, cur_len)
        log_probs = processors(flat, _log_softmax(logits))
        vocab = log_probs.shape[-1]
        log_probs = (log_probs.reshape(batch, beams, vocab) + running_scores[:, :, None]).reshape(batch, -1)

        # c. the best `keep` continuations over all beams of an input
        top = _topk(log_probs, keep)
        top_scores = np.take_along_axis(log_probs, top, axis=1)
        from_beam, token = top // vocab, top % vocab
        top_seqs = _gather(running, from_beam)
        top_seqs[:, :, cur_len] = token

        # d. which of them end here (an eos token, or the length limit)
        hits = np.isin(token, eos) | (cur_len + 1 >= max_length)

        # e. the best `beams` unfinished ones continue
        open_scores = top_scores + hits.astype(np.float32) * _NEG
        nxt = _topk(open_scores, beams)
        running = _gather(top_seqs, nxt)
        running_scores = np.take_along_axis(open_scores, nxt, axis=1)
        source_beam = np.take_along_axis(from_beam, nxt, axis=1)

        # f. finished ones among the top `beams` join the finished set if they beat it
        just_done = hits & top_beams[None, :]
        done_scores = top_scores / np.float32((cur_len + 1 - prompt) ** s.length_penalty)
        full = finished.all(axis=-1, keepdims=True) & (s.early_stopping is True)
        done_scores = done_scores + full.astype(np.float32) * _NEG
        done_scores = done_scores + (~improvable).astype(np.float32) * _NEG
        done_scores = done_scores + (~just_done).astype(np.float32) * _NEG
        merged_scores = np.concatenate([scores, done_scores], axis=1)
        best = _topk(merged_scores, beams)
        sequences = _gather(np.concatenate([sequences, top_seqs], axis=1), best)
        scores = np.take_along_axis(merged_scores, best, axis=1)
        finished = np.take_along_axis(np.concatenate([finished, just_done], axis=1), best, axis=1)

        cur_len += 1
        # the early-stop heuristic: can the best running beam still beat the worst finished one?
        if s.early_stopping == "never" and s.length_penalty > 0.0:
            best_len = max_length - prompt
        else:
            best_len = cur_len - prompt
        best_possible = running_scores[:, :1] / np.float32(best_len**s.length_penalty)
        worst = np.where(finished, scores.min(axis=1, keepdims=True), _NEG)
        improvable = improvable & (best_possible > worst).any(axis=-1, keepdims=True)
        stop = not improvable.any() or (finished.all() and s.early_stopping is True) or hits.all()
        if stop:
            break
        rows = (source_beam + np.arange(batch)[:, None] * beams).reshape(-1)
        cache.reorder(rows)
        logits = cache.step(running[:, :, cur_len - 1].reshape(-1))
    n = s.num_return_sequences
    return [[trim(sequences[b, i, 1:], s.eos_token_id) for i in range(n)] for b in range(batch)]
