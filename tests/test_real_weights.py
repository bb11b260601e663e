"""Real weights: the embedded sentiment model on all of SST-2 dev, MiniLM sentence embeddings, the walkthrough.

These run in CI (no slow marker): each PyTorch reference runs batched, and each model is exported once per
session (conftest's ``minilm_sst2_export`` and ``all_minilm_export``, which test_interop.py reads too).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

import onnxpipe
from conftest import all_minilm_checkpoint
from onnxpipe import AutoModel, AutoTokenizer

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
SST2_CHECKPOINT = SHARED / "checkpoints" / "minilm-sst2"
SST2_DEV = SHARED / "data" / "sst2" / "dev.tsv"
COMMITTED = ROOT / "models" / "minilm-sst2"

WALKTHROUGH = ["I've been waiting for a HuggingFace course my whole life.", "I hate this so much!"]


def _sst2_dev() -> tuple[list[str], np.ndarray]:
    with open(SST2_DEV, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    return [r["content"] for r in rows], np.array([int(r["label"]) for r in rows])


def _torch_batched(checkpoint, texts, head, batch=64):
    """PyTorch outputs in batches of 64: logits (classification) or mean-pooled, L2-normalised embeddings."""
    import torch
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(checkpoint)
    cls = transformers.AutoModelForSequenceClassification if head == "logits" else transformers.AutoModel
    model = cls.from_pretrained(checkpoint).eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(texts), batch):
            enc = tok(texts[i : i + batch], padding=True, truncation=True, return_tensors="pt")
            res = model(**enc)
            if head == "logits":
                out.append(res.logits.numpy())
            else:
                mask = enc["attention_mask"][..., None].float()
                pooled = (res.last_hidden_state * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                out.append(torch.nn.functional.normalize(pooled, dim=-1).numpy())
    return np.concatenate(out)


# -- the seed walkthrough (runtime only: runs without torch too) ------------------------------------------
def test_walkthrough_ids_shape_and_labels():
    classifier = onnxpipe.pipeline("sentiment-analysis")
    results = classifier(WALKTHROUGH)
    assert [r["label"] for r in results] == ["POSITIVE", "NEGATIVE"]
    assert all(0.5 < r["score"] <= 1.0 for r in results)

    tokenizer = AutoTokenizer.from_pretrained("minilm-sst2")
    inputs = tokenizer(WALKTHROUGH, padding=True, truncation=True, return_tensors="np")
    assert inputs["input_ids"].tolist() == [
        [101, 1045, 1005, 2310, 2042, 3403, 2005, 1037, 17662, 12172, 2607, 2026, 2878, 2166, 1012, 102],
        [101, 1045, 5223, 2023, 2061, 2172, 999, 102, 0, 0, 0, 0, 0, 0, 0, 0],
    ]
    assert inputs["attention_mask"].tolist() == [[1] * 16, [1] * 8 + [0] * 8]
    assert inputs["input_ids"].dtype == np.int64

    model = AutoModel.from_pretrained("minilm-sst2")
    assert model(**inputs).last_hidden_state.shape == (2, 16, 384)


# -- minilm-sst2 on all of SST-2 dev ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def sst2_export(minilm_sst2_export):
    """fp32 (and int8 when no committed folder exists) export of the shared minilm-sst2 checkpoint (conftest's,
    shared with test_interop.py)."""
    return minilm_sst2_export


@pytest.fixture(scope="module")
def sst2_torch():
    texts, gold = _sst2_dev()
    return texts, gold, _torch_batched(SST2_CHECKPOINT, texts, "logits")


@pytest.mark.torch
def test_sst2_fp32_labels_identical_to_pytorch(sst2_export, sst2_torch):
    texts, gold, logits = sst2_torch
    assert len(texts) == 872
    classifier = onnxpipe.pipeline("sentiment-analysis", model=sst2_export, precision="fp32", batch_size=64)
    got = classifier(texts)
    labels = {0: "NEGATIVE", 1: "POSITIVE"}
    want = [labels[i] for i in logits.argmax(1)]
    mismatches = [(i, texts[i]) for i, (g, w) in enumerate(zip(got, want)) if g["label"] != w]
    assert not mismatches, f"{len(mismatches)} fp32 labels differ from PyTorch, e.g. {mismatches[:3]}"
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    assert np.abs(np.array([g["score"] for g in got]) - probs.max(1)).max() <= 1e-4
    assert (logits.argmax(1) == gold).mean() > 0.85  # the checkpoint really is a sentiment model


@pytest.mark.torch
def test_sst2_int8_accuracy_within_one_point(sst2_export, sst2_torch):
    texts, gold, logits = sst2_torch
    folder = COMMITTED if (COMMITTED / "manifest.json").is_file() else sst2_export
    classifier = onnxpipe.pipeline("sentiment-analysis", model=folder, precision="int8", batch_size=64)
    assert classifier.precision == "int8"
    pred = np.array([0 if r["label"] == "NEGATIVE" else 1 for r in classifier(texts)])
    torch_acc, int8_acc = (logits.argmax(1) == gold).mean(), (pred == gold).mean()
    assert abs(int8_acc - torch_acc) <= 0.01, f"int8 {int8_acc:.4f} vs PyTorch {torch_acc:.4f}"
    assert (pred == logits.argmax(1)).mean() >= 0.95  # and mostly the same sentences right


# -- all-MiniLM-L6-v2 sentence embeddings -----------------------------------------------------------------
@pytest.fixture(scope="module")
def minilm_export(all_minilm_export):
    """int8 + fp32 feature-extraction export of all-MiniLM-L6-v2 (conftest's, shared with test_interop.py)."""
    return all_minilm_export


# (precision, mean cosine at least, every sentence's cosine at least). int8, the default recipe (fixed activation
# scales, calibrated on the export stage's built-in sentences): mean 0.9898, single sentences down to 0.978
# (dynamic scales: 0.992 and 0.984, by adapting each call's resolution, at the price of answers that move with
# their batch-mates); a range 0.8x or 1.2x the calibrated one is worse either way (clipping, resolution).
COSINE = [("fp32", 0.9999, 0.9999), ("int8", 0.985, 0.97)]


@pytest.mark.torch
@pytest.mark.parametrize("precision,mean_cosine,min_cosine", COSINE)
def test_minilm_embeddings_match_pytorch_mean_pooling(minilm_export, precision, mean_cosine, min_cosine):
    texts = _sst2_dev()[0][::17][:50]  # 50 sentences spread over the dev set
    want = _torch_batched(all_minilm_checkpoint(), texts, "embeddings")
    embed = onnxpipe.pipeline("sentence-embeddings", model=minilm_export, precision=precision)
    got = embed(texts)
    assert got.shape == (50, 384)
    cosine = (got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
    figures = f"{precision}: cosine mean {cosine.mean():.6f}, min {cosine.min():.6f}"
    assert cosine.mean() >= mean_cosine and cosine.min() >= min_cosine, figures
    # pooling came from the checkpoint's sentence-transformers modules.json
    import json

    pooling = json.loads((minilm_export / "manifest.json").read_text())["pooling"]
    assert pooling["mode"] == "mean" and pooling["normalize"] is True


@pytest.mark.torch
def test_minilm_int8_embeddings_do_not_depend_on_batch_mates(minilm_export):
    # The batch-invariance gate for the embeddings default: a sentence embedded inside a call of many equals it embedded
    # alone (cosine >= 0.9999; "alone" execution makes it exact). With fixed activation scales, padded batches do too.
    texts = _sst2_dev()[0][:200]
    embed = onnxpipe.pipeline("sentence-embeddings", model=minilm_export, precision="int8")
    assert embed.model.execution == "alone"
    together = embed(texts)
    alone = np.stack([embed(t) for t in texts])
    cosine = (together * alone).sum(1)  # normalized vectors
    assert cosine.min() >= 0.9999, f"min cosine {cosine.min():.6f}"
    np.testing.assert_array_equal(together, alone)
    batched = onnxpipe.pipeline("sentence-embeddings", model=minilm_export, precision="int8", execution="batched")
    in_batches = (batched(texts) * alone).sum(1)
    assert in_batches.min() >= 0.99999, f"padded batches: cosine min {in_batches.min():.7f}"  # float rounding only


def _long_texts() -> list[str]:
    """Two texts longer than all-MiniLM-L6-v2's max_seq_length (256): ~330 words and ~620 words (over 512 tokens)."""
    words = " ".join(_sst2_dev()[0][6:40]).split()
    return [" ".join(words[:330]), " ".join((words + words)[:620])]


@pytest.mark.torch
def test_minilm_truncates_at_max_seq_length_as_sentence_transformers(minilm_export):
    # sentence-transformers tokenizes with truncation at sentence_bert_config.json's max_seq_length (256), then
    # mean-pools and normalises (modules.json): that computation, in PyTorch, on texts longer than 256 tokens.
    import json

    import torch
    import transformers

    ckpt = all_minilm_checkpoint()
    st_max = json.loads((ckpt / "sentence_bert_config.json").read_text())["max_seq_length"]
    texts = _long_texts() + ["A short one."]
    tok = transformers.AutoTokenizer.from_pretrained(ckpt)
    enc = tok(texts, padding=True, truncation=True, max_length=st_max, return_tensors="pt")
    assert int(enc["attention_mask"].sum(1).max()) == st_max  # the texts are long enough to be cut
    with torch.no_grad():
        hidden = transformers.AutoModel.from_pretrained(ckpt).eval()(**enc).last_hidden_state
    mask = enc["attention_mask"][..., None].float()
    want = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1).numpy()
    got = onnxpipe.pipeline("sentence-embeddings", model=minilm_export, precision="fp32")(texts)
    cosine = (got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
    assert cosine.min() >= 0.9999, f"cosine to sentence-transformers' computation: {cosine.round(6)}"
    # the folder says the same truncation to every consumer
    manifest = json.loads((minilm_export / "manifest.json").read_text())
    assert manifest["max_length"] == st_max
    assert json.loads((minilm_export / "tokenizer.json").read_text())["truncation"]["max_length"] == st_max
    assert json.loads((minilm_export / "tokenizer_config.json").read_text())["model_max_length"] == st_max
    assert json.loads((minilm_export / "sentence_bert_config.json").read_text())["max_seq_length"] == st_max


@pytest.mark.torch
def test_minilm_folder_carries_the_files_other_consumers_read(minilm_export):
    import json

    manifest = json.loads((minilm_export / "manifest.json").read_text())
    on_disk = {p.relative_to(minilm_export).as_posix() for p in minilm_export.rglob("*") if p.is_file()}
    assert on_disk - {"manifest.json"} == set(manifest["files"])  # every file listed, so verify=True loads it
    for name in (
        "tokenizer_config.json",
        "special_tokens_map.json",
        "config.json",
        "modules.json",
        "sentence_bert_config.json",
        "1_Pooling/config.json",
    ):
        assert name in manifest["files"], name
    modules = json.loads((minilm_export / "modules.json").read_text())
    assert [m["type"].rsplit(".", 1)[-1] for m in modules] == ["Transformer", "Pooling", "Normalize"]
    tok_cfg = json.loads((minilm_export / "tokenizer_config.json").read_text())
    assert tok_cfg["pad_token"] == "[PAD]" and "max_length" not in tok_cfg  # no stray call-time max_length
