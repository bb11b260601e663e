"""The server's limits and the one exception that carries an HTTP status: what a request may be, and why not.

Statuses follow text-embeddings-inference: 429 past the concurrency limit (at once, never an unbounded queue),
413 past the payload or client-batch limit, 422 for inputs the runtime's input policy refuses, 400 for a
body that is not JSON.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._pipelines._base import DEFAULT_BATCH_TOKENS

# Arrays and objects nested deeper than this are refused before parsing: every request shape here is 4 deep at
# most, and json.loads recurses once per level (5,000 levels raised RecursionError: a 500).
MAX_JSON_DEPTH = 32
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_STEP = np.zeros(256, dtype=np.int32)  # per byte: [ and { open a level, ] and } close one
_STEP[[ord("["), ord("{")]], _STEP[[ord("]"), ord("}")]] = 1, -1


@dataclass(frozen=True)
class Limits:
    """What one server accepts. ``Limits(max_concurrent_requests=64)``

    ``max_input_length`` None means each model's own maximum; a smaller value caps every model there.
    ``header_timeout``: seconds from a connection's start, or a request's first byte, to the end of its
    headers; ``body_timeout``: seconds from the end of the headers to the end of the body. Past either the
    client gets 408 and the connection closes, so a stalled upload cannot hold an admission slot.
    """

    max_batch_tokens: int = DEFAULT_BATCH_TOKENS
    max_concurrent_requests: int = 512
    max_client_batch_size: int = 32
    max_input_length: int | None = None
    payload_limit: int = 2_000_000
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    auto_truncate: bool = False  # inputs past the maximum are cut to it unless the request says truncate: false

    def __post_init__(self) -> None:
        for name in ("max_batch_tokens", "max_concurrent_requests", "max_client_batch_size", "payload_limit"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r}; use a positive integer")
        for name in ("header_timeout", "body_timeout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
                raise ValueError(f"{name}={value!r}; use a positive number of seconds")
        if self.max_input_length is not None and (
            not isinstance(self.max_input_length, int) or self.max_input_length < 1
        ):
            raise ValueError(
                f"max_input_length={self.max_input_length!r}; use a positive integer, or None for each model's maximum"
            )


class RequestError(Exception):
    """A request the server refuses, with its HTTP status and the error type the JSON body names."""

    def __init__(self, status: int, message: str, error_type: str = "Validation", param: str | None = None):
        super().__init__(message)
        self.status, self.error_type, self.param = status, error_type, param

    def body(self) -> dict[str, Any]:
        return {"error": str(self), "error_type": self.error_type}


def shutting_down() -> RequestError:
    """503 for a request the server cannot finish because it is stopping."""
    return RequestError(
        503,
        "the server is shutting down and did not finish this request (--graceful-timeout); retry on another "
        "instance or once it is back",
        "Unavailable",
    )


def check_client_batch(n: int, limits: Limits) -> None:
    """Raise 413 when one request carries more inputs than ``--max-client-batch-size``."""
    if n > limits.max_client_batch_size:
        raise RequestError(
            413,
            f"this request has {n} inputs; the server accepts at most "
            f"{limits.max_client_batch_size} per request (--max-client-batch-size). "
            "Split it into several requests.",
            "PayloadTooLarge",
        )


def json_depth(raw: bytes) -> int:
    """How deeply arrays and objects nest in ``raw`` (brackets inside strings do not count); a body with
    fewer brackets than MAX_JSON_DEPTH returns 0 at once, without looking further.

    >>> json_depth(b'{"inputs": [["a", "b"]]}'), json_depth(b"[" * 40 + b"]" * 40)
    (0, 40)
    """
    if raw.count(b"[") + raw.count(b"{") <= MAX_JSON_DEPTH:
        return 0
    steps = _STEP[np.frombuffer(_STRING.sub(b'""', raw), dtype=np.uint8)]
    return int(np.cumsum(steps).max(initial=0))  # the running sum is the depth at each byte


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def parse_json(raw: bytes) -> Any:
    """The request body as JSON; 400 naming the parse error for anything else: invalid JSON, nesting deeper
    than MAX_JSON_DEPTH, an integer longer than Python converts (``sys.get_int_max_str_digits()``), and the
    NaN / Infinity that Python's json module accepts beyond the standard."""
    reason = None
    if json_depth(raw) > MAX_JSON_DEPTH:
        reason = f"arrays or objects nested deeper than {MAX_JSON_DEPTH} levels"
    else:
        try:
            return json.loads(raw, parse_constant=_no_constant)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            reason = str(e)
        except RecursionError:  # a backstop: the depth check above refuses what could get here
            reason = "nested too deeply"
        except ValueError as e:  # CPython's limit on int() digits, or NaN / Infinity
            digits = sys.get_int_max_str_digits()
            reason = f"a number longer than {digits} digits" if "integer string conversion" in str(e) else str(e)
    raise RequestError(
        400,
        f"the body is not valid JSON ({reason}); send a JSON object such as "
        '{"inputs": "I love this!"} with Content-Type: application/json',
        "BadRequest",
    )


def body_timed_out(timeout: float) -> RequestError:
    return RequestError(
        408,
        f"the body did not arrive within {timeout:g} s of the headers (--body-timeout); send it at once, "
        "or raise the limit for slow links",
        "RequestTimeout",
    )


async def read_body(receive: Any, limit: int, timeout: float | None = None) -> bytes:
    """Read the whole body from an ASGI ``receive``, refusing (413) as soon as it passes ``limit`` bytes, and
    (408) when it has not all arrived ``timeout`` seconds after the call."""
    if timeout is None:
        return await _read_body(receive, limit)
    # asyncio.timeout's way (a timer that cancels this task), which Python 3.10 lacks; wait_for would cost a
    # task per request.
    task = asyncio.current_task()
    assert task is not None, "read_body runs in a task"
    expired = []

    def expire() -> None:
        expired.append(True)
        task.cancel()

    timer = asyncio.get_running_loop().call_later(timeout, expire)
    try:
        return await _read_body(receive, limit)
    except asyncio.CancelledError:
        if not expired:
            raise
        if sys.version_info >= (3, 11):
            task.uncancel()  # the cancellation was this timer's, now answered: it is not the task's
        raise body_timed_out(timeout) from None
    finally:
        timer.cancel()


async def _read_body(receive: Any, limit: int) -> bytes:
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise RequestError(400, "the client disconnected before sending the whole body", "BadRequest")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise RequestError(
                413,
                f"the body is over {limit} bytes (--payload-limit); send fewer or shorter inputs per request",
                "PayloadTooLarge",
            )
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)
