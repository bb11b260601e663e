"""``onnxpipe serve`` answers /summarization, /translation and /text2text-generation in the hub's shapes:
huggingface_hub's ``InferenceClient`` (unchanged) parses them, and the texts equal the local pipeline's."""

from __future__ import annotations

import httpx
import pytest

from _serve_util import Server
from onnxpipe import pipeline

pytestmark = pytest.mark.torch  # the folder is exported in this session

hub = pytest.importorskip("huggingface_hub")
TEXT = "The film was great, and the soup was cold."


@pytest.fixture(scope="module")
def served(tiny_export):
    folder = tiny_export("t5", "text2text-generation", precisions="int8,fp32")
    with Server(f"t5={folder}", "--precision", "fp32") as s:
        yield s, folder


def test_inference_client_summarization_and_translation(served):
    s, folder = served
    summary = hub.InferenceClient(s.url + "/summarization").summarization(TEXT, generate_parameters={"num_beams": 2})
    want = pipeline("summarization", model=folder, precision="fp32")(TEXT, num_beams=2)[0]["summary_text"]
    assert summary.summary_text == want
    translation = hub.InferenceClient(s.url + "/translation").translation(TEXT)
    assert (
        translation.translation_text
        == pipeline("translation", model=folder, precision="fp32")(TEXT)[0]["translation_text"]
    )


def test_text2text_takes_a_list_and_refuses_bad_settings_with_422(served):
    s, folder = served
    texts = [TEXT, "OK."]
    r = httpx.post(s.url + "/text2text-generation", json={"inputs": texts, "parameters": {"max_new_tokens": 4}})
    assert r.status_code == 200
    assert r.json() == [
        [x] for x in pipeline("text2text-generation", model=folder, precision="fp32")(texts, max_new_tokens=4)
    ]
    bad = httpx.post(s.url + "/summarization", json={"inputs": TEXT, "parameters": {"num_beams": 0}})
    assert bad.status_code == 422 and "num_beams" in bad.text
