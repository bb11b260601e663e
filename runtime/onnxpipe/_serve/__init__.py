"""``onnxpipe serve``: model folders behind a local HTTP endpoint, with dynamic batching across clients.

Needs the serve extra (``pip install 'onnxpipe[serve]'``: starlette and uvicorn); ``import onnxpipe`` never
imports this package. Modules: ``_app`` (routes and the admission guard), ``_protocol`` (uvicorn's httptools
protocol asking the guard as headers complete), ``_endpoints`` (request and response shapes as data),
``_batcher`` (queue and worker threads), ``_models`` (folders by name), ``_token_ids`` (token ids as
input), ``_limits``, ``_metrics`` (Prometheus text), ``playground.html`` (the page at ``/``).
"""

from __future__ import annotations

import gc
import importlib
import logging
import signal
import socket
import sys
from collections.abc import Sequence
from typing import Any

import uvicorn

from .._session_options import SessionOptions
from ._app import create_app, route_table
from ._limits import Limits
from ._models import ModelSet, load_model, parse_model_arg

__all__ = ["create_app", "serve", "configure_logging", "Limits", "ModelSet", "load_model"]

log = logging.getLogger("onnxpipe.serve")
FAST_STACK = "pip install httptools uvloop"
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
# How long a thread that wants the GIL waits before the holder is asked to hand it over (Python's default:
# 5 ms). The event loop takes and drops the GIL between its callbacks, and retakes it before a woken worker
# runs, so a worker back from the model (one input: ~0.6 ms on a core) waited up to the whole interval, its
# core idle. Measured side by side, wrk at 32 connections: the workers' blocked time 5 -> 3 % of the wall
# clock, and less server CPU per request (three runs: 1905 -> 1815, 1961 -> 1762, 1896 -> 1757 us).
SWITCH_INTERVAL_S = 0.0005
_stderr = logging.StreamHandler()  # stderr
_stderr.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s"))


def configure_logging(level: str = "warning") -> None:
    """Send the ``onnxpipe.serve`` log (the tracebacks of 500s among it) to stderr at ``level``, unless the
    application has configured a handler of its own for it or an ancestor (then that one gets the records).

    Example:
        >>> configure_logging("info")
    """
    if level not in LOG_LEVELS:
        raise ValueError(f"log_level={level!r}; use one of {', '.join(LOG_LEVELS)}")
    log.setLevel(level.upper())
    logger: logging.Logger | None = log
    while logger is not None:
        if any(h is not _stderr and not isinstance(h, logging.NullHandler) for h in logger.handlers):
            return
        logger = logger.parent if logger.propagate else None
    if _stderr not in log.handlers:
        log.addHandler(_stderr)


def http_stack() -> tuple[str, str]:
    """uvicorn's HTTP parser and event loop: httptools and uvloop where installed (the serve extra brings
    both), else the pure-Python h11 and asyncio, which cost the event loop a quarter to a third more CPU
    per request, and four times as much per 429 (bench/results/serve_overhead.md).

    Example:
        >>> http_stack()
        ('httptools', 'uvloop')
    """

    def importable(module: str) -> bool:
        try:
            importlib.import_module(module)
        except ImportError:
            return False
        return True

    stack = ("httptools" if importable("httptools") else "h11", "uvloop" if importable("uvloop") else "asyncio")
    if stack != ("httptools", "uvloop"):
        log.info("serving with %s and %s; %s for less CPU per request", *stack, FAST_STACK)
    return stack


def serve(
    models: Sequence[str],
    host: str = "127.0.0.1",
    port: int = 8080,
    access_log: bool = False,
    limits: Limits = Limits(),
    options: SessionOptions = SessionOptions(),
    graceful_timeout: float = 30.0,
    keep_alive_timeout: float = 5.0,
    expose_paths: bool = False,
    log_level: str = "warning",
) -> int:
    """Load ``models`` (paths, names or ``NAME=PATH``) and serve them until SIGTERM/SIGINT; return 0.

    ``log_level`` applies to uvicorn's log and to ``onnxpipe.serve``'s, which goes to stderr (the traceback of
    every 500 among it) unless the application configured logging of its own.

    On SIGTERM the server stops accepting connections, finishes the requests in flight (up to
    ``graceful_timeout`` seconds) and returns 0. An idle connection closes after ``keep_alive_timeout``
    seconds; ``limits`` bounds each request's headers and body in time, size and count. ``GET /info`` shows
    the model folders' paths only with ``expose_paths``. ``options`` load every model (as ``pipeline()``'s
    session settings); with the default execution a dynamic-int8 model runs every input alone, so an answer
    never depends on the other requests queued with it.

    Example:
        >>> serve(["models/minilm-sst2"], port=8080)   # then: curl localhost:8080/predict -d '{"inputs": "hi"}'
    """
    # The port is taken before the models load (seconds): a port in use is said at once, and no request can
    # connect until the socket listens, just before the start-up line.
    try:
        sock = bind(host, port)
    except OSError as e:
        return _cannot_listen(host, port, e)
    port = sock.getsockname()[1]  # the one the system chose for port 0
    try:
        loaded = [
            load_model(name, path, options, limits.max_input_length) for name, path in map(parse_model_arg, models)
        ]
    except BaseException:
        sock.close()
        raise
    configure_logging(log_level)
    app = create_app(ModelSet(loaded), limits, expose_paths)
    http, loop = http_stack()
    protocol: Any = http
    slower = ""
    if http == "httptools":  # 429s written by the protocol itself, half the loop's CPU of an ASGI refusal
        from ._protocol import HOOK, refusing_protocol

        protocol = refusing_protocol(app) or http
        if protocol == http:
            slower = (
                f"; uvicorn {uvicorn.__version__} has no HttpToolsProtocol.{HOOK}, so 429s go through ASGI "
                "(pip install 'uvicorn>=0.45')"
            )
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        http=protocol,
        loop=loop,
        ws="none",
        # The server does not use client addresses (no X-Forwarded-For rewriting: one ASGI layer less per request).
        proxy_headers=False,
        server_header=False,
        log_level="info" if access_log else log_level,  # uvicorn logs each request at INFO
        access_log=access_log,
        lifespan="on",
        # uvicorn annotates int, but passes it to asyncio.wait_for: a float works
        timeout_graceful_shutdown=graceful_timeout,  # type: ignore[arg-type]
        timeout_keep_alive=keep_alive_timeout,  # type: ignore[arg-type]  # a float works: it goes to call_later
        backlog=2048,
    )
    server = uvicorn.Server(config)
    # Everything loaded so far lives as long as the server. Left to the collector, each full collection walks it
    # again: ~7 ms for MiniLM's process, 14 ms measured inside a burst of requests, every request waiting.
    # Frozen, a full collection walks only what requests allocate.
    gc.collect()
    gc.freeze()
    # uvicorn re-raises the signal it caught once it has shut down, which would end the process with
    # "killed by SIGTERM" instead of exit 0; a handler of our own in place of the default absorbs it.
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: None)
    names = ", ".join(f"{m.name} ({', '.join(sorted(m.pipelines))})" for m in loaded)
    faster = "" if (http, loop) == ("httptools", "uvloop") else f"; {FAST_STACK} for less CPU per request"
    try:
        sock.listen(2048)  # the line below comes once the socket listens: a client that reads it can connect
    except OSError as e:  # another process bound the port too (SO_REUSEADDR) and listened first
        sock.close()
        return _cannot_listen(host, port, e)
    print(
        f"onnxpipe serve: http://{host}:{port} serving {names} ({http}, {loop}{faster}{slower})\n"
        + startup_routes(ModelSet(loaded)),
        file=sys.stderr,
        flush=True,
    )
    interval = sys.getswitchinterval()
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    try:
        server.run(sockets=[sock])
    finally:
        signal.signal(signal.SIGTERM, previous)
        sys.setswitchinterval(interval)
        sock.close()  # uvicorn closes it on shutdown; not when it failed to start
    return 0 if server.started else 1


def _cannot_listen(host: str, port: int, e: OSError) -> int:
    print(
        f"error: cannot listen on {host}:{port}: {e.strerror or e}; is another server using the port? "
        "choose another with --port",
        file=sys.stderr,
        flush=True,
    )
    return 2


def bind(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port``, not yet listening (uvicorn's own binding logs and exits 1 when the port
    is taken)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def startup_routes(models: ModelSet) -> str:
    """Which model answers which endpoint when a request names none (one line per model), and a warning where
    an embedding endpoint is answered from a classifier's hidden states."""
    by_model: dict[str | None, list[str]] = {}
    for path, route in route_table(models).items():
        if route["models"]:  # an endpoint no model serves is left out
            by_model.setdefault(route["default"], []).append(path)
    lines = [
        f"  {m.name} ({m.main_task}) answers {', '.join(by_model.get(m.name, [])) or 'requests that name it'}"
        for m in models.by_name.values()
    ]
    if by_model.get(None):
        lines.append(f'  {", ".join(by_model[None])}: only requests that name a model ("model": NAME)')
    only = next(iter(models.by_name.values()))
    if len(models.by_name) == 1 and only.main_task != "sentence-embeddings" and "sentence-embeddings" in only.pipelines:
        lines.append(
            f"  note: /embed and /v1/embeddings answer {only.name}'s pooled hidden states: it is a "
            f"{only.main_task} model, not trained for embeddings"
        )
    return "\n".join(lines)


logging.getLogger("onnxpipe.serve").addHandler(logging.NullHandler())
