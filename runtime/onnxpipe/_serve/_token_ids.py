"""Token ids as input (OpenAI's ``"input": [[101, 2023, 102]]``): the ids, as given, become the encodings the
pipelines run, without the tokenizer reading any text.

The pipelines run ``tokenizers.Encoding`` objects, which only a tokenizer makes: a word-level tokenizer whose
word ``"i"`` is id ``i`` encodes the ids as pre-split words into exactly those ids (type ids 0, no special
tokens added: the ids are the whole input, as /tokenize returns them).
"""

from __future__ import annotations

import functools
from typing import Any

from tokenizers import Encoding, Tokenizer
from tokenizers.models import WordLevel

from ..errors import InputTooLongError
from ._limits import RequestError


@functools.lru_cache(maxsize=8)
def _identity(vocab_size: int) -> Tokenizer:
    return Tokenizer(WordLevel({str(i): i for i in range(vocab_size)}, unk_token="0"))


def is_ids(item: Any) -> bool:
    """Whether one input is a list of token ids (a non-empty list of ints, bools excluded)."""
    return isinstance(item, list) and bool(item) and all(isinstance(t, int) and not isinstance(t, bool) for t in item)


def encode_ids(
    tokenizer: Any, rows: list[list[int]], offset: int, truncation: bool
) -> list[tuple[None, list[Encoding]]]:
    """The pipelines' prepared inputs for ``rows`` of ids: each id checked against the vocabulary, each row
    against the served maximum (cut to it with ``truncation``, else InputTooLongError)."""
    size, limit = tokenizer.backend.get_vocab_size(), tokenizer.model_max_length
    for i, row in enumerate(rows):
        bad = next((t for t in row if not 0 <= t < size), None)
        if bad is not None:
            raise RequestError(
                422,
                f"input {offset + i} has token id {bad}, outside this model's vocabulary of {size}; send ids of "
                "its own tokenizer (POST /tokenize), or the text",
                param="input",
            )
        if len(row) > limit and not truncation:
            raise InputTooLongError(f"input {offset + i} has {len(row)} tokens; the model accepts at most {limit}")
    words = [[str(t) for t in row[:limit]] for row in rows]
    encodings = _identity(size).encode_batch(words, is_pretokenized=True, add_special_tokens=False)
    return [(None, [e]) for e in encodings]
