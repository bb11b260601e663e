"""The ASGI app: a guard that admits or refuses each POST before any work, and one handler for every endpoint.

The guard is plain ASGI rather than starlette middleware so that a refusal (429, 413) costs microseconds: it
answers before the body is read, and keeps the in-flight count that ``--max-concurrent-requests`` bounds.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict
from importlib import resources
from typing import Any

import numpy as np
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import __version__
from .._inputs import clean_texts
from ..errors import InferenceError, OnnxpipeError
from ._batcher import Batcher
from ._endpoints import ENDPOINTS, Endpoint, parse_tokenize, render_tokens
from ._limits import Limits, RequestError, check_client_batch, parse_json, read_body
from ._metrics import Metrics
from ._models import ModelSet

log = logging.getLogger("onnxpipe.serve")


def _plain(x: Any) -> Any:
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    raise TypeError(f"cannot serialise {type(x).__name__}")


class _JSON(JSONResponse):
    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=False, separators=(",", ":"), default=_plain).encode()


def _error(status: int, message: str, error_type: str) -> _JSON:
    return _JSON({"error": message, "error_type": error_type}, status_code=status)


class Guard:
    """ASGI wrapper: refuse past the concurrency or payload limit at once; count and time every request."""

    def __init__(self, app: ASGIApp, limits: Limits, metrics: Metrics):
        self.app, self.limits, self.metrics = app, limits, metrics
        self.in_flight = 0
        self.known = {*ENDPOINTS, "/tokenize"}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        endpoint = scope["path"] if scope["path"] in self.known else "other"
        m, limits = self.metrics, self.limits
        refusal = None
        if self.in_flight >= limits.max_concurrent_requests:
            refusal = (
                429,
                f"the server is at --max-concurrent-requests={limits.max_concurrent_requests} requests "
                "in flight; retry shortly",
                "Overloaded",
                "concurrency",
            )
        else:
            length = dict(scope["headers"]).get(b"content-length", b"0")
            if not length.isdigit() or int(length) > limits.payload_limit:
                refusal = (
                    413,
                    f"Content-Length {length.decode(errors='replace')!r} is over {limits.payload_limit} "
                    "bytes (--payload-limit); send fewer or shorter inputs per request",
                    "PayloadTooLarge",
                    "payload",
                )
        if refusal is not None:
            code, message, error_type, reason = refusal
            m.rejected.inc(reason)
            m.requests.inc(endpoint, str(code))
            return await _error(code, message, error_type)(scope, receive, send)
        self.in_flight += 1
        m.in_flight.set(self.in_flight)
        start, status = time.perf_counter(), [500]

        async def send_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            self.in_flight -= 1
            m.in_flight.set(self.in_flight)
            m.requests.inc(endpoint, str(status[0]))
            m.latency.observe(time.perf_counter() - start, endpoint)


def create_app(models: ModelSet, limits: Limits = Limits()) -> Guard:
    """The ASGI application serving ``models`` under ``limits``; run it with any ASGI server.

    Example:
        >>> app = create_app(ModelSet([load_model("sst2", "models/minilm-sst2")]))
        >>> uvicorn.run(app, host="127.0.0.1", port=8080)
    """
    metrics = Metrics()
    batcher = Batcher(metrics, limits.max_batch_tokens)
    page = resources.files(__package__).joinpath("playground.html").read_text(encoding="utf-8")

    async def body_of(request: Request) -> Any:
        return parse_json(await read_body(request.receive, limits.payload_limit))

    async def run(endpoint: Endpoint, request: Request) -> Response:
        call = endpoint.parse(await body_of(request))
        served = models.find(endpoint.task, call.model)
        pipe = served.pipelines[endpoint.task]
        check_client_batch(len(call.items), limits)
        # The same steps as Pipeline.iter, so the results equal pipe(text): its checks, its preprocessing.
        pre, post = pipe._split_params(**call.params)
        prepared = pipe.preprocess(call.items, 0, **pre)
        encodings = [e for _, group in prepared for e in group]
        tokens = sum(len(e.ids) for e in encodings)
        metrics.tokens.inc(served.name, amount=tokens)
        results = await batcher.submit(served.name, pipe, prepared, post)
        return _JSON(endpoint.render(call, results, served.name, tokens))

    async def tokenize(request: Request) -> Response:
        call = parse_tokenize(await body_of(request))
        served = models.find(None, call.model)
        check_client_batch(len(call.items), limits)
        tokenizer = next(iter(served.pipelines.values())).tokenizer
        # Untruncated, as TEI's /tokenize: it shows what the model would be given before any cut.
        backend = tokenizer._for(None)
        encodings = backend.encode_batch(clean_texts(call.items), add_special_tokens=call.params["add_special_tokens"])
        rows = [render_tokens(e) for e in encodings]
        return _JSON(rows[0] if call.single else rows)

    def guarded(handler: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestError as e:
                return _error(e.status, str(e), e.error_type)
            except InferenceError as e:
                log.error("inference failed: %s", e)
                return _error(500, str(e), type(e).__name__)
            except (OnnxpipeError, TypeError, ValueError) as e:  # the runtime's input policy: name and reason
                return _error(422, str(e), type(e).__name__)

        return route

    def endpoint_route(path: str, endpoint: Endpoint) -> Route:
        async def handler(request: Request) -> Response:
            return await run(endpoint, request)

        return Route(path, guarded(handler), methods=["POST"])

    async def health(request: Request) -> Response:
        return _JSON({"status": "ok"})

    async def info(request: Request) -> Response:
        return _JSON(
            {
                "version": __version__,
                "models": [m.info() for m in models.by_name.values()],
                "endpoints": {
                    path: {"task": e.task, "models": models.serving(e.task)} for path, e in ENDPOINTS.items()
                },
                "limits": asdict(limits),
            }
        )

    async def prometheus(request: Request) -> Response:
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    async def playground(request: Request) -> Response:
        return HTMLResponse(page)

    async def http_error(request: Request, exc: HTTPException) -> Response:
        return _error(
            exc.status_code,
            f"{request.method} {request.url.path}: {exc.detail}; see GET /info for the endpoints",
            "NotFound" if exc.status_code == 404 else "BadRequest",
        )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        batcher.start()
        yield
        batcher.close()  # uvicorn has finished the in-flight requests by now

    routes = [endpoint_route(path, e) for path, e in ENDPOINTS.items()]
    routes += [
        Route("/tokenize", guarded(tokenize), methods=["POST"]),
        Route("/health", health),
        Route("/info", info),
        Route("/metrics", prometheus),
        Route("/", playground),
    ]
    # Starlette types a handler's exception as Exception; it calls this one with HTTPException only.
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={HTTPException: http_error})  # type: ignore[dict-item]
    return Guard(app, limits, metrics)
