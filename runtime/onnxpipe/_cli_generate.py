"""``onnxpipe generate``: continue a prompt with a text-generation model folder, printed as it streams.

onnxpipe generate --model models/gpt2 "Once upon a time" --max-new-tokens 40 --stream
"""

from __future__ import annotations

import argparse
import sys

from ._factory import build_pipeline
from ._session_options import SessionOptions, add_session_arguments


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:  # type: ignore[type-arg]
    """Add ``generate`` to the ``onnxpipe`` command. ``add_parser(parser.add_subparsers())``"""
    g: argparse.ArgumentParser = subparsers.add_parser(
        "generate", help="continue a prompt with a text-generation model folder"
    )
    g.add_argument("prompt", help="the text to continue ('-' reads it from stdin)")
    g.add_argument("--model", required=True, help="model folder or name exported with --task text-generation")
    g.add_argument("--max-new-tokens", type=int, default=None, help="tokens to generate at most (default 256)")
    g.add_argument(
        "--temperature",
        type=float,
        default=None,
        help="sampling temperature (default 0.7, or the model's generation_config.json)",
    )
    g.add_argument("--top-k", type=int, default=None)
    g.add_argument("--top-p", type=float, default=None)
    g.add_argument("--repetition-penalty", type=float, default=None)
    g.add_argument("--greedy", action="store_true", help="no sampling: always the likeliest token")
    g.add_argument("--seed", type=int, default=None, help="seed for sampling (same seed, same text)")
    g.add_argument("--stop", action="append", default=None, metavar="TEXT", help="stop string (repeatable)")
    g.add_argument("--stream", action="store_true", help="print the text as it is generated")
    add_session_arguments(g)
    g.set_defaults(func=cmd_generate)
    return g


def cmd_generate(args: argparse.Namespace) -> int:
    prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
    generator = build_pipeline("text-generation", args.model, SessionOptions.from_args(args))
    kwargs = {
        "max_new_tokens": args.max_new_tokens,
        "temperature": args.temperature,
        "top_k": args.top_k,
        "top_p": args.top_p,
        "repetition_penalty": args.repetition_penalty,
        "seed": args.seed,
        "stop_strings": args.stop,
    }
    if args.greedy:
        kwargs["do_sample"] = False
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    if args.stream:
        pieces = generator.stream(prompt, **kwargs)  # type: ignore[attr-defined]
        first = next(pieces, "")  # bad arguments raise here, before the prompt is echoed
        sys.stdout.write(prompt + first)
        sys.stdout.flush()
        for piece in pieces:
            sys.stdout.write(piece)
            sys.stdout.flush()
    else:
        sys.stdout.write(prompt + generator(prompt, return_full_text=False, **kwargs)[0]["generated_text"])
    sys.stdout.write("\n")
    return 0
