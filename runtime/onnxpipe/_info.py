"""A model folder's manifest as text: what ``onnxpipe info`` prints and ``onnxpipe export`` shows for the
folder it wrote. Both commands call ``format_manifest``; neither reaches into the other."""

from __future__ import annotations

from pathlib import PurePath
from typing import Any

from ._manifest import Manifest
from ._session import alone_is_faster, batch_dependent
from .errors import ManifestError


def _invariance_text(inv: dict[str, Any]) -> str:
    """One variant's or candidate's batch_invariance figures (each text alone vs in padded batches)."""
    if "min_cosine" in inv:
        return f"min cosine {inv['min_cosine']:.6f}, mean {inv['mean_cosine']:.6f}"
    flips = inv["label_flips"]
    return (
        f"max score change {inv['max_score_change']:.2g}, p99 {inv['p99_score_change']:.2g}, "
        f"{flips} label flip{'' if flips == 1 else 's'}"
    )


def _recipe_search(found: dict[str, Any], out: list[str]) -> None:
    data = found["data"]
    out.append(
        f"        chosen by --int8-recipe search on {found['timing']['machine']} "
        f"({data['sentences']} labelled sentences, PyTorch accuracy {data['pytorch_accuracy']:.4f}):"
    )
    rows = {n: r for n, r in found["candidates"].items() if "skipped" not in r}
    w = max(map(len, found["candidates"]))
    out.append(
        f"        {'candidate':{w}s} {'accuracy':>8s} {'agrees':>7s} {'max dP':>7s} {'flips':>5s} {'invariant':>9s} "
        f"{'batch-1':>9s} {'sent/s':>7s} {'speed':>6s}"
    )
    for name, row in sorted(rows.items(), key=lambda kv: -kv[1]["speed_vs_default"]):
        mark = "*" if name == found["chosen"] else ("" if row["gates_met"] else "x")
        inv = row.get("batch_invariance")  # absent in folders searched before the search measured it
        invariant = (
            "-" if inv is None else "yes" if row["batch_invariant"] else "run alone" if row["runs_alone"] else "no"
        )
        change = f"{inv['max_score_change']:7.2g} {inv['label_flips']:5d}" if inv else f"{'-':>7s} {'-':>5s}"
        out.append(
            f"      {mark:1s} {name:{w}s} {row['accuracy']:8.4f} {row['label_agreement_with_pytorch']:7.1%} "
            f"{change} {invariant:>9s} {row['batch1_p50_ms']:6.2f} ms {row['sentences_per_s']:7.0f} "
            f"{row['speed_vs_default']:5.2f}x"
        )
    for name, row in found["candidates"].items():
        if "skipped" in row:
            out.append(f"        {name:{w}s} skipped: {row['skipped']}")
    out.append(
        "        (* chosen, x misses the gates; max dP / flips: each sentence alone vs in padded batches; "
        f"invariant: in padded batches, or run alone by the runtime (dynamic); rule: {found['rule']})"
    )


def _records(manifest: Manifest, out: list[str]) -> None:
    """The variants with their validation and recipe, the validation data and the provenance."""
    out.append("variants:")
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
        out.append(f"  {p:5s} {v.file:28s} {size:7.1f} MB  {figures or val.get('skipped', '')}")
        if v.ort is not None:
            ort_mb = manifest.files[v.ort.file].size / 1e6
            out.append(
                f"        ORT format: {v.ort.file} {ort_mb:.1f} MB (onnxruntime {v.ort.onnxruntime}, "
                f"{v.ort.optimization_level}; minimal build: {v.ort.required_operators})"
            )
        if (v.recipe or {}).get("method") == "MatMulNBits":
            r = v.recipe or {}
            out.append(
                f"        recipe: {r['bits']}-bit weight-only MatMulNBits, block {r.get('block_size')}, "
                f"{r.get('matmuls_quantized')} MatMuls quantized, {r.get('matmuls_kept_fp32')} kept fp32"
                + (f", graph {r['graph']}" if "graph" in r else "")
            )
        elif (v.recipe or {}).get("method") == "static":
            r = v.recipe or {}
            calib = r.get("calibration_data") or {}
            out.append(
                f"        recipe {r.get('name', '?')}: static QDQ {' / '.join(r.get('op_types', []))}, "
                f"{r.get('calibration')} calibration on {calib.get('sentences')} sentences of "
                f"{PurePath(str(calib.get('file'))).name}, graph {r.get('graph')}"
            )
        elif v.recipe:
            r = v.recipe
            disabled = v.cpu_disabled_optimizers
            off = f", no {' / '.join(disabled)} at load" if disabled else ""
            if r.get("residual_add_as_sum"):  # the same choice baked into the graph, for every consumer
                off += ", residual Add as Sum (no SkipLayerNorm fusion in any consumer)"
            out.append(
                f"        recipe {r.get('name', '?')}: {r.get('method')} {r.get('weight_type')}, "
                f"{'per-channel' if r.get('per_channel') else 'per-tensor'}, graph {r.get('graph')}{off}"
            )
            if r.get("method") == "fixed-scales":
                calib = r.get("calibration_data") or {}
                out.append(
                    f"        activation scales fixed by min-max calibration on {calib.get('sentences')} "
                    f"sentences of {calib.get('file')}"
                )
        if batch_dependent(manifest, p):  # what execution="auto" does with it on CPU
            out.append(
                "        runs each input alone on CPU (dynamic activation scales would tie it to its batch-mates)"
            )
        elif alone_is_faster(manifest, p):
            out.append("        runs each input alone on CPU (faster than padded batches; the answers are the same)")
        if v.recipe_search:
            _recipe_search(v.recipe_search, out)
        if v.cpu_exact:
            out.append("        CPU-exact: weights 8-bit, all arithmetic float: every CPU computes the same to ~1e-6")
        for c in v.cpus or []:  # the CPUs the file was checked on, against the exporting machine's answers
            out.append(
                f"        checked on {c['cpu']}: {c.get('n')} texts, {c.get('flips')} label flips, "
                f"|dP| max {c.get('max_abs_dp', float('nan')):.2g}, p99 {c.get('p99_abs_dp', float('nan')):.2g}"
            )
        inv = ((manifest.validation_data or {}).get("variants", {}).get(p) or {}).get("batch_invariance")
        if inv:  # every validation text alone vs inside the runtime's padded batches
            out.append(f"        alone vs batched: {_invariance_text(inv)}")
    vd = manifest.validation_data
    if vd and vd.get("pairs"):  # feature extraction: STS Benchmark Spearman x100
        per = ", ".join(
            f"{p} {v['batched']:.2f} batched / {v['one_at_a_time']:.2f} one at a time"
            for p, v in vd["variants"].items()
            if "batched" in v
        )
        out.append(
            f"STS Spearman:  {vd['pairs']} pairs ({PurePath(vd['file']).name}), x100: "
            f"PyTorch {vd['pytorch']:.2f}, {per}"
        )
    elif vd:
        per = ", ".join(
            f"{p} {v['accuracy']:.4f} (agrees {v['label_agreement_with_pytorch']:.1%})"
            for p, v in vd["variants"].items()
            if "accuracy" in v
        )
        out.append(f"accuracy:      {vd['sentences']} labelled sentences: PyTorch {vd['pytorch_accuracy']:.4f}, {per}")
    prov = manifest.provenance or {}
    out.append(f"source:        {prov.get('source')} ({prov.get('source_kind')}), exported {prov.get('exported_at')}")


def format_manifest(manifest: Manifest, *, verified: bool) -> str:
    """What ``onnxpipe info`` prints about a model folder, and ``onnxpipe export`` after writing one: the
    contract (task, labels, inputs, ...), the variants with their validation and recipe, the validation data
    and the provenance. ``verified``: whether the sha256 of every file was checked at load.

    Raises ManifestError where an informational record of the export is not in the shape the export writes.
    """
    out: list[str] = []
    out.append(f"folder:        {manifest.folder}")
    out.append(f"format:        {manifest.format_version}")
    out.append(f"task:          {manifest.task} (serves: {', '.join(manifest.tasks)})")
    out.append(
        f"architecture:  {manifest.architecture}, hidden {manifest.hidden_size}, max length {manifest.max_length}"
    )
    if manifest.labels:
        out.append(f"labels:        {', '.join(f'{k}={v}' for k, v in sorted(manifest.labels.items()))}")
    if manifest.pooling:
        out.append(f"pooling:       {manifest.pooling.mode}, normalize={manifest.pooling.normalize}")
    if manifest.vocab_pruning:
        vp = manifest.vocab_pruning
        out.append(
            f"vocabulary:    pruned {vp.get('vocab_before')} -> {vp.get('vocab_after')} tokens on "
            f"{PurePath(str(vp.get('corpus'))).name} (sha256 {str(vp.get('corpus_sha256'))[:12]}...)"
        )
    out.append(f"inputs:        {', '.join(manifest.inputs)}")
    try:
        _records(manifest, out)
    except (KeyError, AttributeError, TypeError, ValueError, IndexError) as e:
        # Informational entries (the export's own records), read only here: a damaged one is named, not a
        # traceback. The folder may still load; predict and the pipelines do not read these.
        raise ManifestError(
            f"{manifest.folder}/manifest.json: a record of the export (a variant's validation or recipe, "
            f"validation_data, provenance) is not in the shape the export writes ({type(e).__name__}: {e}). "
            "The manifest was edited or damaged; re-export the folder (onnxpipe export ... --force)."
        ) from e
    out.append(f"verified:      {'no (--no-verify)' if not verified else 'sha256 of every file matches'}")
    return "\n".join(out)
