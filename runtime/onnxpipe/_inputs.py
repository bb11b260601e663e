"""Input checks shared by the tokenizer and every pipeline: types named by index, unencodable text repaired."""

from __future__ import annotations

from typing import Any, Sequence


def _repair(text: str) -> str:
    # Lone surrogates cannot be encoded as UTF-8 (the Rust tokenizer would raise); valid surrogate pairs are
    # re-joined, lone ones become U+FFFD, as a UTF-8 decoder would do.
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def clean_text(text: Any, index: int = 0, what: str = "input") -> str:
    if not isinstance(text, str):
        raise TypeError(
            f"{what} {index} is {type(text).__name__} ({text!r:.60}); expected str. "
            "Convert it (e.g. str(x) or bytes.decode()) or drop it."
        )
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            text = _repair(text)
    return text


def clean_texts(texts: Sequence[Any], what: str = "input") -> list[str]:
    """Return the texts as str, repaired; raise TypeError naming the first bad index and its type."""
    return [clean_text(t, i, what) for i, t in enumerate(texts)]
