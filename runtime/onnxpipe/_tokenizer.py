"""AutoTokenizer: transformers' call shape on top of the Rust ``tokenizers`` library.

The Rust tokenizer is never reconfigured after it is built (reconfiguring while another thread encodes is
what raises "Already borrowed"): each truncation setting gets its own frozen copy, built under a lock. The
two every pipeline uses (the model maximum, no truncation) are kept; others live in a small LRU, so request
arguments passed through (max_length, stride, doc_stride) cannot grow memory without limit (~6 MiB per copy
of a BERT vocabulary); a miss costs one copy (~80 ms for minilm-sst2's tokenizer). Padding happens here in
numpy, so the same encodings can be padded per length-sorted batch.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from typing import Any, Sequence

import numpy as np
from tokenizers import Encoding, Tokenizer

from ._inputs import as_text_list, clean_texts, int_option, truncation_flag
from ._manifest import Manifest, load_manifest, safe_path
from ._resolve import resolve_model
from .errors import IntegrityError, ModelLoadError

_MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
# With truncation, a text longer than _CHARS_PER_TOKEN x the model maximum is tokenized from its start only,
# cut _MARGIN tokens after the maximum (see AutoTokenizer._head).
_CHARS_PER_TOKEN = 32
_MARGIN = 64
# Frozen copies kept for truncation settings other than the two pinned ones. 8 covers a pipeline's own
# settings (QA windows, NER stride, a few max_length values) with room; beyond that the least recently used
# copy is dropped (threads still encoding with it keep it alive until they finish).
_RECENT_COPIES = 8


class BatchEncoding(dict):
    """A dict of model inputs, as transformers returns them; keys are also attributes."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


class AutoTokenizer:
    """Tokenizer of a model folder, called like transformers' tokenizers.

    Example:
        >>> tok = AutoTokenizer.from_pretrained("minilm-sst2")
        >>> tok(["I hate this so much!"], padding=True, truncation=True, return_tensors="np")["input_ids"]
        array([[ 101, 1045, 5223, 2023, 2061, 2172,  999,  102]])
    """

    def __init__(self, tokenizer_json: str, max_length: int, input_names: Sequence[str], pad_token_id: int = 0):
        self.model_max_length = int(max_length)
        self.model_input_names = [n for n in _MODEL_INPUTS if n in input_names]
        self.pad_token_id = int(pad_token_id)
        # Parsed once; the JSON text is not kept (a 500 MB tokenizer.json is 500 MB more for the process's
        # life). Further copies are cloned from this one when a setting first needs them.
        self._base = self._configure(Tokenizer.from_str(tokenizer_json), self.model_max_length)
        self._specials = (self._base.num_special_tokens_to_add(False), self._base.num_special_tokens_to_add(True))
        self._pinned: dict[Any, Tokenizer] = {self.model_max_length: self._base}  # read without the lock
        self._recent: OrderedDict[Any, Tokenizer] = OrderedDict()
        self._lock = threading.Lock()

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, verify: bool = True) -> "AutoTokenizer":
        """Load the tokenizer of a model folder (a path, or a name such as ``"minilm-sst2"``)."""
        return cls.from_manifest(load_manifest(resolve_model(name_or_path), verify=verify))

    @classmethod
    def from_manifest(cls, manifest: Manifest) -> "AutoTokenizer":
        path = safe_path(manifest.folder, manifest.data.get("tokenizer", "tokenizer.json"))
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise IntegrityError(f"{path} is missing; {manifest.hint()}") from None
        except (OSError, UnicodeDecodeError) as e:
            raise ModelLoadError(f"cannot read {path} ({e}); {manifest.hint()}") from e
        try:
            return cls(text, manifest.max_length, manifest.inputs, manifest.data.get("pad_token_id", 0))
        except Exception as e:  # tokenizers raises a bare Exception for JSON it cannot parse
            raise ModelLoadError(f"the tokenizers library rejected {path}: {e}; {manifest.hint()}") from e

    @staticmethod
    def _configure(tok: Tokenizer, max_length: int | None, stride: int = 0,
                   strategy: str = "longest_first") -> Tokenizer:
        # Only ever called on a copy no other thread can see yet.
        tok.no_padding()
        if max_length is None:
            tok.no_truncation()
        else:
            tok.enable_truncation(max_length=max_length, stride=stride, strategy=strategy)
        return tok

    def _for(self, max_length: int | None, stride: int = 0, strategy: str = "longest_first") -> Tokenizer:
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
            tok = self._configure(Tokenizer.from_str(self._base.to_str()), max_length, stride, strategy)
            if key is None:  # untruncated: _head and tokenize need it, whatever the arguments
                self._pinned[key] = tok
            else:
                self._recent[key] = tok
                if len(self._recent) > _RECENT_COPIES:
                    self._recent.popitem(last=False)
        return tok

    def __getstate__(self) -> dict[str, Any]:
        # The lock cannot be pickled and the copies are caches: send the base tokenizer (tokenizers pickles it
        # as JSON) and rebuild the rest on the other side, so a tokenizer can go to worker processes.
        return {"base": self._base, "model_max_length": self.model_max_length,
                "model_input_names": self.model_input_names, "pad_token_id": self.pad_token_id}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(model_max_length=state["model_max_length"], model_input_names=state["model_input_names"],
                             pad_token_id=state["pad_token_id"], _base=state["base"])
        self._specials = (self._base.num_special_tokens_to_add(False), self._base.num_special_tokens_to_add(True))
        self._pinned, self._recent, self._lock = {self.model_max_length: self._base}, OrderedDict(), threading.Lock()

    @property
    def backend(self) -> Tokenizer:
        """The underlying ``tokenizers.Tokenizer`` (truncating at the model maximum). Do not reconfigure it."""
        return self._base

    def encode_batch(
        self, texts: Sequence[str], pairs: Sequence[str] | None = None, truncation: bool = True,
        max_length: int | None = None, stride: int = 0, strategy: str = "longest_first", bounded: bool = False,
        add_special_tokens: bool = True,
    ) -> list[Encoding]:
        """Encode texts (and pairs). ``bounded=True``, for callers that never read ``Encoding.overflowing``:
        a truncated text is encoded from its start only, so one huge input cannot take gigabytes (for a pair,
        the overflow the Rust tokenizer keeps grows with the product of both lengths: 1.2 GB for two texts of
        60,000 characters). The kept tokens are the same, except that when a text of a pair is cut, which of
        the two gets the odd token of an odd budget is decided on the cut text (transformers gives it to the
        longer one): a difference of one token at the end of each segment, only for pairs with a text of more
        than 32 x max_length characters."""
        if max_length is None and not stride:
            limit = self.model_max_length if truncation else None
        else:
            limit = self._limit(max_length, stride, strategy, pairs is not None) if truncation else None
        tok = self._for(limit, stride, strategy)
        if bounded and limit is not None and stride == 0:
            texts = [self._head(t, limit) for t in texts]
            pairs = None if pairs is None else [self._head(t, limit) for t in pairs]
        batch = list(texts) if pairs is None else list(zip(texts, pairs))
        return tok.encode_batch(batch, add_special_tokens=add_special_tokens)

    def _limit(self, max_length: int | None, stride: Any, strategy: str, pair: bool) -> int:
        """The truncation length for these arguments, checked: below the special tokens the Rust tokenizer
        silently does not truncate at all, and a stride it cannot fit makes it raise or panic."""
        specials = self._specials[pair]
        if max_length is not None:
            int_option("max_length", max_length, max(specials, 1), None,
                       f"the tokenizer adds {specials} special tokens, and below that it would not truncate")
        limit = min(max_length or self.model_max_length, self.model_max_length)
        if isinstance(stride, bool) or stride != 0:
            int_option("stride", stride, 0, limit - specials - 1,
                       f"windows of max_length={limit} hold {limit - specials} text tokens after {specials} special "
                       "tokens, and the stride (their overlap) must be smaller")
        return limit

    def _head(self, text: str, limit: int) -> str:
        """The start of ``text`` that gives the same first ``limit`` tokens as the whole of it.

        Truncation keeps the first tokens but the Rust tokenizer still encodes (and keeps, as overflow) the
        whole text: an 11 MB input took 1.6 GB. A cut changes only the tokens of the word it falls in, so we
        cut ``_MARGIN`` tokens after the limit, found by encoding a start of the text that grows 4x at a time
        (mostly whitespace, or huge words, have few tokens per character); at worst that is the whole text.
        """
        cap = _CHARS_PER_TOKEN * limit
        while len(text) > cap:
            encoding = self._for(None).encode(text[:cap], add_special_tokens=False)
            if len(encoding.ids) >= limit + _MARGIN:
                return text[: encoding.offsets[limit + _MARGIN - 1][1]]
            cap *= 4
        return text

    def pad(self, encodings: Sequence[Encoding], pad_to: int | None = None) -> BatchEncoding:
        """Right-pad encodings into int64 arrays, to the longest one or to ``pad_to``."""
        lengths = [len(e.ids) for e in encodings]
        width = max(lengths, default=0) if pad_to is None else max(pad_to, max(lengths, default=0))
        n = len(encodings)
        ids = np.full((n, width), self.pad_token_id, dtype=np.int64)
        mask = np.zeros((n, width), dtype=np.int64)
        types = np.zeros((n, width), dtype=np.int64) if "token_type_ids" in self.model_input_names else None
        for i, (e, length) in enumerate(zip(encodings, lengths)):
            ids[i, :length] = e.ids
            mask[i, :length] = 1
            if types is not None:
                types[i, :length] = e.type_ids
        out = BatchEncoding(input_ids=ids, attention_mask=mask)
        if types is not None:
            out["token_type_ids"] = types
        return BatchEncoding((k, out[k]) for k in self.model_input_names if k in out)

    def __call__(
        self, text: str | Sequence[str], text_pair: str | Sequence[str] | None = None, padding: bool | str = False,
        truncation: bool | str | None = None, max_length: int | None = None, return_tensors: str | None = None,
        **unsupported: Any,
    ) -> BatchEncoding:
        if unsupported:
            raise TypeError(f"unsupported tokenizer arguments {sorted(unsupported)}; supported: padding, truncation, "
                            "max_length, return_tensors, text_pair")
        if return_tensors not in (None, "np"):
            raise ValueError(f"return_tensors={return_tensors!r}: onnxpipe returns numpy only; use return_tensors='np'")
        if max_length is not None:  # 0 or -1 would otherwise mean "the model maximum" or an OverflowError
            int_option("max_length", max_length, 1, None, "or None for the model maximum")
        single, texts = as_text_list(text, "text")
        pairs = None if text_pair is None else as_text_list(text_pair, "text_pair")[1]
        if pairs is not None and len(pairs) != len(texts):
            raise ValueError(f"got {len(texts)} texts and {len(pairs)} text pairs; they must match")
        texts = clean_texts(texts, "text")
        if pairs is not None:
            pairs = clean_texts(pairs, "text_pair")
        # As transformers: an unset truncation with max_length truncates only when not padding.
        truncate = (truncation_flag(truncation) if truncation is not None
                    else max_length is not None and padding in (False, "do_not_pad"))
        # bounded: overflow is never returned here (and a pair's overflow grows with the product of the lengths)
        encodings = self.encode_batch(texts, pairs, truncation=truncate, max_length=max_length, bounded=True)
        if padding in (False, "do_not_pad"):
            if return_tensors == "np" and len({len(e.ids) for e in encodings}) > 1:
                raise ValueError("inputs have different lengths; pass padding=True to return_tensors='np'")
            pad_to = None
        elif padding in (True, "longest"):
            pad_to = None
        elif padding == "max_length":
            pad_to = max_length or self.model_max_length
        else:
            raise ValueError(f"padding={padding!r}: use True/'longest', 'max_length' or False")
        if padding in (False, "do_not_pad") and return_tensors is None:
            out = BatchEncoding(input_ids=[e.ids for e in encodings], attention_mask=[e.attention_mask for e in encodings])
            if "token_type_ids" in self.model_input_names:
                out["token_type_ids"] = [e.type_ids for e in encodings]
            out = BatchEncoding((k, out[k]) for k in self.model_input_names)
        else:
            out = self.pad(encodings, pad_to)
            if return_tensors is None:
                out = BatchEncoding((k, v.tolist()) for k, v in out.items())
        if single and return_tensors is None:
            out = BatchEncoding((k, v[0]) for k, v in out.items())
        return out

    def num_special_tokens_to_add(self, pair: bool = False) -> int:
        """How many special tokens the tokenizer adds to one text (or to a pair), as in transformers."""
        return self._specials[bool(pair)]

    def tokenize(self, text: str) -> list[str]:
        return self._for(None).encode(text, add_special_tokens=False).tokens

    def convert_ids_to_tokens(self, ids: Sequence[int]) -> list[str]:
        return [self._base.id_to_token(int(i)) for i in ids]

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return self._base.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def __repr__(self) -> str:
        return f"AutoTokenizer(max_length={self.model_max_length}, inputs={self.model_input_names})"
