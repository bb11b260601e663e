"""The export recipe, start to finish: ``export()`` checks the options, then runs a list of named steps
(``_steps``), one progress-bar tick each, that pass one ``_Run`` along.

refuse an output it must not write (_output.prepare) -> load and check the checkpoint -> PyTorch's reference
outputs -> export fp32 -> fuse -> quantize / fp16 (_variants) -> write tokenizer and config -> describe the
folder (_assemble.draft_manifest) -> validate every variant against PyTorch (_validate) -> list and hash the
files, write the manifest through the runtime's typed contract (_assemble) -> move the finished folder into
place with a rename that never replaces what appeared meanwhile. Everything is built in a hidden sibling folder
(_output.staging), so an interrupted export never leaves a half-written model folder behind. A file error on the
way (full disk, permissions) is one ExportError naming the file and the remedy.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from onnxpipe._for_export import AutoTokenizer
from onnxpipe.errors import ExportError

from ._ecosystem import max_seq_length, write_ecosystem_files
from ._extra import require_extra
from ._output import Target, check_space, file_errors, fsync_tree, place, prepare, staging
from ._registry import canonical_export_task, folder_tasks
from ._variants import VARIANT_FILES


def _parse_precisions(precisions: Any) -> list[str]:
    if isinstance(precisions, str):
        precisions = [p.strip() for p in precisions.split(",") if p.strip()]
    bad = [p for p in precisions if p not in VARIANT_FILES]
    if bad or not precisions:
        raise ExportError(f"unknown precision(s) {bad or precisions}; choose from {sorted(VARIANT_FILES)}")
    return list(dict.fromkeys(precisions))


def _max_length(ckpt: Any) -> int:
    tok_max = getattr(ckpt.tokenizer, "model_max_length", None) or 10**9
    pos = getattr(ckpt.config, "max_position_embeddings", None) or 512
    # RoBERTa-style position ids (RoBERTa, XLM-R, MPNet) start after the padding index: fewer are usable.
    pad = getattr(ckpt.config, "pad_token_id", None)
    if ckpt.settings.get("positions_after_pad") and pad is not None:
        pos -= pad + 1
    # A sentence-transformers model was trained and is used at its own max_seq_length (256 for
    # all-MiniLM-L6-v2): truncating later gives other vectors than sentence-transformers for longer texts.
    st_max = max_seq_length(ckpt) or 10**9
    return int(min(tok_max, pos, st_max))


def _write_tokenizer(ckpt: Any, folder: Path, max_length: int) -> None:
    backend = ckpt.tokenizer.backend_tokenizer
    backend.no_padding()
    backend.enable_truncation(max_length=max_length)
    path = folder / "tokenizer.json"
    try:
        backend.save(str(path))
    except Exception as e:  # the Rust library raises a bare Exception, "... (os error 28)": make it an OSError
        code = re.search(r"\(os error (\d+)\)", str(e))
        if code is None:
            raise
        raise OSError(int(code.group(1)), os.strerror(int(code.group(1))), str(path)) from e


def _check_calibration_data(calibration_data: Any, validation_data: Any) -> None:
    from ._calibrate import read_calibration_texts

    if not Path(calibration_data).is_file():
        raise ExportError(
            f"--calibration-data {calibration_data}: no such file (expected label<TAB>text rows after a header "
            "line, or one sentence per line)"
        )
    if validation_data is not None and Path(calibration_data).resolve() == Path(validation_data).resolve():
        raise ExportError(
            f"--calibration-data and --validation-data are the same file ({calibration_data}): ranges "
            "calibrated on the validation set would flatter its figures. Calibrate on other sentences of the "
            "task, e.g. its training set"
        )
    read_calibration_texts(calibration_data)  # a file without sentences is refused now, not after the export


def _validation_texts(task: str, validation_data: Any) -> list[str]:
    """The sentences of --validation-data, which calibration must never see."""
    if validation_data is None:
        return []
    if task == "feature-extraction":
        from ._stsb import read_sts

        s1, s2, _ = read_sts(validation_data)
        return s1 + s2
    from ._validate import read_labelled_tsv

    return read_labelled_tsv(validation_data)[0]


def _int8_recipe(
    task: str, precisions: list[str], validation_data: Any, int8_recipe: str, calibration_data: Any = None
) -> dict[str, Any] | None:
    """The int8 recipe the options ask for, or None for ``search``; refuse options that do not go together
    before anything heavy loads."""
    if validation_data is not None:
        if task not in ("text-classification", "feature-extraction"):
            raise ExportError(
                "--validation-data applies to text-classification (labelled sentences, label<TAB>text) "
                "and feature-extraction (STS Benchmark pairs) exports only"
            )
        if not Path(validation_data).is_file():
            raise ExportError(
                f"--validation-data {validation_data}: no such file (expected label<TAB>text rows "
                "for text-classification, STS Benchmark rows for feature-extraction)"
            )
        if task == "feature-extraction":
            from ._stsb import read_sts

            read_sts(validation_data)  # a wrong file is refused now, not after the export
    if calibration_data is not None:
        _check_calibration_data(calibration_data, validation_data)
    if int8_recipe == "search":
        if validation_data is None or "int8" not in precisions:
            raise ExportError(
                "--int8-recipe search scores candidates on labelled data: pass --validation-data TSV "
                "(text-classification) and keep int8 in --precision"
            )
        return None
    from ._optimize import DEFAULT_INT8, needs_calibration, recipe_named

    recipe = recipe_named(DEFAULT_INT8 if int8_recipe == "default" else int8_recipe)
    if needs_calibration(recipe) and calibration_data is None and "int8" in precisions:
        raise ExportError(
            f"int8 recipe {int8_recipe!r} is static: it calibrates activation ranges on sample sentences. Pass "
            "--calibration-data FILE (sentences of the task, e.g. its training set; never the validation data)"
        )
    return recipe


def _parse_candidates(names: Any, search: bool) -> list[str] | None:
    if names is None:
        return None
    from ._int8_recipes import INT8_CANDIDATES

    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    if not search:
        raise ExportError("--int8-candidates limits --int8-recipe search; pass --int8-recipe search with it")
    bad = [n for n in names if n not in INT8_CANDIDATES]
    if bad or not names:
        raise ExportError(f"unknown int8 candidate(s) {bad or names}; valid: {', '.join(INT8_CANDIDATES)}")
    return list(names)


def export(
    source: str | os.PathLike[str],
    task: str = "text-classification",
    out: str | os.PathLike[str] | None = None,
    precisions: str | Sequence[str] = ("int8", "fp32", "fp16"),
    force: bool = False,
    allow_pickle: bool = False,
    trust_remote_code: bool = False,
    revision: str | None = None,
    progress: bool = True,
    validation_data: str | os.PathLike[str] | None = None,
    int8_recipe: str = "default",
    ort: bool = False,
    calibration_data: str | os.PathLike[str] | None = None,
    prune_vocab: str | os.PathLike[str] | None = None,
    int8_candidates: str | Sequence[str] | None = None,
) -> Path:
    """Export ``source`` (a checkpoint folder or hub id) for ``task`` into the model folder ``out``.

    Steps: load -> ONNX fp32 (optimum-onnx) -> graph fusion -> INT8 / fp16 variants -> validation against
    PyTorch -> tokenizer and manifest -> atomic move into place. Returns the folder's path.
    ``validation_data``: a labelled TSV (``label<TAB>text`` after a header) whose accuracy and label
    agreement per variant are recorded in the manifest (text-classification only).
    ``int8_recipe``: "default" (per-channel QInt8 on the fused graph), a candidate name from
    ``INT8_CANDIDATES``, or "search": quantize every candidate, score it on ``validation_data``, time it on
    this machine, keep the fastest within the quality gates and record all candidates' figures in the manifest.
    ``ort``: also write each variant (but fp16) in onnxruntime's ORT format (``onnx/<name>.ort``, checked to
    compute the same) and ``required_operators.config``, what a minimal onnxruntime build needs.
    ``calibration_data``: sentences (labelled TSV like ``validation_data``, or one per line) that static int8
    recipes calibrate activation ranges on; never the validation set. Without it the search skips them.
    ``prune_vocab``: a corpus file (one text per line, or a TSV with a header); only the tokens it needs stay in
    the embedding matrix and tokenizer.json, and the manifest's ``vocab_pruning`` records what was cut.
    ``int8_candidates``: with ``int8_recipe="search"``, the candidate names to try (a list or comma-separated
    string; None: all).

    >>> export("../shared/checkpoints/minilm-sst2", out="models/minilm-sst2", precisions="int8",
    ...        validation_data="../shared/data/sst2/dev.tsv", int8_recipe="search")  # doctest: +SKIP
    """
    require_extra()
    from tqdm.auto import tqdm  # export extra

    requested, task = task, canonical_export_task(task)
    if prune_vocab is not None:
        from ._prune import check_corpus_option

        check_corpus_option(prune_vocab, task)  # refused before anything heavy loads
    if task == "text2text-generation":  # encoder-decoders too
        from ._seq2seq import export_seq2seq

        if ort or calibration_data is not None or validation_data is not None or prune_vocab is not None:
            raise ExportError(
                "--ort, --calibration-data, --validation-data and --prune-vocab are not made for "
                "text2text-generation (summarization, translation) folders yet; export without them"
            )
        return export_seq2seq(
            source, requested, out, precisions, force, allow_pickle, trust_remote_code, revision, progress
        )
    if task == "text-generation":  # decoder-only causal LMs have their own recipe
        from ._decoder import export_decoder

        if ort:
            raise ExportError(
                "--ort is not made for text-generation folders yet (its generation loop is validated on the "
                ".onnx files only); export without --ort"
            )
        if calibration_data is not None:
            raise ExportError("--calibration-data applies to encoder exports' static int8 recipes, not text-generation")

        return export_decoder(
            source, requested, out, precisions, force, allow_pickle, trust_remote_code, revision, progress
        )
    parsed = _parse_precisions(precisions)
    target = prepare(out, source, force)
    recipe = _int8_recipe(task, parsed, validation_data, int8_recipe, calibration_data)
    run = _Run(
        source=str(source),
        requested=requested,
        task=task,
        precisions=parsed,
        target=target,
        recipe=recipe,
        candidates=_parse_candidates(int8_candidates, recipe is None),
        allow_pickle=allow_pickle,
        trust_remote_code=trust_remote_code,
        revision=revision,
        validation_data=validation_data,
        calibration_data=calibration_data,
        prune_vocab=prune_vocab,
    )
    steps = _steps(parsed, ort)
    bar = tqdm(total=len(steps), desc=f"export {Path(str(source)).name}", unit="step", disable=not progress)
    run.progress = bar.set_postfix_str  # the search names its candidates there too
    with staging(target.path) as tmp, file_errors(target.path):
        check_space(tmp, source)
        run.tmp = tmp
        for name, do in steps:
            run.progress(name)
            do(run)
            bar.update()
    bar.close()
    return target.path


# -- the steps ---------------------------------------------------------------------------------------------------
# Each step reads what the steps before it left on the _Run and adds its own part; export() runs them in order
# inside the staging folder, one progress-bar tick each.
@dataclass
class _Run:
    """One encoder export: its options, then what each step made."""

    source: str
    requested: str
    task: str
    precisions: list[str]
    target: Target
    recipe: dict[str, Any] | None  # None: --int8-recipe search
    candidates: list[str] | None
    allow_pickle: bool
    trust_remote_code: bool
    revision: str | None
    validation_data: str | os.PathLike[str] | None
    calibration_data: str | os.PathLike[str] | None
    prune_vocab: str | os.PathLike[str] | None
    progress: Callable[[str], Any] = lambda name: None  # export() shows it on the progress bar
    tmp: Path = Path()  # the staging folder
    ckpt: Any = None
    tasks: list[str] = field(default_factory=list)
    pruning: dict[str, Any] | None = None
    ref: dict[str, np.ndarray] = field(default_factory=dict)
    max_length: int = 0
    calibration: Any = None
    raw: Path = Path()
    fp32: Path = Path()
    fused_ops: dict[str, int] = field(default_factory=dict)
    variants: dict[str, Any] = field(default_factory=dict)
    manifest: Any = None
    tokenizer: AutoTokenizer | None = None

    def source_for(self, recipe: dict[str, Any]) -> Path:
        """The fp32 graph an int8 recipe quantizes."""
        from ._optimize import int8_source

        return int8_source(recipe, self.raw, self.fp32, self.ckpt.settings["fusion"], self.ckpt.config)


def _steps(precisions: list[str], ort: bool) -> list[tuple[str, Callable[[_Run], None]]]:
    return [
        ("load checkpoint", _load),
        ("export fp32 ONNX", _export_fp32),
        ("fuse graph", _fuse),
        *[(f"make {p}", functools.partial(_make, p)) for p in precisions if p != "fp32"],
        ("validate against PyTorch", _validate),
        *([("write ORT format", _write_ort)] if ort else []),
        ("write manifest", _write_manifest),
    ]


def _load(run: _Run) -> None:
    """Load the checkpoint (pruned if asked), and refuse it now if PyTorch's own outputs are non-finite or its
    head has another size than its labels, rather than after export, fusion and quantization."""
    from ._load import check_head_size, load_checkpoint
    from ._validate import torch_reference

    run.ckpt = load_checkpoint(run.source, run.task, run.allow_pickle, run.trust_remote_code, run.revision)
    run.tasks = folder_tasks(run.requested, run.ckpt.config)  # refuses zero-shot for a model without NLI labels
    if run.prune_vocab is not None:  # everything after, PyTorch's reference included, sees the pruned model
        from ._prune import prune_checkpoint

        run.ckpt, run.pruning = prune_checkpoint(run.ckpt, run.task, run.prune_vocab)
    run.ref = torch_reference(run.ckpt, run.task)
    check_head_size(run.ckpt, run.task, run.ref)
    run.max_length = _max_length(run.ckpt)
    from ._calibrate import Calibration

    if run.calibration_data is not None:
        exclude = _validation_texts(run.task, run.validation_data)
        run.calibration = Calibration.from_file(run.calibration_data, run.ckpt.tokenizer, run.max_length, exclude)
    else:  # fixed-scales recipes (the default) calibrate on the package's own sentences; static ones refuse them
        run.calibration = Calibration.builtin(run.ckpt.tokenizer, run.max_length)


def _export_fp32(run: _Run) -> None:
    from ._onnx import export_fp32

    run.raw = export_fp32(run.ckpt.model, run.task, run.tmp / "raw")


def _fuse(run: _Run) -> None:
    from ._optimize import fuse
    from ._variants import fp32_variant

    (run.tmp / "onnx").mkdir()
    run.fp32 = run.tmp / VARIANT_FILES["fp32"]
    run.fused_ops = fuse(run.raw, run.fp32, run.ckpt.settings["fusion"], run.ckpt.config)
    run.variants["fp32"] = fp32_variant(run.fused_ops)


def _make(precision: str, run: _Run) -> None:
    from ._variants import make_variant

    made = make_variant(precision, run.tmp, run.fused_ops, run.recipe, run.source_for, run.calibration)
    if made is not None:
        run.variants[precision] = made


def _validate(run: _Run) -> None:
    """Write the tokenizer, config and the draft manifest, run the int8 search if asked, then check every
    variant against PyTorch and record the validation data's figures."""
    from ._assemble import draft_manifest
    from ._validate import dataset_figures, pytorch_labels, read_labelled_tsv, validate_variants
    from ._variants import int8_variant

    ckpt, tmp = run.ckpt, run.tmp
    _write_tokenizer(ckpt, tmp, run.max_length)
    ckpt.config.save_pretrained(tmp)  # with id2label / label2id, which Optimum and transformers.js read
    write_ecosystem_files(ckpt, tmp, run.max_length)
    manifest = replace(
        draft_manifest(ckpt, run.task, run.tasks, tmp, run.variants, run.max_length, run.revision),
        vocab_pruning=run.pruning,
    )
    tokenizer = AutoTokenizer.from_manifest(manifest)
    ref_labels = None  # PyTorch's labels on --validation-data: computed once, for the search and the figures
    if run.recipe is None:  # --int8-recipe search
        from ._int8_search import search as search_int8

        texts, gold = read_labelled_tsv(run.validation_data)
        ref_labels = pytorch_labels(ckpt, texts)
        found = search_int8(
            tmp,
            manifest,
            tokenizer,
            run.source_for,
            texts,
            gold,
            ref_labels,
            progress=run.progress,
            calibration=run.calibration,
            candidates=run.candidates,
        )
        chosen = found["candidates"][found["chosen"]]["recipe"] | {"name": found["chosen"]}
        int8 = int8_variant(chosen, run.fused_ops, recipe_search=found)
        manifest = replace(manifest, variants={**manifest.variants, "int8": int8})
    shutil.rmtree(tmp / "raw")
    manifest = validate_variants(manifest, tokenizer, run.ref)
    if run.validation_data is not None and run.task == "feature-extraction":
        from ._stsb import sts_figures  # Spearman of PyTorch, fp32, int8; fails when int8 drops > 1 point

        manifest = replace(manifest, validation_data=sts_figures(ckpt, manifest, tokenizer, run.validation_data))
    elif run.validation_data is not None:
        figures = dataset_figures(ckpt, manifest, tokenizer, run.validation_data, ref_labels)
        manifest = replace(manifest, validation_data=figures)
    run.manifest, run.tokenizer = manifest, tokenizer


def _write_ort(run: _Run) -> None:
    from ._ort import write_ort_files

    run.manifest = write_ort_files(run.manifest, run.precisions, run.tokenizer)


def _write_manifest(run: _Run) -> None:
    """List and hash the files, write the manifest, and move the finished folder into place."""
    from ._assemble import finish_manifest, write_manifest

    write_manifest(finish_manifest(run.manifest, run.precisions))
    fsync_tree(run.tmp)
    place(run.tmp, run.target)
    fsync_tree(run.target.path.parent, recursive=False)  # the rename itself
