"""Token ids as input (OpenAI's ``"input": [[101, 2023, 102]]``): the ids, as given, become the encodings the
pipelines run, without the tokenizer reading any text.

The pipelines run ``tokenizers.Encoding`` objects, which only a tokenizer makes: a word-level tokenizer whose
word ``"i"`` is id ``i`` encodes the ids as pre-split words into exactly those ids (type ids 0, no special
tokens added: the ids are the whole input, as /tokenize returns them).

Ids of another tokenizer would run silently into garbage: LangChain's ``OpenAIEmbeddings`` by default tokenizes
with tiktoken (OpenAI's vocabulary) and sends those ids. Such a row is refused (400): an id outside the
vocabulary, or, for a model whose tokenizer wraps every input in special tokens (BERT's [CLS] ... [SEP]), a row
without them; tiktoken's ids never carry this model's special tokens at both ends.
"""

from __future__ import annotations

import functools
from typing import Any

from tokenizers import Encoding, Tokenizer
from tokenizers.models import WordLevel

from ..errors import InputTooLongError
from ._limits import RequestError

# What the refusals tell a LangChain user, whose client sent the ids without being asked to.
LANGCHAIN = (
    "LangChain's OpenAIEmbeddings sends tiktoken's ids (OpenAI's vocabulary) unless it is created with "
    "check_embedding_ctx_length=False"
)


@functools.lru_cache(maxsize=16)
def _wrapping(tokenizer: Any) -> tuple[list[int], list[int]]:
    """The special ids the tokenizer puts before and after every single input ([CLS], [SEP] for BERT)."""
    with_specials = tokenizer.backend.encode("a", add_special_tokens=True).ids
    bare = tokenizer.backend.encode("a", add_special_tokens=False).ids
    for start in range(len(with_specials) - len(bare) + 1):
        if with_specials[start : start + len(bare)] == bare:
            return with_specials[:start], with_specials[start + len(bare) :]
    return [], []


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
    head, tail = _wrapping(tokenizer)
    for i, row in enumerate(rows):
        bad = next((t for t in row if not 0 <= t < size), None)
        if bad is not None:
            raise RequestError(
                400,
                f"input {offset + i} has token id {bad}, outside this model's vocabulary of {size}: ids of another "
                f"tokenizer? {LANGCHAIN}. Send the text, or this model's ids (POST /tokenize)",
                "BadRequest",
                param="input",
            )
        if (head or tail) and not (row[: len(head)] == head and row[len(row) - len(tail) :] == tail):
            names = [tokenizer.backend.decode(ids, skip_special_tokens=False) for ids in (head, tail)]
            raise RequestError(
                400,
                f"input {offset + i} does not start with {names[0]} {head} and end with {names[1]} {tail}, as this "
                f"model's tokenization of every input does: ids of another tokenizer? {LANGCHAIN}. Send the text, "
                "or this model's ids with its special tokens, as POST /tokenize returns them",
                "BadRequest",
                param="input",
            )
        if len(row) > limit and not truncation:
            raise InputTooLongError(f"input {offset + i} has {len(row)} tokens; the model accepts at most {limit}")
    words = [[str(t) for t in row[:limit]] for row in rows]
    encodings = _identity(size).encode_batch(words, is_pretokenized=True, add_special_tokens=False)
    return [(None, [e]) for e in encodings]
