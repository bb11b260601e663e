"""``onnxpipe serve``: the subcommand's arguments and the kind failure without the serve extra."""

from __future__ import annotations

import argparse
import importlib.util
import sys

from ._pipelines._base import DEFAULT_BATCH_TOKENS
from ._session_options import SessionOptions, add_session_arguments
from ._tasks import TABLE

INSTALL = "pip install 'onnxpipe[serve]'"
DEFAULT_MODEL = TABLE["text-classification"].default_model or "minilm-sst2"


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Add ``serve`` to the ``onnxpipe`` command. ``add_parser(parser.add_subparsers())``"""
    s = subparsers.add_parser("serve", help=f"serve model folders over HTTP with dynamic batching (needs {INSTALL})")
    s.add_argument(
        "models",
        nargs="*",
        metavar="MODEL",
        help=f"model folder, name, or NAME=PATH (several allowed; default: the embedded {DEFAULT_MODEL})",
    )
    s.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    s.add_argument("--port", type=int, default=8080)
    s.add_argument(
        "--max-batch-tokens",
        type=int,
        default=DEFAULT_BATCH_TOKENS,
        help=f"padded tokens per model call at most (default {DEFAULT_BATCH_TOKENS})",
    )
    s.add_argument(
        "--max-concurrent-requests",
        type=int,
        default=512,
        help="requests in flight at most; past it the server answers 429 at once (default 512)",
    )
    s.add_argument(
        "--max-client-batch-size", type=int, default=32, help="inputs per request at most; past it 413 (default 32)"
    )
    s.add_argument(
        "--max-input-length",
        type=int,
        help="tokens per input at most (default: each model's maximum); longer inputs get 422 "
        "unless the request says truncate",
    )
    s.add_argument(
        "--auto-truncate",
        action="store_true",
        help='cut inputs past the maximum length to it instead of answering 422 (a request\'s "truncate" '
        "field still decides for that request)",
    )
    s.add_argument("--payload-limit", type=int, default=2_000_000, help="request body bytes at most (default 2 MB)")
    s.add_argument(
        "--header-timeout",
        type=float,
        default=10.0,
        help="seconds from a connection's start (or a request's first byte) to the end of the request's headers; "
        "past it 408 and the connection closes (default 10)",
    )
    s.add_argument(
        "--body-timeout",
        type=float,
        default=30.0,
        help="seconds from the end of a request's headers to the end of its body; past it 408 and the connection "
        "closes, so a stalled upload cannot hold an admission slot (default 30)",
    )
    s.add_argument(
        "--keep-alive-timeout",
        type=float,
        default=5.0,
        help="seconds an idle connection stays open between requests (default 5, uvicorn's)",
    )
    add_session_arguments(s)
    s.add_argument(
        "--graceful-timeout",
        type=float,
        default=30.0,
        help="seconds to finish in-flight requests after SIGTERM (default 30)",
    )
    s.add_argument(
        "--expose-paths",
        action="store_true",
        help="GET /info shows each model folder's path (default: names only; any client can read /info)",
    )
    s.add_argument(
        "--log-level",
        default="warning",
        choices=["debug", "info", "warning", "error", "critical"],
        help="the server's log on stderr (default warning: every 500's traceback, start-up problems)",
    )
    s.add_argument(
        "--access-log",
        action="store_true",
        help="log every request (and uvicorn's start-up lines) to stderr; off by default, as it costs CPU per request",
    )
    s.set_defaults(func=cmd_serve)
    return s


def cmd_serve(args: argparse.Namespace) -> int:
    missing = [m for m in ("starlette", "uvicorn", "prometheus_client") if importlib.util.find_spec(m) is None]
    if missing:
        print(
            f"error: onnxpipe serve needs {', '.join(missing)}. Install the serve extra with: {INSTALL}",
            file=sys.stderr,
        )
        return 2
    from ._serve import Limits, serve

    limits = Limits(
        max_batch_tokens=args.max_batch_tokens,
        max_concurrent_requests=args.max_concurrent_requests,
        max_client_batch_size=args.max_client_batch_size,
        max_input_length=args.max_input_length,
        payload_limit=args.payload_limit,
        header_timeout=args.header_timeout,
        body_timeout=args.body_timeout,
        auto_truncate=args.auto_truncate,
    )
    return serve(
        args.models or [DEFAULT_MODEL],
        host=args.host,
        port=args.port,
        access_log=args.access_log,
        limits=limits,
        options=SessionOptions.from_args(args),
        graceful_timeout=args.graceful_timeout,
        keep_alive_timeout=args.keep_alive_timeout,
        expose_paths=args.expose_paths,
        log_level=args.log_level,
    )
