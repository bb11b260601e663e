"""--validation-data: the accuracy figures an export records must be the ones PyTorch and the runtime give."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytestmark = pytest.mark.torch

SENTENCES = ["a gorgeous , witty , seductive movie .", "one long string of cliches .", "", "Not bad at all.",
             "I hate this so much!", "The food was cold and nobody apologised.", "A masterpiece.", "OK."]


def test_validation_data_figures_match_pytorch_and_runtime(tiny_checkpoint, tmp_path):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer as HFTokenizer

    from onnxpipe import AutoModelForSequenceClassification as OnnxClassifier, AutoTokenizer
    from onnxpipe_export import export

    ckpt = tiny_checkpoint("bert", "text-classification")
    gold = [i % 3 for i in range(len(SENTENCES))]
    tsv = tmp_path / "dev.tsv"
    tsv.write_text("label\tcontent\n" + "".join(f"{g}\t{s}\n" for g, s in zip(gold, SENTENCES)), encoding="utf-8")
    out = export(ckpt, task="text-classification", out=tmp_path / "m", precisions="int8", progress=False,
                 validation_data=tsv)
    figures = json.loads((out / "manifest.json").read_text())["validation_data"]

    hf_tok, hf_model = HFTokenizer.from_pretrained(ckpt), AutoModelForSequenceClassification.from_pretrained(ckpt)
    with torch.no_grad():
        ref = hf_model(**hf_tok(SENTENCES, padding=True, return_tensors="pt")).logits.argmax(-1).numpy()
    tok, model = AutoTokenizer.from_pretrained(out), OnnxClassifier.from_pretrained(out, precision="int8")
    got = np.array([model(**tok([s], return_tensors="np")).logits[0].argmax() for s in SENTENCES])

    assert figures["sentences"] == len(SENTENCES)
    assert figures["pytorch_accuracy"] == pytest.approx(float((ref == np.array(gold)).mean()))
    assert set(figures["variants"]) == {"int8", "fp32"}  # fp32 is measured even when only int8 is kept
    int8 = figures["variants"]["int8"]
    assert int8["accuracy"] == pytest.approx(float((got == np.array(gold)).mean()))
    assert int8["label_agreement_with_pytorch"] == pytest.approx(float((got == ref).mean()))
    assert figures["variants"]["fp32"]["label_agreement_with_pytorch"] == 1.0


def test_validation_data_refused_for_feature_extraction(tiny_checkpoint, tmp_path):
    from onnxpipe.errors import ExportError
    from onnxpipe_export import export

    tsv = tmp_path / "dev.tsv"
    tsv.write_text("label\tcontent\n1\tgood\n", encoding="utf-8")
    with pytest.raises(ExportError, match="text-classification"):
        export(tiny_checkpoint("bert", "feature-extraction"), task="feature-extraction", out=tmp_path / "m",
               precisions="fp32", progress=False, validation_data=tsv)
    assert not (tmp_path / "m").exists()
