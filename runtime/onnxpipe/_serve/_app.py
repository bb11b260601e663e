"""The ASGI app: a guard that admits or refuses each POST before any work, then the model endpoints in raw ASGI.

The guard is the outermost layer, plain ASGI, so that a refusal (429, 413) costs microseconds: it answers
from bytes prepared at start-up, before the body is read or the tokenizer touched, and keeps the in-flight
count that ``--max-concurrent-requests`` bounds. Admitted POSTs to the model endpoints skip starlette too
(profiled, its middleware, router and response classes took about a tenth of the event loop's CPU per
``/predict``): starlette serves only the GET pages and the 404s.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from dataclasses import asdict, replace
from importlib import resources
from typing import Any

import numpy as np
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import __version__
from .._inputs import clean_texts
from .._tokenizer import AutoTokenizer
from ..errors import InferenceError, InputTooLongError, OnnxpipeError
from ._batcher import Batcher, workers_for
from ._endpoints import (
    ENDPOINTS,
    OPENAI_MAX_INPUTS,
    USER_AGENT,
    Call,
    Endpoint,
    main_endpoint,
    parse_decode,
    parse_tokenize,
    render_tokens,
)
from ._generation import GenerationRoutes, StreamHandler
from ._limits import Limits, RequestError, check_client_batch, parse_json, read_body, shutting_down
from ._metrics import CONTENT_TYPE, Metrics
from ._models import ModelSet
from ._seq2seq_routes import PATHS as SEQ2SEQ_PATHS, TASKS as SEQ2SEQ_TASKS, handlers as seq2seq_handlers
from ._token_ids import encode_ids

log = logging.getLogger("onnxpipe.serve")
# The scope key a request admitted by the protocol carries (an ASGI extension key: namespaced, never sent on).
ADMITTED = "onnxpipe.admitted"
# Where a model endpoint's request leaves the way to stop it: the protocol calls it when the client goes away
# before its answer, so the handler stops and its queued work is dropped (uvicorn would let it run to the end).
CANCEL = "onnxpipe.cancel"


def _plain(x: Any) -> Any:
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    raise TypeError(f"cannot serialise {type(x).__name__}")


# One encoder for every answer: json.dumps with options builds a JSONEncoder per call.
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=_plain)


def _dumps(content: Any) -> bytes:
    return _ENCODER.encode(content).encode()


def error_body(message: str, error_type: str) -> bytes:
    """The JSON body of every error the server writes: ``{"error": ..., "error_type": ...}``."""
    return _dumps({"error": message, "error_type": error_type})


def openai_error_body(status: int, message: str, error_type: str, param: str | None = None) -> bytes:
    """An error on ``/v1/*`` in OpenAI's shape, whose clients show ``error.message`` to the user (they show
    only the status for any other body). ``error_type`` stays beside it for clients of this server."""
    kind = "server_error" if status >= 500 else "rate_limit_error" if status == 429 else "invalid_request_error"
    error = {"message": message, "type": kind, "param": param, "code": error_type}
    return _dumps({"error": error, "error_type": error_type})


class _JSON(JSONResponse):
    def render(self, content: Any) -> bytes:
        return _dumps(content)


def _error(status: int, message: str, error_type: str) -> _JSON:
    return _JSON({"error": message, "error_type": error_type}, status_code=status)


_JSON_TYPE = (b"content-type", b"application/json")


_CLOSE = (b"connection", b"close")


async def _respond(send: Send, status: int, body: bytes, close: bool = False) -> None:
    """A whole JSON response in two ASGI messages, without a response object (``close``: then the connection)."""
    headers = [_JSON_TYPE, (b"content-length", b"%d" % len(body))]
    if close:
        headers.append(_CLOSE)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _openai(scope: MutableMapping[str, Any]) -> bool:
    """Whether a request's errors take OpenAI's shape: every path under /v1/."""
    return str(scope["path"]).startswith("/v1/")


def _plain_error(status: int, message: str, error_type: str, param: str | None = None) -> bytes:
    return error_body(message, error_type)


def _header(headers: Any, key: bytes) -> str:
    for name, value in headers:
        if name == key:
            return bytes(value).decode("latin-1")
    return ""


def _content_length(headers: Any) -> bytes:
    for name, value in headers:
        if name == b"content-length":
            return bytes(value)
    return b"0"  # chunked or no body: read_body enforces the limit as the bytes arrive


# Bodies past this many bytes are parsed and tokenized on a worker thread, so the event loop goes on answering
# (/health, 429s, other requests) meanwhile: a 1.9 MB text took the loop 2-4 s. Smaller ones stay on the loop,
# where they take microseconds and a thread hand-off would cost more than the work.
OFF_LOOP_BYTES = 64 * 1024


def tokenize_response(tokenizer: AutoTokenizer, call: Call) -> bytes:
    """The JSON of ``/tokenize`` (TEI's shape). At most the model's maximum tokens per input: a longer input is
    refused (InputTooLongError, 422) unless the request says ``"truncate": true``; either way the tokenizer
    reads only the text's start (``bounded``), not megabytes. Runs on a worker thread."""
    limit, specials = tokenizer.model_max_length, call.params["add_special_tokens"]
    texts = clean_texts(call.items)
    if call.params["truncate"]:
        encodings = tokenizer.encode_batch(texts, truncation=True, bounded=True, add_special_tokens=specials)
    else:  # cut one token past the limit: an input that keeps it is too long, whatever its full length
        encodings = tokenizer.encode_batch(
            texts, truncation=True, max_length=limit + 1, bounded=True, add_special_tokens=specials
        )
        for i, e in enumerate(encodings):
            if len(e.ids) > limit:
                raise InputTooLongError(
                    f"input {i} has more than {limit} tokens, the most this model is served with; send "
                    f'"truncate": true to get its first {limit}'
                )
    return _dumps([render_tokens(e) for e in encodings])  # TEI: a list per input, for one string too


# An admitted POST to a model endpoint: reads its body from ``receive``; returns (status, JSON body).
Handler = Callable[[Receive], Awaitable[tuple[int, bytes]]]


class Guard:
    """ASGI entry: refuse past the concurrency or payload limit at once; run the model endpoints' handlers;
    hand everything else to ``app`` (starlette); count and time every POST."""

    def __init__(
        self,
        app: ASGIApp,
        handlers: dict[str, Handler],
        limits: Limits,
        metrics: Metrics,
        streams: dict[str, StreamHandler] | None = None,
    ):
        self.app, self.handlers, self.limits, self.metrics = app, handlers, limits, metrics
        self.streams = streams or {}  # POST handlers that write their own answer (server-sent events)
        self.in_flight = 0
        busy = (
            f"the server is at --max-concurrent-requests={limits.max_concurrent_requests} requests in flight; "
            "retry shortly"
        )
        # Prepared twice: OpenAI's shape for /v1/* (its clients retry 429s, then show error.message).
        self._overloaded = error_body(busy, "Overloaded")
        self._overloaded_v1 = openai_error_body(429, busy, "Overloaded")
        self._overloaded_http, self._overloaded_http_v1 = (
            (
                b"HTTP/1.1 429 Too Many Requests\r\n",
                b"content-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body),
            )
            for body in (self._overloaded, self._overloaded_v1)
        )
        slow = error_body(
            f"the request's headers did not arrive within {limits.header_timeout:g} s (--header-timeout)",
            "RequestTimeout",
        )
        # What the protocol writes when a request's headers are late: the status line, then after the date
        # header the rest (the connection closes after it).
        self.header_timeout_http = (
            b"HTTP/1.1 408 Request Timeout\r\n",
            b"content-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n%s" % (len(slow), slow),
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            if scope["type"] == "http" and scope["path"] in self.handlers and scope["path"] != "/":
                return await self._not_allowed(scope, send)
            return await self.app(scope, receive, send)
        # Admission comes first: nothing below runs for a refused request. With httptools the protocol has
        # admitted it already, as its headers completed (``admit``); other servers are admitted here.
        if not scope.get(ADMITTED) and self.admit(scope) is not None:
            return await _respond(send, 429, self._overloaded_v1 if _openai(scope) else self._overloaded)
        m, limits = self.metrics, self.limits
        handler = self.handlers.get(scope["path"])
        streamer = self.streams.get(scope["path"])
        endpoint = scope["path"] if handler is not None or streamer is not None else "other"
        start, status = time.perf_counter(), 500
        try:
            length = _content_length(scope["headers"])
            if not length.isdigit() or int(length) > limits.payload_limit:
                m.rejected.inc("payload")
                message = (
                    f"Content-Length {length.decode(errors='replace')!r} is over {limits.payload_limit} bytes "
                    "(--payload-limit); send fewer or shorter inputs per request"
                )
                status = 413
                body = (openai_error_body if _openai(scope) else _plain_error)(413, message, "PayloadTooLarge")
                await _respond(send, 413, body)
            elif streamer is not None:
                status = await streamer(scope, receive, send)
            elif handler is not None:
                USER_AGENT.set(_header(scope["headers"], b"user-agent"))
                task = asyncio.current_task()
                if task is not None:
                    scope[CANCEL] = task.cancel
                try:
                    status, body = await handler(receive)
                    close = status == 408
                except asyncio.CancelledError:
                    # uvicorn cancels what still runs when --graceful-timeout is over: the client gets a JSON
                    # 503 (uvicorn would write a plain-text 500 and log a traceback) and the connection closes.
                    # The cancellation ends here: this task has nothing left to do but answer. (Cancelled
                    # because the client went away (CANCEL), the answer goes nowhere: uvicorn drops it.)
                    status, body, close = 503, error_body(str(shutting_down()), "Unavailable"), True
                finally:
                    # Writing the answer is not to be cancelled: uvicorn itself drops it if the client is gone.
                    scope.pop(CANCEL, None)
                await _respond(send, status, body, close=close)
            else:  # an unknown path: starlette's 404 (or 405), as JSON
                seen = [500]

                async def send_status(message: Message) -> None:
                    if message["type"] == "http.response.start":
                        seen[0] = message["status"]
                    await send(message)

                try:
                    await self.app(scope, receive, send_status)
                finally:
                    status = seen[0]
        finally:
            self.in_flight -= 1
            m.in_flight.set(self.in_flight)
            m.requests.inc(endpoint, str(status))
            m.latency.observe(time.perf_counter() - start, endpoint)

    def admit(self, scope: MutableMapping[str, Any]) -> tuple[bytes, bytes] | None:
        """Admit one POST (counted in flight until ``__call__`` finishes it; ``scope`` marked ADMITTED), or,
        past ``--max-concurrent-requests``, count a refusal and return the 429 to write: (status line, the
        headers after the server's default ones and the body).

        The httptools protocol (``_protocol``) calls this as a request's headers complete, before its task
        exists: a burst parsed in one read is then counted request by request, not all admitted against the
        count before any of their tasks ran."""
        if self.in_flight >= self.limits.max_concurrent_requests:
            self.metrics.rejected.inc("concurrency")
            self.metrics.requests.inc(scope["path"] if scope["path"] in self.handlers else "other", "429")
            return self._overloaded_http_v1 if _openai(scope) else self._overloaded_http
        self.in_flight += 1
        self.metrics.in_flight.set(self.in_flight)
        scope[ADMITTED] = True
        return None

    @staticmethod
    async def _not_allowed(scope: Scope, send: Send) -> None:
        message = (
            f"{scope['method']} {scope['path']}: Method Not Allowed; this endpoint takes POST "
            "(see GET /info for the endpoints)"
        )
        body = (openai_error_body if _openai(scope) else _plain_error)(405, message, "BadRequest")
        headers = [_JSON_TYPE, (b"content-length", b"%d" % len(body)), (b"allow", b"POST")]
        await send({"type": "http.response.start", "status": 405, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def route_table(models: ModelSet) -> dict[str, dict[str, Any]]:
    """Per endpoint: its task, the models serving it, and the one answering requests that name none (None:
    such a request is refused; ``POST /`` and ``/invocations``: the first model's main task)."""
    out: dict[str, dict[str, Any]] = {}
    first = next(iter(models.by_name.values()))
    for path in ("/", "/invocations"):
        out[path] = {"task": first.main_task, "models": list(models.by_name), "default": first.name}
    tasks = {path: e.task for path, e in ENDPOINTS.items()} | SEQ2SEQ_PATHS
    for path, task in tasks.items():
        default = models.default(task)
        out[path] = {"task": task, "models": models.serving(task), "default": default and default.name}
    return out


def create_app(models: ModelSet, limits: Limits = Limits(), expose_paths: bool = False) -> Guard:
    """The ASGI application serving ``models`` under ``limits``; run it with any ASGI server. ``GET /info``
    names the models without their paths unless ``expose_paths``.

    Example:
        >>> app = create_app(ModelSet([load_model("sst2", "models/minilm-sst2")]))
        >>> uvicorn.run(app, host="127.0.0.1", port=8080)
    """
    metrics = Metrics()
    pipes = [pipe for served in models.by_name.values() for pipe in served.pipelines.values()]
    batcher = Batcher(metrics, limits.max_batch_tokens, workers_for(pipes))
    generation = GenerationRoutes(models, limits, CANCEL)
    page = resources.files(__package__).joinpath("playground.html").read_text(encoding="utf-8")

    async def body_of(receive: Receive) -> tuple[Any, bool]:
        """The parsed body, and whether it is large (then parsed, and to be tokenized, off the loop)."""
        raw = await read_body(receive, limits.payload_limit, limits.body_timeout)
        if len(raw) <= OFF_LOOP_BYTES:
            return parse_json(raw), False
        return await asyncio.to_thread(parse_json, raw), True

    async def run(endpoint: Endpoint, receive: Receive) -> bytes:
        body, large = await body_of(receive)
        return await run_body(endpoint, body, large)

    async def run_body(endpoint: Endpoint, body: Any, large: bool) -> bytes:
        call = endpoint.parse(body)
        served = models.find(endpoint.task, call.model)
        pipe = served.pipelines[endpoint.task]
        # OpenAI's clients send up to 2048 inputs per request; they are run --max-client-batch-size at a time,
        # one part queued after the other, so a request never holds more than that in the queue.
        openai = endpoint is ENDPOINTS["/v1/embeddings"]
        check_client_batch(
            len(call.items),
            limits
            if not openai
            else replace(limits, max_client_batch_size=max(OPENAI_MAX_INPUTS, limits.max_client_batch_size)),
        )
        if call.params.get("truncation", False) is None:
            call.params["truncation"] = limits.auto_truncate
        # The same steps as Pipeline.iter, so the results equal pipe(text): its checks, its preprocessing.
        pre, post = pipe.split_params(**call.params)
        step = limits.max_client_batch_size
        results: list[Any] = []
        tokens = 0
        for start in range(0, len(call.items), step):
            part = call.items[start : start + step]
            if call.extra.get("ids"):  # token ids: the tokenizer reads no text
                prepared = encode_ids(pipe.tokenizer, part, start, pre.get("truncation", True))
            elif large:
                prepared = await asyncio.to_thread(functools.partial(pipe.preprocess, part, start, **pre))
            else:
                prepared = pipe.preprocess(part, start, **pre)
            count = sum(len(e.ids) for _, group in prepared for e in group)
            metrics.tokens.inc(served.name, amount=count)
            tokens += count
            results += await batcher.submit(served.name, pipe, prepared, post)
        return _dumps(endpoint.render(call, results, served.name, tokens))

    async def root(receive: Receive) -> bytes:
        """``POST /`` and ``POST /invocations``: the named (else the first) model's main task, as TEI routes."""
        body, large = await body_of(receive)
        name = body.get("model") if isinstance(body, dict) else None
        served = models.find(None, name)
        if served.main_task in SEQ2SEQ_TASKS:  # summarization, translation, text2text: the hub's shapes
            named = name is not None or not isinstance(body, dict)
            return await seq2seq_root(served.main_task, body if named else {**body, "model": served.name})
        endpoint = main_endpoint(served.main_task, body)
        if endpoint is None:
            raise RequestError(
                404,
                f"model {served.name!r} ({served.main_task}) has no endpoint here; see GET /info",
                "NotFound",
            )
        if name is None and len(models.by_name) > 1:
            body = {**body, "model": served.name}
        return await run_body(endpoint, body, large)

    def tokenizer_for(call: Call) -> AutoTokenizer:
        """The tokenizer of the model ``call`` names (or the only one), once its batch is within the limit."""
        served = models.find(None, call.model)
        check_client_batch(len(call.items), limits)
        return next(iter(served.pipelines.values())).tokenizer

    async def tokenize(receive: Receive) -> bytes:
        body, _ = await body_of(receive)
        call = parse_tokenize(body)
        return await asyncio.to_thread(tokenize_response, tokenizer_for(call), call)

    async def decode(receive: Receive) -> bytes:
        body, _ = await body_of(receive)
        call = parse_decode(body)
        tokenizer = tokenizer_for(call)
        skip = call.params["skip_special_tokens"]
        return _dumps(await asyncio.to_thread(tokenizer.batch_decode, call.items, skip))

    def guarded(path: str, handler: Callable[[Receive], Awaitable[bytes]]) -> Handler:
        openai = path.startswith("/v1/")

        def error(status: int, message: str, error_type: str, param: str | None = None) -> tuple[int, bytes]:
            if openai:
                return status, openai_error_body(status, message, error_type, param)
            return status, error_body(message, error_type)

        async def respond(receive: Receive) -> tuple[int, bytes]:
            try:
                return 200, await handler(receive)
            except RequestError as e:
                return error(e.status, str(e), e.error_type, e.param)
            except InferenceError as e:
                log.error("POST %s: inference failed: %s", path, e)
                return error(500, str(e), type(e).__name__)
            except InputTooLongError as e:  # the runtime names its Python argument; a client sends a field
                hint = 'send "truncate": true, or start the server with --auto-truncate, to cut it'
                return error(422, f"{e} (over HTTP: {hint})", type(e).__name__, "input" if openai else None)
            except (OnnxpipeError, TypeError, ValueError) as e:  # the runtime's input policy: name and reason
                return error(422, str(e), type(e).__name__)
            except Exception as e:  # a bug: the client gets a 500 in JSON, the log the traceback
                log.exception("POST %s: unexpected error, answered 500", path)
                return error(500, f"internal error ({type(e).__name__}); see the server log", "InternalError")

        return respond

    def endpoint_handler(path: str, endpoint: Endpoint) -> Handler:
        async def handler(receive: Receive) -> bytes:
            return await run(endpoint, receive)

        return guarded(path, handler)

    async def health(request: Request) -> Response:
        return _JSON({"status": "ok"})

    async def info(request: Request) -> Response:
        return _JSON(
            {
                "version": __version__,
                "models": [m.info(expose_paths) for m in models.by_name.values()],
                "endpoints": route_table(models),
                "limits": asdict(limits),
            }
        )

    async def openai_models(request: Request) -> Response:
        data = [{"id": n, "object": "model", "created": 0, "owned_by": "onnxpipe"} for n in models.by_name]
        return _JSON({"object": "list", "data": data})

    async def prometheus(request: Request) -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    async def playground(request: Request) -> Response:
        return HTMLResponse(page)

    async def http_error(request: Request, exc: HTTPException) -> Response:
        message = f"{request.method} {request.url.path}: {exc.detail}; see GET /info for the endpoints"
        error_type = "NotFound" if exc.status_code == 404 else "BadRequest"
        if request.url.path.startswith("/v1/"):
            body = openai_error_body(exc.status_code, message, error_type)
            return Response(body, status_code=exc.status_code, media_type="application/json")
        return _error(exc.status_code, message, error_type)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        batcher.start()
        generation.start()
        yield
        # uvicorn has finished the in-flight requests by now, or cancelled them past --graceful-timeout
        await batcher.aclose()
        await asyncio.to_thread(generation.close)

    handlers = {path: endpoint_handler(path, e) for path, e in ENDPOINTS.items()}
    seq2seq_paths, seq2seq_root = seq2seq_handlers(models.find, body_of, _dumps)
    for path, handler in seq2seq_paths.items():  # summarization, translation, text2text-generation
        handlers[path] = guarded(path, handler)
    handlers["/tokenize"] = guarded("/tokenize", tokenize)
    handlers["/decode"] = guarded("/decode", decode)
    handlers["/"] = guarded("/", root)
    handlers["/invocations"] = guarded("/invocations", root)
    routes = [
        Route("/health", health),
        Route("/info", info),
        Route("/metrics", prometheus),
        Route("/v1/models", openai_models),
        Route("/", playground),
    ]
    # Starlette types a handler's exception as Exception; it calls this one with HTTPException only.
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={HTTPException: http_error})  # type: ignore[dict-item]
    return Guard(app, handlers, limits, metrics, generation.routes())
