"""Input checks shared by the tokenizer and every pipeline: types named by index, unencodable text repaired.

The policy (docs/reliability.md, "What each kind of input does"): any ``str`` is a valid input, including "" and text no
UTF-8 encoder accepts (lone surrogates become U+FFFD); anything else is a ``TypeError`` naming its index and
type. We repair rather than refuse text because it usually comes from sources nobody controls (logs, scraped
pages, ``surrogateescape``-decoded file names), and one bad character should not fail a batch of thousands.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

# transformers' TruncationStrategy values that mean "cut at the limit" / "do not cut". The pair-specific
# strategies ("only_first", "only_second") are read before this by the tasks that take them.
_TRUNCATE = {True: True, "longest_first": True, False: False, "do_not_truncate": False}


def _repair(text: str) -> str:
    # Lone surrogates cannot be encoded as UTF-8 (the Rust tokenizer would raise); valid surrogate pairs are
    # re-joined, lone ones become U+FFFD, as a UTF-8 decoder would do.
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def clean_text(text: object, index: int = 0, what: str = "input") -> str:
    """Return ``text`` as a str the tokenizer accepts; raise TypeError naming ``what index`` and the type.

    >>> clean_text("caf\\udce9") == "caf\\ufffd"
    True
    """
    if not isinstance(text, str):
        hint = (
            "nested lists are not inputs; for a text pair pass {'text': ..., 'text_pair': ...}"
            if isinstance(text, (list, tuple))
            else "convert it (e.g. str(x) or bytes.decode()) or drop it"
        )
        raise TypeError(f"{what} {index} is {type(text).__name__} ({text!r:.60}); expected str: {hint}.")
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            text = _repair(text)
    return text


def clean_texts(texts: Sequence[Any], what: str = "input") -> list[str]:
    """Return the texts as str, repaired; raise TypeError naming the first bad index and its type."""
    return [clean_text(t, i, what) for i, t in enumerate(texts)]


def clean_words(words: Any, index: int = 0, what: str = "text") -> list[str]:
    """One pre-tokenized input (``is_split_into_words=True``): a list of str, each repaired as ``clean_text``;
    TypeError naming the input, the word and its type otherwise."""
    if not isinstance(words, (list, tuple)):
        raise TypeError(
            f"{what} {index} is {type(words).__name__} ({words!r:.60}); with is_split_into_words=True an input "
            "is a list of words (str)"
        )
    return [clean_text(w, j, f"{what} {index}, word") for j, w in enumerate(words)]


def as_text_list(inputs: Any, what: str = "text") -> tuple[bool, list[Any]]:
    """(was a single str, the inputs as a list) for a str or a list/tuple; TypeError naming the type otherwise."""
    if isinstance(inputs, str):
        return True, [inputs]
    if isinstance(inputs, (list, tuple)):
        return False, list(inputs)
    raise TypeError(
        f"{what} must be a str or a list of str, got {type(inputs).__name__} ({inputs!r:.60}). "
        "Wrap one text in a list, convert other sequences with list(...), or stream an iterable with pipe.iter(...)."
    )


def truncation_flag(value: Any) -> bool:
    """Map transformers' truncation values (True/False, "longest_first", "do_not_truncate") to a bool."""
    if isinstance(value, (bool, str)) and value in _TRUNCATE:
        return _TRUNCATE[value]
    pairs = " ('only_first'/'only_second' cut one text of a pair: text-classification takes them)"
    raise ValueError(
        f"truncation={value!r} is not supported; use True (or 'longest_first') to cut inputs at the model's "
        "maximum, or False (or 'do_not_truncate') to raise InputTooLongError instead"
        + (pairs if value in ("only_first", "only_second") else "")
    )


def int_option(name: str, value: Any, minimum: int = 1, maximum: int | None = None, hint: str = "") -> int:
    """``value`` as an int within ``minimum..maximum``; ValueError naming ``name``, the value and the range.

    bool is refused although it is an int (``max_length=True`` is a mistake, not 1), and so are floats and
    strings: numeric options pass through to onnxruntime and Rust, where a wrong type fails far from its cause.

    >>> int_option("batch_size", 8)
    8
    """
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, np.integer))
        or not (minimum <= value and (maximum is None or value <= maximum))
    ):
        valid = f"an int from {minimum} to {maximum}" if maximum is not None else f"an int >= {minimum}"
        raise ValueError(f"{name}={value!r} ({type(value).__name__}); use {valid}{' (' + hint + ')' if hint else ''}")
    return int(value)
