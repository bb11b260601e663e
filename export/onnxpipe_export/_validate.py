"""Validate every exported variant against the PyTorch model on real sentences, through the runtime itself.

The ONNX side runs through onnxpipe's own tokenizer and session code, so validation also checks that the
written tokenizer.json gives transformers' ids.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import torch

from onnxpipe._for_export import GRAPHS, AutoTokenizer, Manifest, OnnxModel
from onnxpipe.errors import ExportError, ValidationError

from ._invariance import alone_and_batched, score_invariance
from ._sentences import VALIDATION_SENTENCES

FP32_ATOL = 1e-4


def torch_reference(checkpoint: Any, task: str, sentences: Any = VALIDATION_SENTENCES) -> dict[str, np.ndarray]:
    enc = checkpoint.tokenizer(list(sentences), padding=True, truncation=True, return_tensors="pt")
    head = bool(GRAPHS[task].outputs)
    with torch.no_grad():
        out = checkpoint.model(**enc, output_hidden_states=head)
    ref = {"input_ids": enc["input_ids"].numpy(), "attention_mask": enc["attention_mask"].numpy()}
    for name in GRAPHS[task].outputs:
        ref[name] = out[name].numpy()
    ref["last_hidden_state"] = (out.hidden_states[-1] if head else out.last_hidden_state).numpy()
    _check_finite(
        ref,
        "PyTorch's own outputs",
        "the checkpoint's weights overflow float32, so no export of it "
        "can be correct or validated; check the checkpoint",
    )
    return ref


def _check_finite(outputs: dict[str, Any], whose: str, why: str) -> None:
    # NaN fails every comparison, so `diff > tolerance` alone would pass a NaN output.
    for name, value in outputs.items():
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            bad = int((~np.isfinite(value)).sum())
            raise ValidationError(
                f"{whose} hold {bad} non-finite value(s) (NaN or inf) in {name!r} on the validation sentences: {why}"
            )


def _mean_pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    m = mask[:, :, None].astype(np.float64)
    v = (hidden * m).sum(1) / np.clip(m.sum(1), 1e-9, None)
    out: np.ndarray = v / np.linalg.norm(v, axis=1, keepdims=True)
    return out


def validate_variant(
    manifest: Manifest,
    precision: str,
    tokenizer: AutoTokenizer,
    ref: dict[str, Any],
    sentences: Any = VALIDATION_SENTENCES,
) -> dict[str, Any]:
    """Return the figures for one variant; raise ValidationError when fp32 is off by more than FP32_ATOL."""
    model = OnnxModel(manifest, device="cpu", precision=precision)
    feeds = tokenizer(list(sentences), padding=True, truncation=True, return_tensors="np")
    if not np.array_equal(feeds["input_ids"], ref["input_ids"]):
        raise ValidationError("tokenizer.json gives other token ids than the checkpoint's transformers tokenizer")
    names = [n for n in ref if n not in ("input_ids", "attention_mask")]
    got = dict(zip(names, model.run(model.feeds(feeds), names)))
    _check_finite(
        got,
        f"the {precision} ONNX model's outputs",
        "the export is wrong where PyTorch's are finite; report this with the checkpoint's config",
    )
    mask = ref["attention_mask"].astype(bool)
    figures: dict[str, Any] = {"sentences": len(sentences)}
    hidden_diff = float(np.abs(got["last_hidden_state"][mask] - ref["last_hidden_state"][mask]).max())
    figures["max_abs_diff_hidden"] = hidden_diff
    cos = (_mean_pool(got["last_hidden_state"], mask) * _mean_pool(ref["last_hidden_state"], mask)).sum(1)
    figures["min_cosine_mean_pooled"] = float(cos.min())
    worst = hidden_diff
    for name in names:
        if name == "last_hidden_state":
            continue
        # Per-token outputs (fill-mask, token classification, QA) are compared on real tokens only.
        per_token = GRAPHS[manifest.task].per_token
        a, b = (got[name][mask], ref[name][mask]) if per_token else (got[name], ref[name])
        figures[f"max_abs_diff_{name}"] = float(np.abs(a - b).max())
        worst = max(worst, figures[f"max_abs_diff_{name}"])
        if name == "logits":  # per sequence, or per token
            figures["label_agreement"] = float((a.argmax(-1) == b.argmax(-1)).mean())
        else:  # QA start/end logits: where the span would start/end, per sentence
            hit = [
                np.argmax(np.where(m, g, -np.inf)) == np.argmax(np.where(m, r, -np.inf))
                for g, r, m in zip(got[name], ref[name], mask)
            ]
            figures[f"argmax_agreement_{name}"] = float(np.mean(hit))
    if precision == "fp32" and not worst <= FP32_ATOL:  # `not <=`: NaN fails this gate too
        raise ValidationError(
            f"the fp32 ONNX graph differs from PyTorch by {worst:.2e} (> {FP32_ATOL}); the export is wrong. "
            "Report this with the checkpoint's config."
        )
    return figures


def validate_variants(manifest: Manifest, tokenizer: AutoTokenizer, ref: dict[str, Any]) -> Manifest:
    """``manifest`` with every variant's figures against PyTorch (``validation``). fp32 must run and pass;
    another precision that cannot run on CPU (fp16 kernels the CPU provider lacks) is recorded as skipped."""
    variants = {}
    for p, v in manifest.variants.items():
        try:
            figures = validate_variant(manifest, p, tokenizer, ref)
        except ExportError:
            raise
        except Exception as e:
            if p == "fp32":
                raise
            figures = {"skipped": f"could not run on CPU: {str(e).splitlines()[0][:200]}"}
        variants[p] = replace(v, validation=figures)
    return replace(manifest, variants=variants)


def read_labelled_tsv(path: Any) -> tuple[list[str], list[int]]:
    """``label<TAB>text`` rows after a header line (the GLUE / SST-2 layout); quotes are literal text."""
    import csv

    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[1:]
    return [r[1] for r in rows], [int(r[0]) for r in rows]


def pytorch_labels(checkpoint: Any, texts: list[str], batch_size: int = 64) -> np.ndarray:
    out = []
    with torch.no_grad():
        for i in range(0, len(texts), batch_size):
            enc = checkpoint.tokenizer(texts[i : i + batch_size], padding=True, truncation=True, return_tensors="pt")
            out.append(checkpoint.model(**enc).logits.argmax(-1).numpy())
    return np.concatenate(out)


def label_figures(alone_logits: np.ndarray, gold: np.ndarray, ref_labels: np.ndarray) -> dict[str, Any]:
    """Accuracy and label agreement with PyTorch of logits computed one sentence per run: dynamic int8 scales
    activations per batch, so batch-1 is the reproducible figure (and what the runtime computes for it)."""
    got = alone_logits.argmax(-1)
    return {"accuracy": float((got == gold).mean()), "label_agreement_with_pytorch": float((got == ref_labels).mean())}


def dataset_figures(
    checkpoint: Any, manifest: Manifest, tokenizer: AutoTokenizer, path: Any, ref_labels: np.ndarray | None = None
) -> dict[str, Any]:
    """Accuracy of PyTorch and of every variant on a labelled set, each variant's label agreement, and its
    batch invariance (every text alone vs inside the runtime's padded batches, _invariance.py).
    ``ref_labels``: PyTorch's labels on the set when the caller has them already."""
    texts, labels = read_labelled_tsv(path)
    gold = np.array(labels)
    if ref_labels is None:
        ref_labels = pytorch_labels(checkpoint, texts)
    figures: dict[str, Any] = {
        "file": str(path),
        "sentences": len(texts),
        "pytorch_accuracy": float((ref_labels == gold).mean()),
        "variants": {},
    }
    for precision in manifest.variants:
        try:
            model = OnnxModel(manifest, device="cpu", precision=precision)
        except Exception as e:  # fp16 kernels missing on CPU: recorded by validate_variant already
            figures["variants"][precision] = {"skipped": str(e).splitlines()[0][:200]}
            continue
        alone, batched = alone_and_batched(model, tokenizer, texts, "logits")
        figures["variants"][precision] = {
            **label_figures(alone, gold, ref_labels),
            "batch_invariance": score_invariance(alone, batched),
        }
    return figures
