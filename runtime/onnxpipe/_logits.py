"""transformers' logits processors that encoder-decoder checkpoints configure, in numpy and in transformers' order:
repetition penalty, no-repeat n-grams, bad words, min length, min new tokens, forced BOS, forced EOS.

``seqs`` is each row's decoder sequence so far, start token included (what transformers' processors see);
``scores`` the next-token scores (logits for greedy and sampling, log-probabilities for beam search), changed
in place and returned. Banned tokens get -inf, as in transformers.
"""

from __future__ import annotations

import numpy as np

from ._sampling import penalize
from ._seq2seq_config import GenerationSettings


class LogitsProcessors:
    """The processors ``settings`` asks for, applied by calling the object.

    Example:
        >>> scores = LogitsProcessors(settings)(seqs, logits)
    """

    def __init__(self, settings: GenerationSettings):
        self.s = settings
        single = [w[0] for w in settings.bad_words_ids if len(w) == 1]
        self.banned_always = np.asarray(single, dtype=np.int64)
        self.banned_after = [w for w in settings.bad_words_ids if len(w) > 1]

    def __call__(self, seqs: np.ndarray, scores: np.ndarray) -> np.ndarray:
        s = self.s
        cur_len = seqs.shape[1]
        penalty = s.sampling.repetition_penalty
        if penalty != 1.0:
            seen = np.zeros(scores.shape, dtype=bool)
            seen[np.arange(len(seqs))[:, None], seqs] = True
            penalize(scores, seen, penalty)
        if s.no_repeat_ngram_size and cur_len + 1 >= s.no_repeat_ngram_size:
            self._no_repeat(seqs, scores, s.no_repeat_ngram_size)
        if len(self.banned_always):
            scores[:, self.banned_always] = -np.inf
        for word in self.banned_after:
            prefix = np.asarray(word[:-1])
            if cur_len >= len(prefix):
                hit = (seqs[:, cur_len - len(prefix) :] == prefix).all(axis=1)
                scores[hit, word[-1]] = -np.inf
        eos = list(s.eos_token_id)
        if eos and (cur_len < s.min_length or cur_len - 1 < s.min_new_tokens):
            scores[:, eos] = -np.inf
        if s.forced_bos_token_id is not None and cur_len == 1:
            scores[:] = -np.inf
            scores[:, s.forced_bos_token_id] = 0
        if s.forced_eos_token_id and cur_len == s.max_length - 1:
            scores[:] = -np.inf
            scores[:, list(s.forced_eos_token_id)] = 0
        return scores

    @staticmethod
    def _no_repeat(seqs: np.ndarray, scores: np.ndarray, n: int) -> None:
        """Ban every token that would complete an n-gram the row already holds (fairseq's rule)."""
        cur_len = seqs.shape[1]
        for r, row in enumerate(seqs.tolist()):
            tail = tuple(row[cur_len + 1 - n :])
            banned = [row[i + n - 1] for i in range(cur_len - n + 1) if tuple(row[i : i + n - 1]) == tail]
            if banned:
                scores[r, banned] = -np.inf
