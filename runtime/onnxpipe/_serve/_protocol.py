"""uvicorn's httptools protocol, with the guard's 429 answered where the request's headers are parsed.

Through ASGI, each refusal cost the event loop a task, a scope, two send messages and uvicorn's response
assembly. Here the guard is asked as soon as the headers are complete, before any task exists, and a refused
request gets its prepared bytes written at once; the connection then goes on exactly as after any response
uvicorn completes (keep-alive timer, pipelined requests, the unread body discarded). Measured side by side
(bench/results/serve_overhead.md, model busy, 8 clients): 92 -> 65 us of loop CPU per refusal, 429 p50 1.36 ->
0.52 ms (two other side-by-side runs: 58 -> 29 and 82 -> 46 us). The hook,
``HttpToolsProtocol._start_asgi_task``, is uvicorn's since 0.45 (the serve extra's floor); where it is missing
the server says so at start and refuses through the ASGI guard, as with h11.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

if TYPE_CHECKING:
    from ._app import Guard


HOOK = "_start_asgi_task"


def refusing_protocol(guard: Guard) -> type[HttpToolsProtocol] | None:
    """An HttpToolsProtocol class that asks ``guard.admit`` for each POST as its headers complete and writes the
    refusals itself; None when this uvicorn has no such hook."""
    if not callable(getattr(HttpToolsProtocol, HOOK, None)):
        return None

    class RefusingProtocol(HttpToolsProtocol):
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
