"""Text of generated tokens, piece by piece: what has been decoded for good, never half a character.

Each step decodes the row's whole output again (a few microseconds for hundreds of tokens) rather than the
new token alone, because a token's text depends on its neighbours: byte-level BPE splits multi-byte
characters across tokens (half of "é" decodes to U+FFFD), and SentencePiece decoders drop the space of the
first token only. A piece is released only when the text does not end in U+FFFD (a character still
incomplete); ``finish`` releases the rest, so the pieces always join to the full decode.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence


class TextStream:
    """One sequence's generated text, released in pieces.

    Example:
        >>> stream = TextStream(lambda ids: tokenizer.decode(ids), stop_strings=["\\n\\n"])
        >>> piece = stream.add(token)  # "" while a character is incomplete
        >>> rest = stream.finish()
    """

    def __init__(
        self, decode: Callable[[list[int]], str], stop_strings: Sequence[str] = (), hold_trailing_space: bool = False
    ):
        self.decode = decode
        self.stop_strings = tuple(stop_strings)
        # With transformers' clean-up (" ." -> "."), a trailing space may vanish later: release it only then.
        self.hold_trailing_space = hold_trailing_space
        self.tokens: list[int] = []
        self.text = ""
        self.released = 0

    def add(self, token: int) -> str:
        self.tokens.append(int(token))
        self.text = self.decode(self.tokens)
        if self.text.endswith("\ufffd"):
            return ""
        end = len(self.text.rstrip()) if self.hold_trailing_space else len(self.text)
        piece = self.text[self.released : end]
        self.released = max(self.released, end)
        return piece

    def finish(self) -> str:
        piece = self.text[self.released :]
        self.released = len(self.text)
        return piece

    @property
    def stopped(self) -> bool:
        """Whether the text so far contains a stop string (generation of this sequence should end)."""
        return any(s in self.text for s in self.stop_strings)
