"""uvicorn's httptools protocol, with the guard's 429 answered where the request's headers are parsed.

Through ASGI, each refusal cost the event loop a task, a scope, two send messages and uvicorn's response
assembly. Here the guard is asked as soon as the headers are complete, before any task exists, and a refused
request gets its prepared bytes written at once; the connection then goes on exactly as after any response
uvicorn completes (keep-alive timer, pipelined requests, the unread body discarded). Measured side by side
(bench/results/serve_overhead.md, model busy, 8 clients): 92 -> 65 us of loop CPU per refusal, 429 p50 1.36 ->
0.52 ms (two other side-by-side runs: 58 -> 29 and 82 -> 46 us). The hook,
``HttpToolsProtocol._start_asgi_task``, is uvicorn's since 0.45 (the serve extra's floor); where it is missing
the server says so at start and refuses through the ASGI guard, as with h11.

When a client goes away before its answer, the protocol stops its request (the handler left the way to in the
scope): the request's queued work is then dropped, not computed for nobody.

The protocol also times the headers (``--header-timeout``): from the connection's start, or a request's first
byte, to the end of its headers. uvicorn has no such limit; a connection that sent nothing, or a request's
headers a byte at a time, stayed open for good (the body has its own limit, in the ASGI handler).
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from ._app import CANCEL, Guard

HOOK = "_start_asgi_task"


def refusing_protocol(guard: Guard) -> type[HttpToolsProtocol] | None:
    """An HttpToolsProtocol class that asks ``guard.admit`` for each POST as its headers complete and writes the
    refusals itself; None when this uvicorn has no such hook."""
    if not callable(getattr(HttpToolsProtocol, HOOK, None)):
        return None

    class RefusingProtocol(HttpToolsProtocol):
        _header_timer: asyncio.TimerHandle | None = None
        _in_request = False  # a request's first byte came, its headers did not yet

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
            self._in_request = False
            super().on_headers_complete()

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
            # A request begun gets its 408, unless another response is still being written on the connection
            # (a pipelined request); a connection that never sent a byte is just closed, like an idle keep-alive.
            if self._in_request and (self.cycle is None or self.cycle.response_complete):
                head, rest = guard.header_timeout_http
                date = b"".join(b"%s: %s\r\n" % kv for kv in self.server_state.default_headers)
                self.transport.write(head + date + rest)
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
