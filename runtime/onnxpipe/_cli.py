"""The ``onnxpipe`` command: predict, info, bench, and subcommands that other parts register (export).

Errors that onnxpipe raises on purpose print one line (``error: ...``) and exit 2; ``export`` without the
export extra says which pip line installs it. ``predict`` streams one JSON line per input as it goes.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from importlib.metadata import entry_points
from pathlib import PurePath
from typing import Any

import numpy as np

from . import _cli_batch, _cli_generate, _cli_serve
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
from ._cli_tasks import add_task_arguments, implied_task, task_inputs, task_kwargs
from ._manifest import load_manifest
from ._resolve import resolve_model
from ._session import PROFILES, batch_dependent
from ._tasks import TABLE, canonical_task
from .errors import OnnxpipeError


def _jsonable(x: object) -> object:
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    raise TypeError(type(x).__name__)


class _Progress:
    """A counter on stderr (only when it is a terminal), refreshed at most 4 times a second."""

    def __init__(self, enabled: bool):
        self.enabled = enabled and sys.stderr.isatty()
        self.n = 0
        self.start = self.last = time.perf_counter()

    def tick(self) -> None:
        self.n += 1
        now = time.perf_counter()
        if self.enabled and now - self.last > 0.25:
            self.last = now
            print(f"\r{self.n} inputs, {self.n / (now - self.start):.0f}/s", end="", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.enabled and self.n:
            print(f"\r{self.n} inputs in {time.perf_counter() - self.start:.1f}s", file=sys.stderr)


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
    from ._factory import pipeline

    source = lines
    task = args.task or implied_task(args)
    if task is None:
        task = load_manifest(resolve_model(args.model), verify=False).task if args.model else "text-classification"
    source = task_inputs(canonical_task(task), args, lines)
    if source is None:
        raise SystemExit("error: no input: pass TEXT..., --input FILE, or - for stdin")
    pipe = pipeline(
        task,
        model=args.model,
        device=args.device,
        precision=args.precision,
        batch_size=args.batch_size,
        verify=not args.no_verify,
        profile=args.profile,
        format=args.format,
    )
    kwargs = {} if args.top_k is None else {"top_k": None if args.top_k == 0 else args.top_k}
    kwargs.update(task_kwargs(canonical_task(task), args))
    if isinstance(lines, InputLines):  # cut overlong lines relative to this model's maximum
        lines.max_length = pipe.tokenizer.model_max_length
    progress = _Progress(enabled=not args.texts)
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


def _invariance_text(inv: dict[str, Any]) -> str:
    """One variant's or candidate's batch_invariance figures (each text alone vs in padded batches)."""
    if "min_cosine" in inv:
        return f"min cosine {inv['min_cosine']:.6f}, mean {inv['mean_cosine']:.6f}"
    flips = inv["label_flips"]
    return (
        f"max score change {inv['max_score_change']:.2g}, p99 {inv['p99_score_change']:.2g}, "
        f"{flips} label flip{'' if flips == 1 else 's'}"
    )


def _print_recipe_search(found: dict[str, Any]) -> None:
    data = found["data"]
    print(
        f"        chosen by --int8-recipe search on {found['timing']['machine']} "
        f"({data['sentences']} labelled sentences, PyTorch accuracy {data['pytorch_accuracy']:.4f}):"
    )
    rows = {n: r for n, r in found["candidates"].items() if "skipped" not in r}
    w = max(map(len, found["candidates"]))
    print(
        f"        {'candidate':{w}s} {'accuracy':>8s} {'agrees':>7s} {'max dP':>7s} {'flips':>5s} {'invariant':>9s} "
        f"{'batch-1':>9s} {'sent/s':>7s} {'speed':>6s}"
    )
    for name, row in sorted(rows.items(), key=lambda kv: -kv[1]["speed_vs_default"]):
        mark = "*" if name == found["chosen"] else ("" if row["gates_met"] else "x")
        inv = row.get("batch_invariance")  # absent in folders searched before issue 11
        invariant = (
            "-" if inv is None else "yes" if row["batch_invariant"] else "run alone" if row["runs_alone"] else "no"
        )
        change = f"{inv['max_score_change']:7.2g} {inv['label_flips']:5d}" if inv else f"{'-':>7s} {'-':>5s}"
        print(
            f"      {mark:1s} {name:{w}s} {row['accuracy']:8.4f} {row['label_agreement_with_pytorch']:7.1%} "
            f"{change} {invariant:>9s} {row['batch1_p50_ms']:6.2f} ms {row['sentences_per_s']:7.0f} "
            f"{row['speed_vs_default']:5.2f}x"
        )
    for name, row in found["candidates"].items():
        if "skipped" in row:
            print(f"        {name:{w}s} skipped: {row['skipped']}")
    print(
        "        (* chosen, x misses the gates; max dP / flips: each sentence alone vs in padded batches; "
        f"invariant: in padded batches, or run alone by the runtime (dynamic); rule: {found['rule']})"
    )


def cmd_info(args: argparse.Namespace) -> int:
    manifest = load_manifest(resolve_model(args.model), verify=not args.no_verify)
    if getattr(args, "footprint", False):  # export's cmd_info call has no such argument
        from ._footprint import footprint, format_report

        report = footprint(manifest.folder, profile=args.profile, runs=args.runs)
        print(json.dumps(report, indent=2, sort_keys=True) if args.json else format_report(report))
        return 0
    if args.json:
        print(json.dumps(manifest.to_dict(), indent=2, sort_keys=True))
        return 0
    print(f"folder:        {manifest.folder}")
    print(f"format:        {manifest.format_version}")
    print(f"task:          {manifest.task} (serves: {', '.join(manifest.tasks)})")
    print(f"architecture:  {manifest.architecture}, hidden {manifest.hidden_size}, max length {manifest.max_length}")
    if manifest.labels:
        print(f"labels:        {', '.join(f'{k}={v}' for k, v in sorted(manifest.labels.items()))}")
    if manifest.pooling:
        print(f"pooling:       {manifest.pooling.mode}, normalize={manifest.pooling.normalize}")
    if manifest.vocab_pruning:
        vp = manifest.vocab_pruning
        print(
            f"vocabulary:    pruned {vp.get('vocab_before')} -> {vp.get('vocab_after')} tokens on "
            f"{PurePath(str(vp.get('corpus'))).name} (sha256 {str(vp.get('corpus_sha256'))[:12]}...)"
        )
    print(f"inputs:        {', '.join(manifest.inputs)}")
    print("variants:")
    for p, v in manifest.variants.items():
        size = manifest.files[v.file].size / 1e6
        val = v.validation or {}
        figures = ", ".join(
            f"{k} {val[k]:.3g}"
            for k in (
                "max_abs_diff_logits",
                "max_abs_diff_start_logits",
                "max_abs_diff_end_logits",
                "max_abs_diff_hidden",
                "label_agreement",
                "min_cosine_mean_pooled",
            )
            if k in val
        )
        # text-generation variants carry their own summary (logits diff, greedy agreement with PyTorch)
        figures = figures or val.get("summary", "")
        print(f"  {p:5s} {v.file:28s} {size:7.1f} MB  {figures or val.get('skipped', '')}")
        if v.ort is not None:
            ort_mb = manifest.files[v.ort.file].size / 1e6
            print(
                f"        ORT format: {v.ort.file} {ort_mb:.1f} MB (onnxruntime {v.ort.onnxruntime}, "
                f"{v.ort.optimization_level}; minimal build: {v.ort.required_operators})"
            )
        if (v.recipe or {}).get("method") == "MatMulNBits":
            r = v.recipe or {}
            print(
                f"        recipe: {r['bits']}-bit weight-only MatMulNBits, block {r.get('block_size')}, "
                f"{r.get('matmuls_quantized')} MatMuls quantized, {r.get('matmuls_kept_fp32')} kept fp32"
                + (f", graph {r['graph']}" if "graph" in r else "")
            )
        elif (v.recipe or {}).get("method") == "static":
            r = v.recipe or {}
            calib = r.get("calibration_data") or {}
            print(
                f"        recipe {r.get('name', '?')}: static QDQ {' / '.join(r.get('op_types', []))}, "
                f"{r.get('calibration')} calibration on {calib.get('sentences')} sentences of "
                f"{PurePath(str(calib.get('file'))).name}, graph {r.get('graph')}"
            )
        elif v.recipe:
            r = v.recipe
            disabled = v.cpu_disabled_optimizers
            off = f", no {' / '.join(disabled)} at load" if disabled else ""
            if r.get("residual_add_as_sum"):  # the same choice baked into the graph (issue 13)
                off += ", residual Add as Sum (no SkipLayerNorm fusion in any consumer)"
            print(
                f"        recipe {r.get('name', '?')}: {r.get('method')} {r.get('weight_type')}, "
                f"{'per-channel' if r.get('per_channel') else 'per-tensor'}, graph {r.get('graph')}{off}"
            )
        if batch_dependent(manifest, p):  # what execution="auto" does with it on CPU (issue 11)
            print("        runs each input alone on CPU (dynamic activation scales would tie it to its batch-mates)")
        if v.recipe_search:
            _print_recipe_search(v.recipe_search)
        if v.cpu_exact:
            print("        CPU-exact: weights 8-bit, all arithmetic float, so every CPU computes the same to ~1e-6")
        for c in v.cpus or []:  # the CPUs the file was checked on, against the exporting machine's answers
            print(
                f"        checked on {c['cpu']}: {c.get('n')} texts, {c.get('flips')} label flips, "
                f"|dP| max {c.get('max_abs_dp', float('nan')):.2g}, p99 {c.get('p99_abs_dp', float('nan')):.2g}"
            )
        inv = ((manifest.validation_data or {}).get("variants", {}).get(p) or {}).get("batch_invariance")
        if inv:  # every validation text alone vs inside the runtime's padded batches
            print(f"        alone vs batched: {_invariance_text(inv)}")
    vd = manifest.validation_data
    if vd and vd.get("pairs"):  # feature extraction: STS Benchmark Spearman x100
        per = ", ".join(
            f"{p} {v['batched']:.2f} batched / {v['one_at_a_time']:.2f} one at a time"
            for p, v in vd["variants"].items()
            if "batched" in v
        )
        print(
            f"STS Spearman:  {vd['pairs']} pairs ({PurePath(vd['file']).name}), x100: "
            f"PyTorch {vd['pytorch']:.2f}, {per}"
        )
    elif vd:
        per = ", ".join(
            f"{p} {v['accuracy']:.4f} (agrees {v['label_agreement_with_pytorch']:.1%})"
            for p, v in vd["variants"].items()
            if "accuracy" in v
        )
        print(f"accuracy:      {vd['sentences']} labelled sentences: PyTorch {vd['pytorch_accuracy']:.4f}, {per}")
    prov = manifest.provenance or {}
    print(f"source:        {prov.get('source')} ({prov.get('source_kind')}), exported {prov.get('exported_at')}")
    print(f"verified:      {'no (--no-verify)' if args.no_verify else 'sha256 of every file matches'}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from ._bench import bench, format_table

    def ints(text: str, what: str) -> list[int]:
        try:
            return [int(x) for x in text.split(",") if x.strip()]
        except ValueError:
            raise ValueError(f"--{what} {text!r}: give comma-separated integers, e.g. 1,8,32") from None

    report = bench(
        args.model,
        task=args.task,
        precision=args.precision,
        device=args.device,
        threads=args.threads,
        batch_sizes=ints(args.batch_sizes, "batch-sizes"),
        seq_lengths=ints(args.seq_lengths, "seq-lengths"),
        runs=args.runs,
        warmup=args.warmup,
        verify=not args.no_verify,
        profile=args.profile,
        format=args.format,
    )
    print(format_table(report), file=sys.stderr)
    text = json.dumps(report, indent=2, sort_keys=True) + "\n"
    if args.json_out:
        with open(args.json_out, "w", encoding="utf-8") as f:
            f.write(text)
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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="onnxpipe", description="Hugging Face pipelines on onnxruntime, no PyTorch.")
    sub = p.add_subparsers(dest="command", required=True)

    _plugin_commands(sub)

    pr = sub.add_parser("predict", help="run a model folder on texts; one JSON line per input")
    pr.add_argument("texts", nargs="*", help="texts to classify; '-' reads stdin, one text per line")
    pr.add_argument("--input", help="file with one text per line ('-' for stdin)")
    pr.add_argument("--model", help=f"model folder or name (default: {TABLE['text-classification'].default_model})")
    pr.add_argument("--task", help="default: the model folder's task")
    pr.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    pr.add_argument("--precision", choices=["int8", "int8-exact", "fp32", "fp16"])
    pr.add_argument("--top-k", type=int, help="labels / tokens / answers per input, best first (0: all labels)")
    pr.add_argument("--batch-size", type=int, default=32)
    pr.add_argument("--no-verify", action="store_true", help="skip the sha256 check at load")
    _cli_serve.add_session_arguments(pr)
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
    b.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    b.add_argument("--precision", choices=["int8", "int8-exact", "fp32", "fp16"])
    b.add_argument("--threads", type=int, help="intra-op threads (default: the profile's)")
    b.add_argument("--batch-sizes", default="1,8,32", help="comma-separated (default 1,8,32)")
    b.add_argument("--seq-lengths", default="16,64,128", help="tokens per input, comma-separated (default 16,64,128)")
    b.add_argument("--runs", type=int, default=20, help="timed runs per configuration (default 20)")
    b.add_argument("--warmup", type=int, default=3, help="untimed runs first (default 3)")
    b.add_argument("--json-out", metavar="FILE", help="write the JSON report here (default: stdout)")
    b.add_argument("--no-verify", action="store_true", help="skip the sha256 check at load")
    _cli_serve.add_session_arguments(b)
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
