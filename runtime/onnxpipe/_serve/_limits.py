"""The server's limits and the one exception that carries an HTTP status: what a request may be, and why not.

Statuses follow text-embeddings-inference: 429 past the concurrency limit (at once, never an unbounded queue),
413 past the payload or client-batch limit, 422 for inputs the runtime's input policy refuses, 400 for a
body that is not JSON.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from .._pipelines._base import DEFAULT_BATCH_TOKENS


@dataclass(frozen=True)
class Limits:
    """What one server accepts. ``Limits(max_concurrent_requests=64)``

    ``max_input_length`` None means each model's own maximum; a smaller value caps every model there.
    """

    max_batch_tokens: int = DEFAULT_BATCH_TOKENS
    max_concurrent_requests: int = 512
    max_client_batch_size: int = 32
    max_input_length: int | None = None
    payload_limit: int = 2_000_000

    def __post_init__(self) -> None:
        for name in ("max_batch_tokens", "max_concurrent_requests", "max_client_batch_size", "payload_limit"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r}; use a positive integer")
        if self.max_input_length is not None and (
            not isinstance(self.max_input_length, int) or self.max_input_length < 1
        ):
            raise ValueError(
                f"max_input_length={self.max_input_length!r}; use a positive integer, or None for each model's maximum"
            )


class RequestError(Exception):
    """A request the server refuses, with its HTTP status and the error type the JSON body names."""

    def __init__(self, status: int, message: str, error_type: str = "Validation"):
        super().__init__(message)
        self.status, self.error_type = status, error_type

    def body(self) -> dict[str, Any]:
        return {"error": str(self), "error_type": self.error_type}


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


def parse_json(raw: bytes) -> Any:
    """The request body as JSON; 400 naming the parse error for anything else."""
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RequestError(
            400,
            f"the body is not valid JSON ({e}); send a JSON object such as "
            '{"inputs": "I love this!"} with Content-Type: application/json',
            "BadRequest",
        ) from None


async def read_body(receive: Any, limit: int) -> bytes:
    """Read the whole body from an ASGI ``receive``, refusing (413) as soon as it passes ``limit`` bytes."""
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
