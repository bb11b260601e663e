"""The ``onnxpipe`` command: predict, info, bench, and subcommands that other parts register (export).

Errors that onnxpipe raises on purpose print one line (``error: ...``) and exit 2; ``export`` without the
export extra says which pip line installs it. ``predict`` streams one JSON line per input as it goes.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterable, Sequence
from importlib.metadata import PackageNotFoundError, entry_points, version

import numpy as np

from . import __version__, _cli_batch, _cli_generate, _cli_serve
from ._cli_files import check_new_file, write_whole
from ._cli_io import (
    InputLines,
    OutputError,
    Terminated,
    binary_stdin,
    flush_on_signals,
    json_line,
    silence_stdout,
    write,
)
from ._cli_progress import Progress
from ._cli_tasks import add_task_arguments, implied_task, task_inputs, task_kwargs
from ._info import format_manifest
from ._manifest import load_manifest
from ._resolve import resolve_model
from ._session import PROFILES
from ._session_options import SessionOptions, add_session_arguments
from ._tasks import TABLE, canonical_task
from .errors import OnnxpipeError


def _jsonable(x: object) -> object:
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    raise TypeError(type(x).__name__)


def cmd_predict(args: argparse.Namespace) -> int:
    if args.input and args.texts:
        raise SystemExit("error: give texts as arguments or --input FILE, not both")
    if args.input == "-" or args.texts == ["-"]:
        return _predict(args, InputLines(binary_stdin()))
    if args.input:
        try:
            stream = open(args.input, "rb")  # bytes: split on \n only, exactly like stdin
        except OSError as e:
            raise ValueError(f"--input {args.input}: cannot read it ({e.strerror or e})") from None
        with stream:
            return _predict(args, InputLines(stream))
    return _predict(args, args.texts or None)


def _predict(args: argparse.Namespace, lines: Iterable[str] | None) -> int:
    from ._factory import build_pipeline

    source = lines
    task = args.task or implied_task(args)
    if task is None:
        task = load_manifest(resolve_model(args.model), verify=False).task if args.model else "text-classification"
    source = task_inputs(canonical_task(task), args, lines)
    if source is None:
        raise SystemExit("error: no input: pass TEXT..., --input FILE, or - for stdin")
    pipe = build_pipeline(task, args.model, SessionOptions.from_args(args), batch_size=args.batch_size)
    kwargs = {} if args.top_k is None else {"top_k": None if args.top_k == 0 else args.top_k}
    kwargs.update(task_kwargs(canonical_task(task), args))
    if isinstance(lines, InputLines):  # cut overlong lines relative to this model's maximum
        lines.max_length = pipe.tokenizer.model_max_length
    progress = Progress(enabled=not args.texts)
    out = sys.stdout
    try:
        with flush_on_signals():
            for n, result in enumerate(pipe.iter(source, **kwargs)):
                write(out, json_line(result, n, _jsonable))
                progress.tick()
    except Terminated as t:  # what is finished reaches the output before we go
        _flush_quietly()
        progress.close()
        return 128 + t.signum
    progress.close()
    return 0


def _flush_quietly() -> bool:
    """Flush stdout; when it cannot be written (SIGHUP after the terminal went away, a full disk), point it at
    /dev/null so that the flush at exit prints no traceback, and return False."""
    try:
        sys.stdout.flush()
        return True
    except (OSError, AttributeError, ValueError):
        silence_stdout()
        return False


def cmd_info(args: argparse.Namespace) -> int:
    manifest = load_manifest(resolve_model(args.model), verify=not args.no_verify)
    if args.footprint:
        from ._footprint import footprint, format_report

        report = footprint(manifest.folder, profile=args.profile, runs=args.runs)
        print(json.dumps(report, indent=2, sort_keys=True) if args.json else format_report(report))
        return 0
    if args.json:
        print(json.dumps(manifest.to_dict(), indent=2, sort_keys=True))
        return 0
    print(format_manifest(manifest, verified=not args.no_verify))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from ._bench import bench, format_table

    def ints(text: str, what: str) -> list[int]:
        try:
            return [int(x) for x in text.split(",") if x.strip()]
        except ValueError:
            raise ValueError(f"--{what} {text!r}: give comma-separated integers, e.g. 1,8,32") from None

    if args.json_out:
        check_new_file(args.json_out, "--json-out", args.force)
    report = bench(
        args.model,
        task=args.task,
        options=SessionOptions.from_args(args),
        batch_sizes=ints(args.batch_sizes, "batch-sizes"),
        seq_lengths=ints(args.seq_lengths, "seq-lengths"),
        runs=args.runs,
        warmup=args.warmup,
    )
    print(format_table(report), file=sys.stderr)
    text = json.dumps(report, indent=2, sort_keys=True) + "\n"
    if args.json_out:
        write_whole(args.json_out, text)
    else:
        sys.stdout.write(text)
    return 0


def _plugin_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Subcommands other packages register under the ``onnxpipe.commands`` entry point (``onnxpipe export``
    comes from the export stage this way, so the runtime never imports it by name)."""
    for ep in sorted(entry_points(group="onnxpipe.commands"), key=lambda ep: ep.name):
        try:
            register = ep.load()
        except Exception as e:  # a broken plugin must not break predict/info; the command says why
            p = sub.add_parser(ep.name, help=f"unavailable: {e}")
            p.set_defaults(func=_unavailable(ep.name, e))
            continue
        register(sub)


def _unavailable(name: str, error: Exception) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        print(
            f"error: `onnxpipe {name}` could not be loaded ({error}); reinstall onnxpipe with its extras, "
            "e.g. pip install 'onnxpipe[export]'",
            file=sys.stderr,
        )
        return 2

    return run


def package_version() -> str:
    """The installed distribution's version (what pip installed), else the package's own ``__version__`` (a
    source tree on PYTHONPATH, with no metadata)."""
    try:
        return version("onnxpipe")
    except PackageNotFoundError:
        return __version__


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="onnxpipe", description="Hugging Face pipelines on onnxruntime, no PyTorch.")
    p.add_argument("--version", action="version", version=f"onnxpipe {package_version()}")
    sub = p.add_subparsers(dest="command", required=True)

    _plugin_commands(sub)

    pr = sub.add_parser("predict", help="run a model folder on texts; one JSON line per input")
    pr.add_argument("texts", nargs="*", help="texts to classify; '-' reads stdin, one text per line")
    pr.add_argument("--input", help="file with one text per line ('-' for stdin)")
    pr.add_argument("--model", help=f"model folder or name (default: {TABLE['text-classification'].default_model})")
    pr.add_argument("--task", help="default: the model folder's task")
    pr.add_argument("--top-k", type=int, help="labels / tokens / answers per input, best first (0: all labels)")
    pr.add_argument("--batch-size", type=int, default=32)
    add_session_arguments(pr)
    add_task_arguments(pr)
    pr.set_defaults(func=cmd_predict)

    i = sub.add_parser("info", help="summarise a model folder's manifest")
    i.add_argument("model", help="model folder or name")
    i.add_argument("--json", action="store_true", help="print the whole manifest")
    i.add_argument("--no-verify", action="store_true", help="skip the sha256 check")
    i.add_argument(
        "--footprint",
        action="store_true",
        help="measure instead: bytes on disk per variant and format, installed runtime size, and in fresh "
        "processes peak RSS at batch 1 and cold start to the first prediction (--json: as JSON)",
    )
    i.add_argument("--profile", default="default", choices=list(PROFILES), help="with --footprint: the session profile")
    i.add_argument("--runs", type=int, default=3, help="with --footprint: fresh processes per variant (median)")
    i.set_defaults(func=cmd_info)

    b = sub.add_parser("bench", help="time a model folder: p50/p90/p99 over a batch x length sweep, JSON out")
    b.add_argument("model", help="model folder or name")
    b.add_argument("--task", help="default: the model folder's task")
    b.add_argument("--batch-sizes", default="1,8,32", help="comma-separated (default 1,8,32)")
    b.add_argument("--seq-lengths", default="16,64,128", help="tokens per input, comma-separated (default 16,64,128)")
    b.add_argument("--runs", type=int, default=20, help="timed runs per configuration (default 20)")
    b.add_argument("--warmup", type=int, default=3, help="untimed runs first (default 3)")
    b.add_argument("--json-out", metavar="FILE", help="write the JSON report here (default: stdout)")
    b.add_argument("--force", action="store_true", help="replace --json-out if it exists")
    add_session_arguments(b)
    b.set_defaults(func=cmd_bench)
    _cli_serve.add_parser(sub)  # starlette / uvicorn, pyarrow / ray load only when these commands run
    _cli_batch.add_parser(sub)
    _cli_generate.add_parser(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        writes_stdout = args.command in ("predict", "info", "generate") or args.command == "bench" and not args.json_out
        if sys.stdout is None and writes_stdout:  # fd 1 was closed at start: the results would vanish
            raise OutputError("stdout is closed; redirect it to a file or a pipe")
        code: int = args.func(args)
        if sys.stdout is not None:
            sys.stdout.flush()  # here, so that a full disk is reported, not met at exit
        return code
    except BrokenPipeError:  # `onnxpipe predict ... | head`: the reader has what it wanted
        silence_stdout()
        return 0
    except OutputError as e:
        print(f"error: {e}", file=sys.stderr)
        silence_stdout()
        return 2
    except OSError as e:  # e.g. a full disk under `info > FILE`, or an unwritable --json-out
        stdout_failed = not _flush_quietly()  # stdout still refuses: the error was stdout's
        print(f"error: cannot write to stdout ({e.strerror or e})" if stdout_failed else f"error: {e}", file=sys.stderr)
        return 2
    except OnnxpipeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (TypeError, ValueError) as e:  # bad input, named by index
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
