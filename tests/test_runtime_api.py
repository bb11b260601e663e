"""The runtime against transformers itself, on the same tiny checkpoints: pipeline outputs, tokenizer outputs.

Every architecture's fp32 export must give what ``transformers.pipeline`` gives on the PyTorch checkpoint:
the same structure for every calling convention, the same labels, scores within 1e-4; and
``onnxpipe.AutoTokenizer`` must return the ids transformers' tokenizer returns for every padding /
truncation / max_length combination.
"""

from __future__ import annotations

import numpy as np
import pytest

import onnxpipe
from _tiny import ARCHS
from onnxpipe import AutoModel, AutoModelForSequenceClassification, AutoTokenizer
from onnxpipe.errors import TaskMismatchError

pytestmark = pytest.mark.torch

S = [
    "I've been waiting for a HuggingFace course my whole life.",
    "",
    "Great phone 👍👍 but the battery 🔋 dies fast 😞",
    "OK.",
    "naïve café résumé — Zürich, 東京",
]
LONG = " ".join(["the plot is nothing but boilerplate clichés from start to finish"] * 40)  # > max length
PAIR = {"text": S[0], "text_pair": S[2]}

# (call args, call kwargs): every calling convention transformers' text-classification pipeline has.
CLASSIFY_CALLS = [
    ((S[0],), {}),
    ((S,), {}),
    ((S,), {"top_k": None}),
    ((S[0],), {"top_k": None}),
    ((S[0],), {"top_k": 2}),
    ((S,), {"top_k": 2}),
    ((S[0],), {"top_k": 1}),
    ((S,), {"top_k": 1}),
    ((S,), {"function_to_apply": "sigmoid"}),
    ((S,), {"function_to_apply": "none"}),
    ((S[0],), {"function_to_apply": "softmax", "top_k": None}),
    ((PAIR,), {}),
    (([PAIR, {"text": S[3], "text_pair": S[4]}],), {}),
    ((PAIR,), {"top_k": None}),
    (([LONG, S[3]],), {"truncation": True}),
]


@pytest.fixture(scope="module")
def hf_pipelines(tiny_checkpoint):
    cache = {}

    def get(task, arch, head):
        if (task, arch, head) not in cache:
            from transformers import pipeline as hf_pipeline

            cache[task, arch, head] = hf_pipeline(task, model=str(tiny_checkpoint(arch, head)), device="cpu")
        return cache[task, arch, head]

    return get


def assert_same_classification(got, want, path="result"):
    """Same nesting, same keys and labels; scores within 1e-4."""
    assert type(got) is type(want), f"{path}: {type(got).__name__} != {type(want).__name__}"
    if isinstance(want, list):
        assert len(got) == len(want), f"{path}: length {len(got)} != {len(want)}"
        for i, (g, w) in enumerate(zip(got, want)):
            assert_same_classification(g, w, f"{path}[{i}]")
    else:
        assert set(got) == {"label", "score"} == set(want)
        assert got["label"] == want["label"], f"{path}: {got} != {want}"
        assert isinstance(got["score"], float)
        assert got["score"] == pytest.approx(want["score"], abs=1e-4), f"{path}: {got} != {want}"


@pytest.mark.parametrize("arch", ARCHS)
def test_text_classification_matches_transformers(tiny_export, hf_pipelines, arch):
    hf = hf_pipelines("text-classification", arch, "text-classification")
    ours = onnxpipe.pipeline("text-classification", model=tiny_export(arch, "text-classification"), precision="fp32")
    for args, kwargs in CLASSIFY_CALLS:
        want, got = hf(*args, **kwargs), ours(*args, **kwargs)
        assert_same_classification(got, want, f"{arch} {kwargs}")


@pytest.mark.parametrize("arch", ARCHS)
def test_sentiment_analysis_alias_and_batching(tiny_export, arch):
    folder = tiny_export(arch, "text-classification")
    texts = [S[i % len(S)] * (1 + i % 3) for i in range(13)]  # varied lengths: several length-sorted batches
    one_by_one = onnxpipe.pipeline("text-classification", model=folder, precision="fp32", batch_size=1)
    batched = onnxpipe.pipeline("sentiment-analysis", model=folder, precision="fp32", batch_size=4)
    want = [one_by_one(t, top_k=None) for t in texts]
    got = batched(texts, top_k=None)
    for g, w in zip(got, want):  # padding and reordering change nothing beyond float noise
        assert [r["label"] for r in g] == [r["label"] for r in w]
        assert np.allclose([r["score"] for r in g], [r["score"] for r in w], atol=1e-5)


@pytest.mark.parametrize("head", ["feature-extraction", "text-classification"])
@pytest.mark.parametrize("arch", ARCHS)
def test_feature_extraction_matches_transformers(tiny_export, hf_pipelines, arch, head):
    """Both a feature-extraction folder and a classification folder (its extra output) serve the task."""
    hf = hf_pipelines("feature-extraction", arch, head)
    ours = onnxpipe.pipeline("feature-extraction", model=tiny_export(arch, head), precision="fp32")
    for inputs in (S[0], S, [LONG]):
        kw = {"truncation": True} if inputs == [LONG] else {}
        want, got = hf(inputs, **kw), ours(inputs, **kw)
        assert type(got) is type(want) is list
        if isinstance(inputs, str):
            want, got = [want], [got]
        assert len(got) == len(want)
        for g, w in zip(got, want):
            assert isinstance(g, list) and isinstance(g[0], list) and isinstance(g[0][0], list)
            assert isinstance(g[0][0][0], float)
            g, w = np.array(g), np.array(w)
            assert g.shape == w.shape and g.shape[0] == 1 and g.shape[2] == 32
            assert np.abs(g - w).max() <= 1e-4
    tensors = ours(S[2], return_tensors=True)
    assert isinstance(tensors, np.ndarray) and tensors.shape == tuple(hf(S[2], return_tensors=True).shape)


@pytest.mark.parametrize("arch", ARCHS)
def test_sentence_embeddings_are_mean_pooled_and_normalised(tiny_export, tiny_checkpoint, arch):
    import torch
    from transformers import AutoModel as HFModel, AutoTokenizer as HFTokenizer

    ckpt = tiny_checkpoint(arch, "feature-extraction")
    tok, model = HFTokenizer.from_pretrained(ckpt), HFModel.from_pretrained(ckpt).eval()
    enc = tok(S, padding=True, truncation=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**enc).last_hidden_state
    mask = enc["attention_mask"][..., None].float()
    want = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1).numpy()
    embed = onnxpipe.pipeline("sentence-embeddings", model=tiny_export(arch, "feature-extraction"), precision="fp32")
    got = embed(S)
    assert isinstance(got, np.ndarray) and got.shape == (len(S), 32) and got.dtype == np.float32
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert np.abs(got - want).max() <= 1e-4
    assert embed(S[0]).shape == (32,)


# (kwargs, inputs) for the tokenizer comparison: padding x truncation x max_length, singles and pairs.
TOKENIZER_CALLS = [
    {"padding": True, "truncation": True},
    {"padding": "longest", "truncation": True},
    {"padding": True, "truncation": True, "max_length": 8},
    {"padding": "max_length", "truncation": True, "max_length": 20},
    {"padding": "max_length", "truncation": True},
    {"padding": True, "truncation": False},
    {"padding": True, "max_length": 8},  # truncation unset but max_length given: transformers truncates
    {"padding": False, "truncation": True, "max_length": 6},
    {"padding": False},
]
TOKENIZER_INPUTS = {
    "list": (S + [LONG],),
    "single": (S[2],),
    "pairs": ([S[0], S[3], LONG], [S[2], S[4], S[1]]),
}


@pytest.mark.parametrize("arch", ARCHS)
def test_tokenizer_matches_transformers(tiny_export, tiny_checkpoint, arch):
    from transformers import AutoTokenizer as HFTokenizer

    folder = tiny_export(arch, "text-classification")
    hf = HFTokenizer.from_pretrained(tiny_checkpoint(arch, "text-classification"))
    ours = AutoTokenizer.from_pretrained(folder)
    inputs_needed = AutoModel.from_pretrained(folder, precision="fp32")._graph_inputs
    assert ours.model_max_length == hf.model_max_length
    compared = 0
    for name, args in TOKENIZER_INPUTS.items():
        for kwargs in TOKENIZER_CALLS:
            for return_tensors in ("np", None):
                where = f"{arch} {name} {kwargs} return_tensors={return_tensors}"
                try:
                    want = hf(*args, **kwargs, return_tensors=return_tensors)
                except ValueError:  # e.g. unpadded ragged batch as numpy: transformers refuses, so do we
                    with pytest.raises(ValueError):
                        ours(*args, **kwargs, return_tensors=return_tensors)
                    continue
                if return_tensors == "np" and want["input_ids"].dtype == object:
                    # transformers returns a ragged object array here; onnxpipe refuses, saying to pad.
                    with pytest.raises(ValueError, match="padding=True"):
                        ours(*args, **kwargs, return_tensors=return_tensors)
                    continue
                got = ours(*args, **kwargs, return_tensors=return_tensors)
                # onnxpipe returns exactly the inputs the graph takes (DeBERTa-v3 style: no token_type_ids)
                assert set(got) == set(inputs_needed) <= set(want), where
                for key in got:
                    if return_tensors == "np":
                        assert got[key].dtype == np.int64, where
                        np.testing.assert_array_equal(got[key], want[key], err_msg=f"{where} {key}")
                    else:
                        assert got[key] == want[key], f"{where} {key}"
                compared += 1
    assert compared >= 40


@pytest.mark.parametrize("arch", ["bert", "deberta-v2"])
def test_auto_models(tiny_export, arch):
    cls_folder, fe_folder = tiny_export(arch, "text-classification"), tiny_export(arch, "feature-extraction")
    tok = AutoTokenizer.from_pretrained(cls_folder)
    inputs = tok(S[:2], padding=True, truncation=True, return_tensors="np")
    n = inputs["input_ids"].shape[1]
    # one classification graph serves both classes
    hidden = AutoModel.from_pretrained(cls_folder)(**inputs).last_hidden_state
    assert hidden.shape == (2, n, 32) and hidden.dtype == np.float32
    clf = AutoModelForSequenceClassification.from_pretrained(cls_folder)
    assert clf.precision == "int8" and clf.device == "cpu"  # CPU default
    assert clf(**inputs).logits.shape == (2, 3)
    assert clf.labels == {0: "NEGATIVE", 1: "NEUTRAL", 2: "POSITIVE"}
    assert AutoModel.from_pretrained(fe_folder, precision="fp32")(**inputs).last_hidden_state.shape == (2, n, 32)
    with pytest.raises(TaskMismatchError, match="logits"):
        AutoModelForSequenceClassification.from_pretrained(fe_folder)
    with pytest.raises(TaskMismatchError):
        onnxpipe.pipeline("text-classification", model=fe_folder)
