"""BatchEncoding: what the tokenizer returns, a dict of model inputs with transformers' fast-tokenizer methods
(word_ids, tokens, the token/word/char alignments), read from the Rust ``Encoding`` of each row."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
from tokenizers import Encoding


class CharSpan(NamedTuple):
    """Characters ``start`` to ``end`` (excluded) of the text, as transformers' ``CharSpan``."""

    start: int
    end: int


class TokenSpan(NamedTuple):
    """Tokens ``start`` to ``end`` (excluded) of an encoding, as transformers' ``TokenSpan``."""

    start: int
    end: int


class BatchEncoding(dict[str, Any]):
    """A dict of model inputs, as transformers returns them; keys are also attributes. ``encodings`` holds
    the Rust ``Encoding`` of each text (``word_ids(i)``, ``tokens(i)`` read them), as fast tokenizers do."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    @property
    def encodings(self) -> list[Encoding] | None:
        encodings: list[Encoding] | None = self.__dict__.get("_encodings")
        return encodings

    def _encoding(self, batch_index: int) -> Encoding:
        if not self.encodings:
            raise ValueError("this BatchEncoding was not made by the tokenizer, so it has no encodings")
        return self.encodings[batch_index]

    def word_ids(self, batch_index: int = 0) -> list[int | None]:
        """The word index of each token (None for special tokens), as transformers."""
        word_ids: list[int | None] = self._encoding(batch_index).word_ids
        return word_ids

    def tokens(self, batch_index: int = 0) -> list[str]:
        tokens: list[str] = self._encoding(batch_index).tokens
        return tokens

    def sequence_ids(self, batch_index: int = 0) -> list[int | None]:
        sequence_ids: list[int | None] = self._encoding(batch_index).sequence_ids
        return sequence_ids

    @property
    def is_fast(self) -> bool:
        return self.encodings is not None

    @property
    def n_sequences(self) -> int | None:
        """1 for texts, 2 for pairs (of row 0), as transformers."""
        encodings = self.encodings
        return encodings[0].n_sequences if encodings else None

    def convert_to_tensors(self, tensor_type: str | None = None, prepend_batch_axis: bool = False) -> BatchEncoding:
        """Lists to int64 numpy arrays in place (``"np"``), as transformers; torch's ``"pt"`` is refused."""
        if tensor_type is None:
            return self
        if tensor_type != "np":
            raise ValueError(f"tensor_type={tensor_type!r}: onnxpipe runs without torch/tensorflow; use 'np'")
        for key, value in list(self.items()):
            if not isinstance(value, np.ndarray):
                array = np.array([value] if prepend_batch_axis else value)
                if array.dtype == object:
                    raise ValueError(f"{key} has rows of different lengths; pad them first (padding=True)")
                self[key] = array.astype(np.int64) if array.dtype.kind in "iub" or array.size == 0 else array
        return self

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, int):  # as transformers: an int picks the Encoding of that row
            return self._encoding(key)
        return super().__getitem__(key)

    # transformers' alignment methods: (batch_index, i), or just (i) for row 0; None where nothing maps.
    def _at(self, first: int, second: int | None) -> tuple[Encoding, int]:
        return (self._encoding(0), first) if second is None else (self._encoding(first), second)

    def token_to_word(self, batch_or_token_index: int, token_index: int | None = None) -> int | None:
        e, i = self._at(batch_or_token_index, token_index)
        word: int | None = e.token_to_word(i)
        return word

    def token_to_sequence(self, batch_or_token_index: int, token_index: int | None = None) -> int | None:
        e, i = self._at(batch_or_token_index, token_index)
        sequence: int | None = e.token_to_sequence(i)
        return sequence

    def token_to_chars(self, batch_or_token_index: int, token_index: int | None = None) -> CharSpan | None:
        e, i = self._at(batch_or_token_index, token_index)
        span = e.token_to_chars(i)
        return None if span is None else CharSpan(*span)

    def word_to_tokens(
        self, batch_or_word_index: int, word_index: int | None = None, sequence_index: int = 0
    ) -> TokenSpan | None:
        e, i = self._at(batch_or_word_index, word_index)
        span = e.word_to_tokens(i, sequence_index)
        return None if span is None else TokenSpan(*span)

    def word_to_chars(
        self, batch_or_word_index: int, word_index: int | None = None, sequence_index: int = 0
    ) -> CharSpan:
        e, i = self._at(batch_or_word_index, word_index)
        return CharSpan(*e.word_to_chars(i, sequence_index))

    def char_to_token(self, batch_or_char_index: int, char_index: int | None = None, sequence_index: int = 0) -> int:
        e, i = self._at(batch_or_char_index, char_index)
        token: int = e.char_to_token(i, sequence_index)
        return token

    def char_to_word(self, batch_or_char_index: int, char_index: int | None = None, sequence_index: int = 0) -> int:
        e, i = self._at(batch_or_char_index, char_index)
        word: int = e.char_to_word(i, sequence_index)
        return word
