"""CUDA execution provider: the same answers as the CPU provider (fp32 exactly enough, fp16 within its
precision), and the provider really used. Runs only where onnxruntime-gpu and a GPU exist; CI has neither,
so ``make test`` deselects these (it says so) instead of skipping them."""

from __future__ import annotations

import numpy as np
import pytest

from onnxpipe import AutoModelForSequenceClassification, AutoTokenizer, pipeline

SENTENCES = ["The film was great!", "The service was terrible.", "A charming, funny and moving portrait."]

pytestmark = [pytest.mark.cuda, pytest.mark.torch]


@pytest.mark.parametrize("precision,atol", [("fp32", 1e-4), ("fp16", 2e-2)])
def test_cuda_logits_equal_cpu(tiny_export, precision, atol):
    folder = tiny_export("bert", "text-classification", "fp32,fp16")
    enc = AutoTokenizer.from_pretrained(folder)(SENTENCES, padding=True, return_tensors="np")
    cpu = AutoModelForSequenceClassification.from_pretrained(folder, precision="fp32")(**enc).logits
    gpu_model = AutoModelForSequenceClassification.from_pretrained(folder, device="cuda", precision=precision)
    assert gpu_model.session.get_providers()[0] == "CUDAExecutionProvider"
    np.testing.assert_allclose(gpu_model(**enc).logits, cpu, atol=atol)


def test_cuda_defaults_to_fp16_and_never_int8(tiny_export):
    pipe = pipeline(
        "text-classification", model=tiny_export("bert", "text-classification", "int8,fp32,fp16"), device="cuda"
    )
    assert pipe.precision == "fp16"
    assert len(pipe(SENTENCES)) == len(SENTENCES)
