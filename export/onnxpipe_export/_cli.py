"""``onnxpipe export``: registered into the ``onnxpipe`` command through the ``onnxpipe.commands`` entry point,
so the runtime's CLI never names the export stage. Registering imports nothing heavy (the recipe names are
plain data); the command checks for the export extra when it runs and prints the pip line if it is missing.
"""

from __future__ import annotations

import argparse
import sys

from ._int8_recipes import DEFAULT_INT8, INT8_CANDIDATES


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``export`` subcommand to the ``onnxpipe`` parser."""
    from onnxpipe._for_export import export_task_names

    e = sub.add_parser("export", help="turn a PyTorch checkpoint into a model folder (needs onnxpipe[export])")
    e.add_argument("source", help="checkpoint folder or hub model id")
    e.add_argument(
        "--task",
        default="text-classification",
        help=f"one of: {', '.join(sorted(export_task_names()))} (an NLI model exported as "
        "zero-shot-classification also serves text-classification)",
    )
    e.add_argument("--out", required=True, help="model folder to create")
    e.add_argument(
        "--precision",
        default="int8,fp32,fp16",
        help="comma-separated: int8, fp32, fp16, int8-exact (8-bit weights, float arithmetic: the same numbers on "
        "every CPU)",
    )
    e.add_argument(
        "--force",
        action="store_true",
        help="replace an existing onnxpipe model folder (or an empty folder) at --out; never anything else",
    )
    e.add_argument("--allow-pickle", action="store_true", help="allow pickled (.bin) weights: runs code; trust it")
    e.add_argument("--trust-remote-code", action="store_true", help="allow the checkpoint's own Python code")
    e.add_argument("--revision", help="hub revision (branch, tag or commit)")
    e.add_argument(
        "--validation-data",
        metavar="FILE",
        help="text-classification: labelled sentences (label<TAB>text, header line), accuracy per variant; "
        "feature-extraction: STS Benchmark pairs (e.g. dev.csv), Spearman x100 per variant, and the "
        "export fails when int8 falls more than 1 point below fp32",
    )
    e.add_argument(
        "--calibration-data",
        metavar="FILE",
        help="sentences that static int8 recipes calibrate activation ranges on: label<TAB>text rows after a "
        "header line, or one sentence per line (e.g. the task's training set; never --validation-data). "
        "Without it --int8-recipe search skips the static candidates",
    )
    e.add_argument(
        "--int8-recipe",
        default="default",
        metavar="NAME",
        help=f"default ({DEFAULT_INT8}), search (quantize every candidate, score it on "
        "--validation-data alone and in padded batches, time it here, keep the fastest within 1 point of "
        "PyTorch and 98%% label agreement whose answers do not depend on the batch as the runtime runs it "
        "and that cannot saturate on any CPU; all figures go in the manifest), or a candidate: "
        + ", ".join(INT8_CANDIDATES),
    )
    e.add_argument(
        "--int8-candidates",
        metavar="NAMES",
        help="with --int8-recipe search: only these comma-separated candidates (the default recipe is always "
        "added: speeds are relative to it); for slow machines. The manifest records which were tried",
    )
    e.add_argument(
        "--ort",
        action="store_true",
        help="also write each variant but fp16 in onnxruntime's ORT format (onnx/<name>.ort, for minimal and "
        "mobile builds; load it with --format ort) and required_operators.config, the operators a minimal "
        "build needs (--include_ops_by_config)",
    )
    e.add_argument(
        "--prune-vocab",
        metavar="CORPUS",
        help="keep only the tokens this corpus needs (one text per line, or a TSV with a header): a smaller "
        "embedding matrix and tokenizer.json for one language or domain; unseen words split into kept pieces",
    )
    e.add_argument("--quiet", action="store_true", help="no progress bar")
    # Hidden: skips the sha256 check when the summary after the export loads the folder back.
    e.add_argument("--no-verify", action="store_true", help=argparse.SUPPRESS)
    e.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    from onnxpipe._for_export import format_manifest, load_manifest
    from onnxpipe.errors import ExportExtraMissingError

    from . import export, require_extra

    try:
        require_extra()
    except ExportExtraMissingError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = export(
        args.source,
        task=args.task,
        out=args.out,
        precisions=args.precision,
        force=args.force,
        allow_pickle=args.allow_pickle,
        trust_remote_code=args.trust_remote_code,
        revision=args.revision,
        progress=not args.quiet,
        validation_data=args.validation_data,
        int8_recipe=args.int8_recipe,
        ort=args.ort,
        calibration_data=args.calibration_data,
        prune_vocab=args.prune_vocab,
        int8_candidates=args.int8_candidates,
    )
    print(f"wrote {out}")
    print(format_manifest(load_manifest(out, verify=not args.no_verify), verified=not args.no_verify))
    return 0
