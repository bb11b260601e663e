"""``onnxpipe batch``: a whole file (Parquet, JSONL, CSV, text) through a task into Parquet, here or on Ray.

``--engine local`` runs in this process; ``--engine ray`` runs the same job on Ray actors (a local Ray, or
the cluster at ``RAY_ADDRESS``) and writes the same file. pyarrow (and ray) are imported only when the
command runs, so ``onnxpipe --help`` and ``import onnxpipe`` stay light; without them it prints the pip line.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Any

from ._cli_progress import Progress
from ._cli_tasks import add_task_arguments, task_kwargs
from ._manifest import load_manifest
from ._resolve import resolve_model
from ._session_options import add_session_arguments
from ._tasks import canonical_task

_PIP = {"local": "pip install 'onnxpipe[batch]'", "ray": "pip install 'onnxpipe[ray]'"}


def cmd_batch(args: argparse.Namespace) -> int:
    needs = ["pyarrow"] + (["ray.data"] if args.engine == "ray" else [])
    for module in needs:
        try:
            importlib.import_module(module)
        except ImportError:
            print(
                f"error: --engine {args.engine} needs {module.split('.')[0]}. Install it with: {_PIP[args.engine]}",
                file=sys.stderr,
            )
            return 2
    from ._batch_job import run_batch

    if args.engine == "ray":
        from . import ray  # noqa: F401  (registers the Ray engine)
    from ._cli_io import Terminated, flush_on_signals

    task = canonical_task(args.task or load_manifest(resolve_model(args.model), verify=False).task)
    kwargs = task_kwargs(task, args)
    if args.top_k is not None:
        kwargs["top_k"] = None if args.top_k == 0 else args.top_k
    progress = Progress(enabled=True)
    try:
        # SIGTERM/SIGHUP unwind like Ctrl-C, so the writer deletes its temporary file on the way out.
        with flush_on_signals():
            report = _run(run_batch, args, task, progress, kwargs)
    except Terminated as t:
        progress.close()
        print(f"stopped by signal {t.signum}; nothing was written to {args.output}", file=sys.stderr)
        return 128 + t.signum
    progress.close()
    return _report(report, args)


def _run(run_batch: Any, args: argparse.Namespace, task: str, progress: Any, kwargs: dict[str, Any]) -> Any:
    return run_batch(
        args.model,
        args.input,
        args.output,
        task=task,
        column=args.column,
        pair_column=args.pair_column,
        input_format=args.format,
        engine=args.engine,
        actors=args.actors,
        cpus_per_actor=args.cpus_per_actor,
        **({} if args.retries is None else {"retries": args.retries}),
        batch_rows=args.batch_rows,
        on_error=args.on_error,
        prefix=args.prefix,
        threads=args.threads,
        precision=args.precision,
        verify=not args.no_verify,
        progress=progress,
        force=args.force,
        **kwargs,
    )


def _report(report: dict[str, Any], args: argparse.Namespace) -> int:
    for e in report["first_errors"]:
        print(f"row {e['row']}: {e['error']}", file=sys.stderr)
    more = report["errors"] - len(report["first_errors"])
    print(
        f"{'… and ' + str(more) + ' more; ' if more > 0 else ''}wrote {report['rows']} rows "
        f"({report['errors']} with an error) to {report['output']} in {report['seconds']:.1f}s "
        f"({report['rows'] / max(report['seconds'], 1e-9):.0f} rows/s, engine {args.engine})",
        file=sys.stderr,
    )
    return 0


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    b = sub.add_parser(
        "batch",
        help="run a task over a Parquet/JSONL/CSV/text file into Parquet, here or on Ray "
        "(needs onnxpipe[batch] or onnxpipe[ray])",
    )
    b.add_argument("model", help="model folder or name")
    b.add_argument("--input", required=True, help="Parquet, JSONL, CSV or text file: a path or a pyarrow URI (s3://…)")
    b.add_argument(
        "--output",
        required=True,
        help="Parquet file to write (.parquet or .pq), moved into place when the job succeeds; never the input",
    )
    b.add_argument("--force", action="store_true", help="replace --output if it exists")
    b.add_argument("--format", choices=["parquet", "jsonl", "csv", "tsv", "text"], help="default: from the file name")
    b.add_argument("--column", help="the text column (default text; question for question-answering)")
    b.add_argument("--pair-column", help="text_pair for text-classification; context for question-answering")
    b.add_argument("--task", help="default: the model folder's task")
    b.add_argument(
        "--engine",
        default="local",
        choices=["local", "ray"],
        help="local: this process; ray: Ray actors (local Ray, or the cluster at RAY_ADDRESS)",
    )
    b.add_argument("--actors", type=int, default=1, help="Ray actors (default 1)")
    b.add_argument("--cpus-per-actor", type=float, default=1, help="CPUs per actor = its onnxruntime threads")
    b.add_argument(
        "--retries",
        type=int,
        # The default lives in _batch_job (DEFAULT_RETRIES), which imports pyarrow: not at `onnxpipe --help`.
        help="Ray: times a batch is retried, on a restarted actor, after its actor died (default 3); then the "
        "job fails",
    )
    b.add_argument("--batch-rows", type=int, default=2048, help="rows per batch (default 2048, one pipeline chunk)")
    b.add_argument(
        "--on-error",
        default="skip",
        choices=["skip", "fail"],
        help="skip: a bad row gets its error in the error column; fail: stop, write nothing",
    )
    b.add_argument("--prefix", default="", help="prefix for the output column names (e.g. pred_)")
    b.add_argument("--top-k", type=int, help="labels / answers per row, best first (0: all labels)")
    # --format is the input file's here; the engines set the session's threads (an actor's CPUs on Ray).
    add_session_arguments(
        b,
        exclude=("device", "format", "profile", "execution"),
        threads_help="local engine: onnxruntime threads (default: the usable cores)",
    )
    add_task_arguments(b)
    b.set_defaults(func=cmd_batch)
