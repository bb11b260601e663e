"""How ``onnxpipe predict`` reads lines and writes results, the same way for a file and for stdin.

Input is read as bytes and split on ``\\n`` only (one trailing ``\\r`` dropped), then decoded as UTF-8 with
``errors="replace"``: a bare ``\\r`` inside a line stays in it, so line N of the output always answers line N
of the input, and one invalid byte becomes U+FFFD instead of aborting the run. A line is read in bounded
pieces and only its start is kept (see :func:`keep_chars`), so a 1 GB line costs megabytes, not gigabytes.
Output is strict JSON; on SIGTERM/SIGHUP the results already written are flushed before exiting.
"""

from __future__ import annotations

import codecs
import json
import os
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any, NoReturn

_PIECE = 1 << 16  # bytes read at a time while looking for the end of a line
MIN_KEEP_CHARS = 1 << 20


def keep_chars(max_length: int) -> int:
    """Characters of a line worth keeping: the tokenizer keeps at most ``max_length`` tokens and a token is at
    least one character, so 64 x max_length (at least 1 MiB) leaves every kept token, and the word the cut
    falls in, unchanged."""
    return max(MIN_KEEP_CHARS, 64 * max_length)


def read_lines(stream: Any, keep: int) -> Iterator[str]:
    """The lines of a binary stream as text, each cut to its first ``keep`` characters.

    Example:
        >>> list(read_lines(io.BytesIO(b"a\\rb\\r\\nc\\xff\\n"), keep=10))
        ['a\\rb', 'c\\ufffd']
    """
    while True:
        piece = stream.readline(_PIECE)
        if not piece:
            return
        if piece.endswith(b"\n"):  # the usual case: the whole line in one piece
            line = piece[:-2] if piece.endswith(b"\r\n") else piece[:-1]
            yield line.decode("utf-8", errors="replace")[:keep]
        else:
            yield _long_line(stream, piece, keep)


def _long_line(stream: Any, piece: bytes, keep: int) -> str:
    # Decoded piece by piece (a character may straddle two pieces) until `keep` characters are in hand; the
    # rest of the line is read and dropped, so memory stays near `keep` whatever the line's length.
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    parts, chars, whole = [], 0, True
    while piece:
        last = piece.endswith(b"\n")
        if chars < keep:
            text = decoder.decode(piece[:-1] if last else piece)
            parts.append(text)
            chars += len(text)
        else:
            whole = False
        if last:
            break
        piece = stream.readline(_PIECE)
    if whole:
        parts.append(decoder.decode(b"", final=True))
    line = "".join(parts)
    if whole and line.endswith("\r"):  # the \r of a \r\n that fell in another piece
        line = line[:-1]
    return line[:keep]


class InputLines:
    """Lines of a binary stream, read when iterated; ``max_length`` is set once the model is loaded."""

    def __init__(self, stream: Any):
        self.stream = stream
        self.max_length = 512

    def __iter__(self) -> Iterator[str]:
        return read_lines(self.stream, keep_chars(self.max_length))


def binary_stdin() -> Any:
    buffer = getattr(sys.stdin, "buffer", None)
    return buffer if buffer is not None else _TextAsBytes(sys.stdin)


class _TextAsBytes:
    """A replaced sys.stdin without a byte layer (an embedding app, io.StringIO) read as UTF-8 bytes, a line at
    a time as the producer delivers them (reading it whole first would answer nothing before the input ends)."""

    def __init__(self, text: Any):
        self._lines = iter(text)
        self._rest = b""

    def readline(self, size: int = -1) -> bytes:
        if not self._rest:
            self._rest = next(self._lines, "").encode("utf-8", errors="surrogatepass")
        cut = len(self._rest) if size < 0 else size
        newline = self._rest.find(b"\n", 0, cut)
        cut = newline + 1 if newline >= 0 else cut
        piece, self._rest = self._rest[:cut], self._rest[cut:]
        return piece


class OutputError(OSError):
    """stdout cannot take the results (closed, full disk, I/O error)."""


def json_line(result: Any, index: int, default: Callable[[Any], Any]) -> str:
    try:
        return json.dumps(result, default=default, ensure_ascii=False, allow_nan=False) + "\n"
    except ValueError:  # NaN or infinity: not JSON, and not an answer either
        raise ValueError(
            f"the result for input {index} holds a non-finite number (NaN or infinity), which is not "
            "JSON: the model produced it; check the model folder (onnxpipe info) or use "
            "--precision fp32"
        ) from None


def write(out: Any, text: str) -> None:
    if out is None:
        raise OutputError("stdout is closed; redirect it to a file or a pipe")
    try:
        out.write(text)
    except BrokenPipeError:  # the reader left (`| head`): not an error, handled by main
        raise
    except OSError as e:
        raise OutputError(f"cannot write the results to stdout ({e.strerror or e})") from e


def silence_stdout() -> None:
    """Point fd 1 at /dev/null so that Python's flush at exit finds nowhere to fail (no "Exception ignored")."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, ValueError, OSError):  # None, closed, or not a real file (a test's capture)
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


class Terminated(BaseException):
    """SIGTERM or SIGHUP arrived; a BaseException so that no ``except Exception`` in a pipeline swallows it."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


@contextmanager
def flush_on_signals() -> Iterator[None]:
    """Turn SIGTERM/SIGHUP into :class:`Terminated` while results stream, so the caller can flush what is
    written and exit 128 + signal; without it the buffered tail of the finished results is lost."""

    def handler(signum: int, frame: FrameType | None) -> NoReturn:
        raise Terminated(signum)

    previous: dict[int, Callable[[int, FrameType | None], Any] | int | None] = {}
    for sig in (signal.SIGTERM, getattr(signal, "SIGHUP", None)):
        if sig is not None:
            try:
                previous[sig] = signal.signal(sig, handler)
            except ValueError:  # not the main thread: leave the signals alone
                pass
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
