"""The encoding rules under AutoTokenizer: truncation, the bounds on a huge input, and padding into batches.

The Rust tokenizer is never reconfigured after it is built (reconfiguring while another thread encodes is
what raises "Already borrowed"): each truncation setting gets its own frozen copy, built under a lock. The
two every pipeline uses (the model maximum, no truncation) are kept; others live in a small LRU, so request
arguments passed through (max_length, stride, doc_stride) cannot grow memory without limit (~6 MiB per copy
of a BERT vocabulary); a miss costs one copy (~80 ms for minilm-sst2's tokenizer). The pipelines' batches are
padded here in numpy (``pad_encodings``), so the same encodings can be padded per length-sorted batch.
AutoTokenizer (``_tokenizer.py``) is transformers' call surface over these rules.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np
from tokenizers import Encoding, Tokenizer

from ._batch_encoding import BatchEncoding
from ._inputs import int_option, truncation_flag
from .errors import InputTooLongError

STRATEGIES = ("longest_first", "only_first", "only_second")  # transformers' TruncationStrategy values that cut
# With truncation, a text longer than _CHARS_PER_TOKEN x the model maximum is tokenized from its start only,
# cut _MARGIN tokens after the maximum (see Encoder.head).
_CHARS_PER_TOKEN = 32
_MARGIN = 64
# Frozen copies kept for truncation settings other than the two pinned ones. 8 covers a pipeline's own
# settings (QA windows, NER stride, a few max_length values) with room; beyond that the least recently used
# copy is dropped (threads still encoding with it keep it alive until they finish).
_RECENT_COPIES = 8


def check_split_into_words(backend: Tokenizer) -> None:
    """Refuse pre-tokenized input where transformers does: a byte-level BPE tokenizer (RoBERTa, GPT-2, BART)
    without add_prefix_space would glue each word to the one before."""
    state = json.loads(backend.pre_tokenizer.__getstate__()) if backend.pre_tokenizer else {}
    if state.get("type") == "ByteLevel" and not state.get("add_prefix_space"):
        raise ValueError(
            "is_split_into_words=True: this byte-level tokenizer (RoBERTa / GPT-2 style) has no "
            "add_prefix_space, and transformers refuses pre-tokenized input for it too; pass the words joined "
            "into one text, or export from a checkpoint whose tokenizer was saved with add_prefix_space=True"
        )


def _configure(tok: Tokenizer, max_length: int | None, stride: int = 0, strategy: str = "longest_first") -> Tokenizer:
    # Only ever called on a copy no other thread can see yet.
    tok.no_padding()
    if max_length is None:
        tok.no_truncation()
    else:
        tok.enable_truncation(max_length=max_length, stride=stride, strategy=strategy)
    return tok


class Encoder:
    """One tokenizer.json under every truncation setting (a frozen copy each) and the rules of a call: the
    truncation length, the start of a huge input that gives the same tokens, the error for an input a strategy
    cannot cut. ``base`` truncates at ``max_length`` (the model's maximum when it was built)."""

    def __init__(self, base: Tokenizer, max_length: int):
        self.base = base
        self.specials: tuple[int, int] = (base.num_special_tokens_to_add(False), base.num_special_tokens_to_add(True))
        self._pinned: dict[Any, Tokenizer] = {max_length: base}  # read without the lock
        self._recent: OrderedDict[Any, Tokenizer] = OrderedDict()
        self._lock = threading.Lock()

    @classmethod
    def from_json(cls, tokenizer_json: str, max_length: int) -> Encoder:
        # Parsed once; the JSON text is not kept (a 500 MB tokenizer.json is 500 MB more for the process's
        # life). Further copies are cloned from this one when a setting first needs them.
        return cls(_configure(Tokenizer.from_str(tokenizer_json), max_length), max_length)

    def copy_for(self, max_length: int | None, stride: int = 0, strategy: str = "longest_first") -> Tokenizer:
        """The frozen copy that truncates at ``max_length`` (None: never) with these windows and strategy."""
        # Windows (stride > 0, kept in Encoding.overflowing) and pair strategies ("only_first",
        # "only_second") are further frozen copies, keyed by all three settings.
        key = max_length if (stride, strategy) == (0, "longest_first") else (max_length, stride, strategy)
        tok = self._pinned.get(key)
        if tok is not None:
            return tok
        with self._lock:
            tok = self._pinned.get(key) or self._recent.get(key)
            if tok is not None:
                if key in self._recent:
                    self._recent.move_to_end(key)
                return tok
            tok = _configure(Tokenizer.from_str(self.base.to_str()), max_length, stride, strategy)
            if key is None:  # untruncated: head and tokenize need it, whatever the arguments
                self._pinned[key] = tok
            else:
                self._recent[key] = tok
                if len(self._recent) > _RECENT_COPIES:
                    self._recent.popitem(last=False)
        return tok

    def limit(self, max_length: int | None, stride: Any, pair: bool, model_max_length: int) -> int:
        """The truncation length for these arguments, checked: below the special tokens the Rust tokenizer
        silently does not truncate at all, and a stride it cannot fit makes it raise or panic. A max_length
        above the model's is kept, as transformers keeps it (the pipelines check theirs against the model)."""
        specials = self.specials[pair]
        if max_length is not None:
            int_option(
                "max_length",
                max_length,
                max(specials, 1),
                None,
                f"the tokenizer adds {specials} special tokens, and below that it would not truncate",
            )
        limit = max_length or model_max_length
        if isinstance(stride, bool) or stride != 0:
            int_option(
                "stride",
                stride,
                0,
                limit - specials - 1,
                f"windows of max_length={limit} hold {limit - specials} text tokens after {specials} special "
                "tokens, and the stride (their overlap) must be smaller",
            )
        return limit

    def encode(
        self,
        texts: Sequence[Any],
        pairs: Sequence[Any | None] | None,
        limit: int | None,
        stride: int = 0,
        strategy: str = "longest_first",
        bounded: bool = False,
        add_special_tokens: bool = True,
        is_pretokenized: bool = False,
        offset: int = 0,
    ) -> list[Encoding]:
        """Encode texts (and pairs) truncated at ``limit`` (None: not at all); ``AutoTokenizer.encode_batch``
        says what ``bounded`` keeps and which inputs raise InputTooLongError."""
        tok = self.copy_for(limit, stride, strategy)
        if bounded and limit is not None and stride == 0:
            head = self.head_words if is_pretokenized else self.head
            texts = [head(t, limit) for t in texts]
            pairs = None if pairs is None else [None if t is None else head(t, limit) for t in pairs]
        batch = list(texts) if pairs is None else [t if p is None else (t, p) for t, p in zip(texts, pairs)]
        try:
            if len(batch) == 1:  # a lone text skips encode_batch's hand-off to the Rust thread pool (~25 us)
                one = batch[0]
                pair = (one, None) if not isinstance(one, tuple) else one
                encodings: list[Encoding] = [
                    tok.encode(*pair, add_special_tokens=add_special_tokens, is_pretokenized=is_pretokenized)
                ]
            else:
                encodings = tok.encode_batch(
                    batch, add_special_tokens=add_special_tokens, is_pretokenized=is_pretokenized
                )
        except Exception as e:  # the Rust tokenizer raises a bare Exception
            if "Truncation error" not in str(e):
                raise
            args = (tok, batch, add_special_tokens, is_pretokenized, strategy, limit, offset)
            raise self._truncation_error(*args) from e
        return encodings

    @staticmethod
    def _truncation_error(
        tok: Tokenizer, batch: list[Any], specials: bool, words: bool, strategy: str, limit: Any, offset: int
    ) -> InputTooLongError:
        """The error for the first input of ``batch`` that ``strategy`` cannot cut (found one by one, once the
        batch failed)."""

        def fails(item: Any) -> bool:
            try:
                tok.encode_batch([item], add_special_tokens=specials, is_pretokenized=words)
            except Exception:
                return True
            return False

        index = next((i for i, item in enumerate(batch) if fails(item)), 0)
        if not isinstance(batch[index], tuple):
            why = "has no text_pair, and 'only_second' cuts only the second text of a pair"
        else:
            which = "first" if strategy == "only_first" else "second"
            why = f"is a pair whose {which} text is too short to cut to fit ('{strategy}' cuts only that text)"
        return InputTooLongError(
            f"input {offset + index} is longer than max_length={limit} tokens and {why} (transformers raises "
            "here too); use truncation=True ('longest_first'), or a larger max_length"
        )

    def head(self, text: str, limit: int) -> str:
        """The start of ``text`` that gives the same first ``limit`` tokens as the whole of it.

        Truncation keeps the first tokens but the Rust tokenizer still encodes (and keeps, as overflow) the
        whole text: an 11 MB input took 1.6 GB. A cut changes only the tokens of the word it falls in, so we
        cut ``_MARGIN`` tokens after the limit, found by encoding a start of the text that grows 4x at a time
        (mostly whitespace, or huge words, have few tokens per character); at worst that is the whole text.
        """
        cap = _CHARS_PER_TOKEN * limit
        while len(text) > cap:
            encoding = self.copy_for(None).encode(text[:cap], add_special_tokens=False)
            if len(encoding.ids) >= limit + _MARGIN:
                return text[: encoding.offsets[limit + _MARGIN - 1][1]]
            cap *= 4
        return text

    def head_words(self, words: list[str], limit: int) -> list[str]:
        """``head`` for a list of words: the first words that give at least ``limit`` + ``_MARGIN`` tokens. Words
        are tokenized one by one, so the tokens of the first words are exactly the first tokens of all of them."""
        count = limit + _MARGIN
        while count < len(words):
            if len(self.copy_for(None).encode(words[:count], is_pretokenized=True, add_special_tokens=False)) >= (
                limit + _MARGIN
            ):
                return words[:count]
            count *= 4
        return words


def call_truncation(truncation: Any, max_length: int | None, padding: Any) -> tuple[bool, str]:
    """(truncate, strategy) of a tokenizer call's ``truncation``, as transformers reads it: a strategy name
    cuts with that strategy; True/False; unset, it truncates only with ``max_length`` and without padding."""
    if isinstance(truncation, str) and truncation in STRATEGIES:  # also transformers' TruncationStrategy
        return True, str(truncation)
    if truncation is not None:
        return truncation_flag(truncation), "longest_first"
    return max_length is not None and padding in (False, "do_not_pad"), "longest_first"


def overflow_rows(encodings: list[Encoding]) -> tuple[list[Encoding], list[int]]:
    """Every window of every encoding (itself, then its ``overflowing``), one row each, and the input each row
    came from: transformers' ``return_overflowing_tokens`` rows and ``overflow_to_sample_mapping``."""
    rows = [w for e in encodings for w in (e, *e.overflowing)]
    mapping = [i for i, e in enumerate(encodings) for _ in range(1 + len(e.overflowing))]
    return rows, mapping


def pad_encodings(
    encodings: Sequence[Encoding], pad_id: int, input_names: Sequence[str], pad_to: int | None = None
) -> BatchEncoding:
    """Right-pad ``Encoding``s into int64 arrays, to the longest one or to ``pad_to`` (the pipelines' batches),
    with the model's ``input_names`` in their order."""
    if len(encodings) == 1 and pad_to is None:  # nothing to pad: one input run alone, or a batch-1 call
        e = encodings[0]
        ids = np.array([e.ids], dtype=np.int64)
        one = {"input_ids": ids, "attention_mask": np.ones(ids.shape, dtype=np.int64)}
        if "token_type_ids" in input_names:
            one["token_type_ids"] = np.array([e.type_ids], dtype=np.int64)
        return BatchEncoding((k, one[k]) for k in input_names if k in one)
    lengths = [len(e.ids) for e in encodings]
    width = max(lengths, default=0) if pad_to is None else max(pad_to, max(lengths, default=0))
    n = len(encodings)
    ids = np.full((n, width), pad_id, dtype=np.int64)
    mask = np.zeros((n, width), dtype=np.int64)
    types = np.zeros((n, width), dtype=np.int64) if "token_type_ids" in input_names else None
    for i, (e, length) in enumerate(zip(encodings, lengths)):
        ids[i, :length] = e.ids
        mask[i, :length] = 1
        if types is not None:
            types[i, :length] = e.type_ids
    out = BatchEncoding(input_ids=ids, attention_mask=mask)
    if types is not None:
        out["token_type_ids"] = types
    return BatchEncoding((k, out[k]) for k in input_names if k in out)
