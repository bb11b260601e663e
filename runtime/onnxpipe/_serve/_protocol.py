"""uvicorn's httptools protocol, with the guard's 429 answered where the request's headers are parsed.

Through ASGI, each refusal cost the event loop a task, a scope, two send messages and uvicorn's response
assembly. Here the guard is asked as soon as the headers are complete, before any task exists, and a refused
request gets its prepared bytes written at once; the connection then goes on exactly as after any response
uvicorn completes (keep-alive timer, pipelined requests, the unread body discarded). Measured side by side
(bench/results/serve_overhead.md, model busy, 8 clients): 92 -> 65 us of loop CPU per refusal, 429 p50 1.36 ->
0.52 ms (two other side-by-side runs: 58 -> 29 and 82 -> 46 us). The hook,
``HttpToolsProtocol._start_asgi_task``, is uvicorn's since 0.45 (the serve extra's floor); where it is missing
the server says so at start and refuses through the ASGI guard, as with h11.

A response's head and the first part of its body leave in one write (``_OneWrite``): uvicorn writes the head
at ``http.response.start`` and the body at ``http.response.body``, two system calls and two packets for each
small JSON answer.

When a client goes away before its answer, the protocol stops its request (the handler left the way to in the
scope): the request's queued work is then dropped, not computed for nobody.

The protocol also bounds the headers: in time (``--header-timeout``: from the connection's start, or a
request's first byte, to the end of its headers; else 408) and size (MAX_HEAD_BYTES, else 431). uvicorn has
neither: a connection that sent nothing, or a request's headers a byte at a time, stayed open for good (the
body has its own limit, in the ASGI handler).
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from ._app import CANCEL, Guard, error_body

# A request's line and headers together, at most (nginx allows 32 KiB by default, h11 16 KiB). httptools has no
# limit: a 77 MB header within the header timeout cost the server 130 MB.
MAX_HEAD_BYTES = 64 * 1024

HOOK = "_start_asgi_task"


class _OneWrite:
    """One response's transport: the head uvicorn writes at ``http.response.start`` is held and goes out with
    the next write (the body, or a stream's first event, which every handler here sends right after the head).
    A write before the head (``100 Continue``) goes at once, and so does the held head when the response is
    closed without a body."""

    __slots__ = ("transport", "cycle", "head", "state")

    def __init__(self, transport: asyncio.Transport, cycle: RequestResponseCycle):
        self.transport, self.cycle, self.head, self.state = transport, cycle, b"", 0  # 0 before the head, 1 held

    def write(self, data: bytes) -> None:
        if self.state == 0 and self.cycle.response_started:
            self.head, self.state = data, 1
            return
        if self.state == 1:
            data, self.head, self.state = self.head + data, b"", 2
        self.transport.write(data)

    def close(self) -> None:
        if self.state == 1:
            self.write(b"")
        self.transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


def refusing_protocol(guard: Guard) -> type[HttpToolsProtocol] | None:
    """An HttpToolsProtocol class that asks ``guard.admit`` for each POST as its headers complete and writes the
    refusals itself; None when this uvicorn has no such hook."""
    if not callable(getattr(HttpToolsProtocol, HOOK, None)):
        return None

    too_large = error_body(
        f"the request's line and headers are over {MAX_HEAD_BYTES} bytes; send the inputs in the body",
        "HeadersTooLarge",
    )
    head_too_large = (
        b"HTTP/1.1 431 Request Header Fields Too Large\r\n",
        b"content-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n%s"
        % (len(too_large), too_large),
    )

    class RefusingProtocol(HttpToolsProtocol):
        _header_timer: asyncio.TimerHandle | None = None
        _in_request = False  # a request's first byte came, its headers did not yet
        _head_bytes = 0  # bytes of reads that fell wholly inside one request's unfinished head
        _head_done = False

        def data_received(self, data: bytes) -> None:
            inside = self._in_request
            self._head_done = False
            super().data_received(data)
            # Counted only when this read began and ended inside the same unfinished head: exact for what it
            # counts, never a pipelined neighbour's body; it overshoots the limit by at most one read.
            if inside and self._in_request and not self._head_done:
                self._head_bytes += len(data)
                if self._head_bytes > MAX_HEAD_BYTES:
                    self._refuse_head(head_too_large)

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._start_header_timer()

        def connection_lost(self, exc: Exception | None) -> None:
            self._stop_header_timer()
            cycle = self.cycle
            super().connection_lost(exc)
            if cycle is not None and not cycle.response_complete:
                cancel: Any = cycle.scope.get(CANCEL)
                if cancel is not None:
                    cancel()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._in_request = True
            self._start_header_timer()

        def on_headers_complete(self) -> None:
            self._stop_header_timer()
            self._in_request, self._head_bytes, self._head_done = False, 0, True
            super().on_headers_complete()
            if self.cycle is not None:  # the cycle's task, created just now, has not run yet
                self.cycle.transport = _OneWrite(self.transport, self.cycle)  # type: ignore[assignment]

        def _start_header_timer(self) -> None:
            if self._header_timer is None:
                self._header_timer = self.loop.call_later(guard.limits.header_timeout, self._headers_late)

        def _stop_header_timer(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _headers_late(self) -> None:
            self._header_timer = None
            if self.transport.is_closing():
                return
            # A request begun gets its 408; a connection that never sent a byte is just closed, like an idle
            # keep-alive one.
            if self._in_request:
                self._refuse_head(guard.header_timeout_http)
            else:
                self.transport.close()

        def _refuse_head(self, answer: tuple[bytes, bytes]) -> None:
            """Answer a request whose head is refused, unless another response is still being written on the
            connection (a pipelined request); close the connection either way."""
            self._stop_header_timer()
            if self.transport.is_closing():
                return
            if self.cycle is None or self.cycle.response_complete:
                date = b"".join(b"%s: %s\r\n" % kv for kv in self.server_state.default_headers)
                self.transport.write(answer[0] + date + answer[1])
            self.transport.close()

        def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
            head = guard.admit(cycle.scope) if cycle.scope["method"] == "POST" else None  # type: ignore[arg-type]
            if head is None:
                return super()._start_asgi_task(cycle, app)
            date = b"".join(b"%s: %s\r\n" % kv for kv in cycle.default_headers)
            cycle.response_started = cycle.response_complete = True
            self.transport.write(head[0] + date + head[1])
            cycle.message_event.set()
            if not cycle.keep_alive:
                self.transport.close()
            on_response, cycle.on_response = cycle.on_response, lambda: None
            on_response()

    return RefusingProtocol
