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

A connection the server closes after an error answer (408, 431, 400 on a request it cannot parse, a 429 to a
client that asked to close, any 4xx/5xx with ``connection: close``) closes lingering, as nginx's and Apache's
``lingering_close`` do: the client is most likely still sending (the body it trickled, the head past the
limit), and a socket closed with bytes unread makes the kernel answer with a reset, which may reach the client
before it has read its answer (the kernel may also drop the answer not yet sent). So the answer goes, then the
write side's FIN; what still comes is read and dropped (``_Lingering``) until the client closes, or for
LINGER_SECONDS or LINGER_BYTES at most, then the connection is cut. A lingering connection holds no admission
slot, no task and no place among the connections uvicorn waits for at shutdown: a socket and a timer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from ._app import CANCEL, Guard, error_body

# A request's line and headers together, at most (nginx allows 32 KiB by default, h11 16 KiB). httptools has no
# limit: a 77 MB header within the header timeout cost the server 130 MB.
MAX_HEAD_BYTES = 64 * 1024

HOOK = "_start_asgi_task"

# How long, and how many bytes, a lingering close reads and drops before it cuts the connection. The answer has
# left by then: the bound is for a client that goes on sending, which gets a reset. 2 s is Apache's wait for
# each read of its lingering close (nginx's lingering_timeout is 5 s); 1 MiB is more than a client's socket
# buffers hold in flight when the answer leaves on a fast link, and a few reads of the event loop's time.
LINGER_SECONDS = 2.0
LINGER_BYTES = 1 << 20


class _Lingering(asyncio.Protocol):
    """A connection after its error answer and the FIN: reads and drops what the client still sends, and closes
    when the client does, or cuts the connection past LINGER_SECONDS or LINGER_BYTES (``abort``: ``close``
    would wait for a client that does not read to take the answer)."""

    __slots__ = ("transport", "left", "timer")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop):
        self.transport, self.left = transport, LINGER_BYTES
        self.timer = loop.call_later(LINGER_SECONDS, transport.abort)

    def data_received(self, data: bytes) -> None:
        self.left -= len(data)
        if self.left < 0:
            self.transport.abort()

    def eof_received(self) -> None:
        return None  # the transport closes: the client has read what it wanted and closed

    def connection_lost(self, exc: Exception | None) -> None:
        self.timer.cancel()


class _OneWrite:
    """One response's transport: the head uvicorn writes at ``http.response.start`` is held and goes out with
    the next write (the body, or a stream's first event, which every handler here sends right after the head).
    A write before the head (``100 Continue``) goes at once, and so does the held head when the response is
    closed without a body. uvicorn closes the connection through it after a response with ``connection:
    close``: after a whole error answer that close lingers (``linger``, the protocol's)."""

    __slots__ = ("transport", "cycle", "head", "state", "linger")

    def __init__(
        self,
        transport: asyncio.Transport,
        cycle: RequestResponseCycle,
        linger: Callable[[RequestResponseCycle], None] | None = None,
    ):
        self.transport, self.cycle, self.head, self.state = transport, cycle, b"", 0  # 0 before the head, 1 held
        self.linger = linger

    def write(self, data: bytes) -> None:
        if self.state == 0 and self.cycle.response_started:
            self.head, self.state = data, 1
            return
        if self.state == 1:  # the head is kept: close() reads its status
            data, self.state = self.head + data, 2
        self.transport.write(data)

    def close(self) -> None:
        if self.state == 1:
            self.write(b"")
        # b"HTTP/1.1 408 Request Timeout\r\n...": an error answer, whole
        if self.linger is not None and self.cycle.response_complete and self.head[9:10] in (b"4", b"5"):
            self.linger(self.cycle)
        else:
            self.transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


def refusing_protocol(guard: Guard) -> type[HttpToolsProtocol] | None:
    """An HttpToolsProtocol class that asks ``guard.admit`` for each POST as its headers complete and writes the
    refusals itself; None when this uvicorn has no such hook."""
    if not callable(getattr(HttpToolsProtocol, HOOK, None)):
        return None

    def closing(status: bytes, body: bytes) -> tuple[bytes, bytes]:
        """An answer the protocol writes before it closes: the status line, then after the server's default
        headers the rest."""
        rest = b"content-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n%s"
        return b"HTTP/1.1 %s\r\n" % status, rest % (len(body), body)

    head_too_large = closing(
        b"431 Request Header Fields Too Large",
        error_body(
            f"the request's line and headers are over {MAX_HEAD_BYTES} bytes; send the inputs in the body",
            "HeadersTooLarge",
        ),
    )
    # uvicorn's own answer is plain text: every error here is JSON.
    not_http = closing(
        b"400 Bad Request",
        error_body("the request is not valid HTTP/1.1 (its request line, headers or chunked body)", "BadRequest"),
    )

    class RefusingProtocol(HttpToolsProtocol):
        _header_timer: asyncio.TimerHandle | None = None
        _in_request = False  # a request's first byte came, its headers did not yet
        _head_bytes = 0  # bytes of reads that fell wholly inside one request's unfinished head
        _head_done = False
        _handed_over = False  # to a lingering close: the transport is _Lingering's now

        def data_received(self, data: bytes) -> None:
            inside = self._in_request
            self._head_done = False
            super().data_received(data)
            # Counted only when this read began and ended inside the same unfinished head: exact for what it
            # counts, never a pipelined neighbour's body; it overshoots the limit by at most one read.
            if inside and self._in_request and not self._head_done:
                self._head_bytes += len(data)
                if self._head_bytes > MAX_HEAD_BYTES:
                    self._refuse(head_too_large)

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
                self.cycle.transport = _OneWrite(self.transport, self.cycle, self._linger)  # type: ignore[assignment]

        def send_400_response(self, msg: str) -> None:
            self._refuse(not_http)  # the request could not be parsed (uvicorn has logged msg)

        def _start_header_timer(self) -> None:
            if self._header_timer is None:
                self._header_timer = self.loop.call_later(guard.limits.header_timeout, self._headers_late)

        def _stop_header_timer(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _headers_late(self) -> None:
            self._header_timer = None
            if self._handed_over or self.transport.is_closing():
                return
            # A request begun gets its 408; a connection that never sent a byte is just closed, like an idle
            # keep-alive one.
            if self._in_request:
                self._refuse(guard.header_timeout_http)
            else:
                self.transport.close()

        def _refuse(self, answer: tuple[bytes, bytes]) -> None:
            """Answer the connection's first unanswered request with ``answer``, its head late or too large or
            its bytes not HTTP, and close lingering. When those bytes are a later request's (pipelined behind a
            response still to be written), no answer could go before that one: the connection just closes."""
            self._stop_header_timer()
            if self._handed_over or self.transport.is_closing():
                return
            cycle = self.cycle
            # None or answered: the refused bytes begin the next request; a body still coming: they are in it
            if cycle is None or cycle.response_complete or (cycle.more_body and not cycle.response_started):
                date = b"".join(b"%s: %s\r\n" % kv for kv in self.server_state.default_headers)
                self.transport.write(answer[0] + date + answer[1])
                self._linger(None)
            else:
                self.transport.close()

        def _linger(self, answered: RequestResponseCycle | None) -> None:
            """Close after an error answer (``answered``'s, when a response cycle wrote it), lingering: the
            FIN goes after the answer, and the connection is handed to ``_Lingering``, which reads and drops
            what the client still sends. For HTTP the connection is over: nothing more is parsed, answered or
            timed, and uvicorn no longer counts it among its connections."""
            if answered is not None:
                answered.on_response = self._count_response  # no pipelined request or keep-alive timer next
            transport = self.transport
            if self._handed_over or transport.is_closing():
                return
            if not transport.can_write_eof():  # TLS: no half-close
                transport.close()
                return
            self._handed_over = True
            self._stop_header_timer()
            self._unset_keepalive_if_required()
            self.connections.discard(self)
            cycle = self.cycle
            if cycle is not None and not cycle.response_complete:
                # Its body was refused mid-way (a 400 written for it), or it is a request pipelined behind the
                # answer that never started: its handler, if any, reads a disconnect and its answer goes nowhere.
                cycle.disconnected = True
                cycle.message_event.set()
            self.flow.resume_reading()
            transport.set_protocol(_Lingering(transport, self.loop))
            transport.write_eof()

        def _count_response(self) -> None:
            self.server_state.total_requests += 1  # what uvicorn's on_response_complete counts first

        def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
            if self._handed_over:  # a request pipelined behind a lingering close (in its read): never run
                cycle.response_started = cycle.response_complete = True
                return
            head = guard.admit(cycle.scope) if cycle.scope["method"] == "POST" else None  # type: ignore[arg-type]
            if head is None:
                return super()._start_asgi_task(cycle, app)
            date = b"".join(b"%s: %s\r\n" % kv for kv in cycle.default_headers)
            cycle.response_started = cycle.response_complete = True
            self.transport.write(head[0] + date + head[1])
            cycle.message_event.set()
            if not cycle.keep_alive:  # the client asked to close; its body, unread, may still be coming
                self._linger(cycle)
            on_response, cycle.on_response = cycle.on_response, lambda: None
            on_response()

    return RefusingProtocol
