"""Export stage over every supported architecture x task, on tiny random checkpoints built in the session.

Each (architecture, task) is exported once (int8 + fp32) by the ``tiny_export`` fixture; the tests then
check the folder against the contract (manifest, hashes, inputs), the fp32 graph against PyTorch, the
int8 graph's label agreement, and the graph fusion that onnxruntime really performed.
"""

from __future__ import annotations

import json
from collections import Counter
from types import SimpleNamespace

import numpy as np
import pytest

from _tiny import ARCHS, LABELS
from onnxpipe import FORMAT_VERSION, AutoModel, AutoModelForSequenceClassification, AutoTokenizer
from onnxpipe._manifest import load_manifest, sha256_file

pytestmark = pytest.mark.torch

TASKS = ["text-classification", "feature-extraction"]
CASES = [(a, t) for a in ARCHS for t in TASKS]

SENTENCES = [
    "I've been waiting for a HuggingFace course my whole life.",
    "I hate this so much!",
    "",
    "Great phone 👍👍 but the battery 🔋 dies fast 😞",
    "naïve café résumé — Zürich",
    "東京は日本の首都です。",
    "OK.",
    "The plot is nothing but boilerplate, and the actors seem as bored as the audience.",
]
# More varied text for label agreement: 40 sentences from the tokenizer corpus' vocabulary and beyond.
AGREEMENT_SENTENCES = SENTENCES + [
    f"{s} {v} {e}"
    for s in ("The film", "My phone", "The service", "Das Essen")
    for v in ("was", "seemed")
    for e in ("great!", "terrible.", "not bad at all.", "boring, honestly...")
]

# Attention nodes onnxruntime's BERT fusion produces per 2-layer tiny model (checked against the ONNX file).
# albert: the first layer stays unfused because its residual input is the embedding projection (an Add fed by
# a MatMul) and onnxruntime's FusionAttention follows that branch instead of the attention one (it matches
# parents greedily, without backtracking); later layers fuse. mpnet (relative position bias added to the scores)
# and deberta-v2 (disentangled attention) have attention patterns FusionAttention does not know.
ATTENTION_FUSED = {
    "bert": 2,
    "distilbert": 2,
    "roberta": 2,
    "xlm-roberta": 2,
    "electra": 2,
    "albert": 1,
    "mpnet": 0,
    "deberta-v2": 0,
}
BERT_FAMILY = ["bert", "distilbert", "roberta", "xlm-roberta", "electra"]


def _torch_model(checkpoint, head):
    import transformers

    cls = transformers.AutoModelForSequenceClassification if head == "text-classification" else transformers.AutoModel
    return cls.from_pretrained(checkpoint).eval()


def _hf_tokenizer(checkpoint):
    from transformers import AutoTokenizer as HFTokenizer

    return HFTokenizer.from_pretrained(checkpoint)


def _torch_outputs(checkpoint, head, sentences):
    import torch

    tok, model = _hf_tokenizer(checkpoint), _torch_model(checkpoint, head)
    enc = tok(sentences, padding=True, truncation=True, return_tensors="pt")
    with torch.no_grad():
        out = model(**enc, output_hidden_states=True)
    res = {
        "input_ids": enc["input_ids"].numpy(),
        "attention_mask": enc["attention_mask"].numpy(),
        "last_hidden_state": out.hidden_states[-1].numpy(),
    }
    if head == "text-classification":
        res["logits"] = out.logits.numpy()
    return res


@pytest.mark.parametrize("arch,head", CASES)
def test_manifest_describes_the_folder(tiny_export, tiny_checkpoint, arch, head):
    folder = tiny_export(arch, head)
    text = (folder / "manifest.json").read_text()
    assert text.startswith('{\n  "format_version": ') and text.endswith("}\n")
    data = json.loads(text)
    assert data["format_version"] == FORMAT_VERSION
    assert data["task"] == head
    assert data["architecture"] == arch
    assert data["hidden_size"] == 32
    hf_tok = _hf_tokenizer(tiny_checkpoint(arch, head))
    assert data["max_length"] == hf_tok.model_max_length
    tokenizer_json = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    assert tokenizer_json["truncation"]["max_length"] == data["max_length"]  # truncates at the model's limit
    assert tokenizer_json["padding"] is None  # the runtime pads per batch
    assert data["pad_token_id"] == hf_tok.pad_token_id
    if head == "text-classification":
        assert data["labels"] == {str(k): v for k, v in LABELS.items()}
        assert data["outputs"] == ["logits", "last_hidden_state"]
    else:
        assert "labels" not in data
        assert data["pooling"]["mode"] == "mean" and data["pooling"]["normalize"] is True
        assert data["outputs"] == ["last_hidden_state"]

    # inputs: exactly what the graph declares, in the runtime's canonical order
    import onnx

    graph_inputs = {i.name for i in onnx.load(str(folder / "onnx/model.onnx"), load_external_data=False).graph.input}
    assert set(data["inputs"]) == graph_inputs
    assert data["inputs"][:2] == ["input_ids", "attention_mask"]

    # every file listed with its real size and sha256, and nothing else in the folder
    on_disk = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()} - {"manifest.json"}
    assert set(data["files"]) == on_disk
    for rel, info in data["files"].items():
        assert info == {"sha256": sha256_file(folder / rel), "size": (folder / rel).stat().st_size}
    assert {"tokenizer.json", "config.json", "onnx/model.onnx", "onnx/model_quantized.onnx"} <= on_disk
    assert {p: v["file"] for p, v in data["variants"].items()} == {
        "fp32": "onnx/model.onnx",
        "int8": "onnx/model_quantized.onnx",
    }

    # validation figures for every variant
    for p, v in data["variants"].items():
        val = v["validation"]
        assert val["sentences"] >= 10
        assert 0 <= val["max_abs_diff_hidden"] < (1e-4 if p == "fp32" else 5.0)
        if head == "text-classification":
            assert 0.0 <= val["label_agreement"] <= 1.0 and "max_abs_diff_logits" in val
    assert data["variants"]["int8"]["recipe"]["reduce_range"] is True  # one recipe for every CPU: 7-bit weights

    # provenance: source, the weights it came from, the tool versions
    prov = data["provenance"]
    ckpt = tiny_checkpoint(arch, head)
    assert prov["source"] == ckpt.name and prov["source_kind"] == "local folder"  # its name, not its path
    assert prov["weights_sha256"] == {"model.safetensors": sha256_file(ckpt / "model.safetensors")}
    for tool in ("onnxpipe", "torch", "transformers", "optimum-onnx", "onnx", "onnxruntime", "tokenizers"):
        assert prov["tools"][tool] != "not installed"
    load_manifest(folder, verify=True)  # the runtime accepts it


@pytest.mark.parametrize("arch,head", CASES)
def test_fp32_matches_pytorch(tiny_export, tiny_checkpoint, arch, head):
    ref = _torch_outputs(tiny_checkpoint(arch, head), head, SENTENCES)
    folder = tiny_export(arch, head)
    tok = AutoTokenizer.from_pretrained(folder)
    enc = tok(SENTENCES, padding=True, truncation=True, return_tensors="np")
    np.testing.assert_array_equal(enc["input_ids"], ref["input_ids"])
    mask = ref["attention_mask"].astype(bool)
    hidden = AutoModel.from_pretrained(folder, precision="fp32")(**enc).last_hidden_state
    assert hidden.shape == ref["last_hidden_state"].shape
    assert np.abs(hidden[mask] - ref["last_hidden_state"][mask]).max() <= 1e-4
    if head == "text-classification":
        logits = AutoModelForSequenceClassification.from_pretrained(folder, precision="fp32")(**enc).logits
        assert logits.shape == (len(SENTENCES), len(LABELS))
        assert np.abs(logits - ref["logits"]).max() <= 1e-4


@pytest.mark.parametrize("arch", ARCHS)
def test_int8_label_agreement(tiny_export, tiny_checkpoint, arch):
    folder = tiny_export(arch, "text-classification")
    ref = _torch_outputs(tiny_checkpoint(arch, "text-classification"), "text-classification", AGREEMENT_SENTENCES)
    expected = ref["logits"].argmax(1)
    # Not a tautology: the random model must predict more than one label on these sentences.
    assert len(set(expected.tolist())) >= 2, f"{arch}: the tiny model predicts one label only: {Counter(expected)}"
    tok = AutoTokenizer.from_pretrained(folder)
    enc = tok(AGREEMENT_SENTENCES, padding=True, truncation=True, return_tensors="np")
    int8 = AutoModelForSequenceClassification.from_pretrained(folder, precision="int8")
    fp32 = AutoModelForSequenceClassification.from_pretrained(folder, precision="fp32")
    got8, got32 = int8(**enc).logits, fp32(**enc).logits
    assert not np.array_equal(got8, got32)  # really another graph
    agreement = float((got8.argmax(1) == expected).mean())
    assert agreement >= 0.8, f"{arch}: int8 agrees with PyTorch on {agreement:.0%} of {len(expected)} sentences"
    # The manifest's figure is a real measurement: recomputing it on the export's own sentences gives it back.
    from onnxpipe_export._sentences import VALIDATION_SENTENCES

    data = json.loads((folder / "manifest.json").read_text())
    ref_v = _torch_outputs(tiny_checkpoint(arch, "text-classification"), "text-classification", VALIDATION_SENTENCES)
    enc_v = tok(VALIDATION_SENTENCES, padding=True, truncation=True, return_tensors="np")
    recomputed = float((int8(**enc_v).logits.argmax(1) == ref_v["logits"].argmax(1)).mean())
    assert data["variants"]["int8"]["validation"]["label_agreement"] == pytest.approx(recomputed)


@pytest.mark.parametrize("arch", ARCHS)
def test_fusion_really_happens(tiny_export, arch):
    import onnx

    from onnxpipe_export._registry import ARCHITECTURES

    folder = tiny_export(arch, "text-classification")
    data = json.loads((folder / "manifest.json").read_text())
    recorded = data["variants"]["fp32"]["fused_operators"]
    ops = Counter(n.op_type for n in onnx.load(str(folder / "onnx/model.onnx")).graph.node)
    for op, count in recorded.items():  # the manifest's counts are those of the written graph
        if op != "LayerNormalization":  # LayerNormalization is a standard op that export also emits unfused
            assert ops[op] == count, f"{arch}: manifest says {count} {op}, graph has {ops[op]}"
    for op in ARCHITECTURES[arch]["expect_fused"]:
        assert recorded.get(op, 0) > 0, f"{arch}: expected fused {op}, got {recorded}"
    assert ops["Attention"] == ATTENTION_FUSED[arch], f"{arch}: {ops['Attention']} fused Attention nodes"
    assert ops["SkipLayerNormalization"] >= 2 * 2 - 1  # every residual + LayerNorm in 2 layers, at least
    if arch in BERT_FAMILY:
        assert "Attention" in ARCHITECTURES[arch]["expect_fused"]
        assert ops["Softmax"] == 0  # all attention went into the fused kernel


@pytest.mark.parametrize("arch", ARCHS)
def test_max_length_is_usable_without_tokenizer_limit(tiny_checkpoint, arch):
    """A checkpoint whose tokenizer sets no model_max_length: the exported max length must still fit the
    position embeddings (RoBERTa-style models lose padding_idx + 1 positions)."""
    import torch

    from onnxpipe_export._recipe import _max_length
    from onnxpipe_export._registry import settings_for

    ckpt_dir = tiny_checkpoint(arch, "feature-extraction")
    model = _torch_model(ckpt_dir, "feature-extraction")
    ckpt = SimpleNamespace(
        tokenizer=SimpleNamespace(model_max_length=int(1e30)),
        config=model.config,
        settings=settings_for(model.config.model_type),
        local=ckpt_dir,
        source=str(ckpt_dir),
    )
    n = _max_length(ckpt)
    assert n >= 64
    ids = torch.full((1, n), 5, dtype=torch.long)
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=torch.ones_like(ids))
    assert out.last_hidden_state.shape == (1, n, 32)


def test_fp16_variant_once(tiny_export):
    folder = tiny_export("bert", "text-classification", precisions="fp16,fp32")
    data = json.loads((folder / "manifest.json").read_text())
    assert set(data["variants"]) == {"fp16", "fp32"}
    assert data["variants"]["fp16"]["file"] == "onnx/model_fp16.onnx"
    import onnx

    model = onnx.load(str(folder / "onnx/model_fp16.onnx"))
    # fp16 weights, fp32 graph inputs/outputs (the runtime feeds every precision the same way)
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer)
    assert {o.type.tensor_type.elem_type for o in model.graph.output} == {onnx.TensorProto.FLOAT}
    val = data["variants"]["fp16"]["validation"]
    if "skipped" not in val:  # the CPU provider may lack fp16 kernels; then the reason is recorded
        assert val["label_agreement"] >= 0.9 and val["max_abs_diff_logits"] < 0.05
