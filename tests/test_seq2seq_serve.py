"""``onnxpipe serve`` answers /summarization, /translation and /text2text-generation in the hub's shapes:
huggingface_hub's ``InferenceClient`` (unchanged) parses them, and the texts equal the local pipeline's."""

from __future__ import annotations

import asyncio
import threading
from types import SimpleNamespace

import httpx
import pytest

from _serve_util import Server
from onnxpipe import pipeline

pytest.importorskip("starlette", reason="needs the serve extra: pip install 'onnxpipe[serve]'")
from onnxpipe._serve._seq2seq_routes import Seq2SeqBatcher  # noqa: E402

hub = pytest.importorskip("huggingface_hub")
TEXT = "The film was great, and the soup was cold."


@pytest.fixture(scope="module")
def served(tiny_export):
    folder = tiny_export("t5", "text2text-generation", precisions="int8,fp32")
    with Server(f"t5={folder}", "--precision", "fp32") as s:
        yield s, folder


@pytest.mark.torch  # the folder is exported in this session
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


@pytest.mark.torch
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


@pytest.mark.torch
def test_post_root_runs_the_main_task_and_concurrent_requests_answer_as_alone(served):
    """POST / and /invocations of a text2text folder: its main task, with the keys the hub's summarization and
    translation read; 6 requests at once (batched together) each get the text it gets alone."""
    s, folder = served
    t2t = pipeline("text2text-generation", model=folder, precision="fp32")
    texts = [TEXT, "OK.", "A much longer sentence about the weather in the mountains.", "Yes", "No way!", "Why?"]
    want = [t2t(t)[0]["generated_text"] for t in texts]
    root = httpx.post(s.url + "/invocations", json={"inputs": TEXT}).json()
    assert root == [{"generated_text": want[0], "summary_text": want[0], "translation_text": want[0]}]

    async def all_at_once():
        async with httpx.AsyncClient(base_url=s.url, timeout=60) as client:
            answers = await asyncio.gather(*(client.post("/text2text-generation", json={"inputs": t}) for t in texts))
        return [r.json()[0]["generated_text"] for r in answers]

    assert asyncio.run(all_at_once()) == want


class FakePipe:
    """Records the items of each ``iter`` call; the first call waits for ``release`` (so others queue)."""

    def __init__(self, execution="batched", sample=False):
        self.model = SimpleNamespace(execution=execution)
        self.sample = sample
        self.calls: list[list[str]] = []
        self.started, self.release = threading.Event(), threading.Event()

    def settings(self, **params):
        return SimpleNamespace(sampling=SimpleNamespace(do_sample=self.sample or params.get("do_sample", False)))

    def iter(self, items, **params):
        self.calls.append(list(items))
        self.started.set()
        self.release.wait(30)
        if "bad" in items:
            raise ValueError("bad input")
        return iter([[{"generated_text": x.upper()}] for x in items])


def _burst(pipe, requests):
    """The first request starts alone; the rest arrive while it runs; then it is released."""

    async def scenario():
        batcher = Seq2SeqBatcher()
        first = asyncio.ensure_future(batcher.run(pipe, *requests[0]))
        await asyncio.to_thread(pipe.started.wait, 30)
        rest = [asyncio.ensure_future(batcher.run(pipe, *r)) for r in requests[1:]]
        await asyncio.sleep(0)  # a yield, not a wait: each request queues at its first step
        pipe.release.set()
        return await asyncio.gather(first, *rest, return_exceptions=True)

    return asyncio.run(scenario())


def test_requests_arriving_during_a_call_run_as_one_batch_by_settings():
    pipe = FakePipe()
    got = _burst(pipe, [(["a"], {}), (["b"], {}), (["c", "d"], {}), (["e"], {"num_beams": 2})])
    assert got == [[[{"generated_text": x.upper()}] for x in r] for r in (["a"], ["b"], ["c", "d"], ["e"])]
    assert sorted(pipe.calls) == [["a"], ["b", "c", "d"], ["e"]]  # other settings: a call of their own


@pytest.mark.parametrize("pipe", [FakePipe(execution="alone"), FakePipe(sample=True)], ids=["low-bit", "sampling"])
def test_low_bit_or_sampled_requests_are_never_merged(pipe):
    _burst(pipe, [(["a"], {}), (["b"], {}), (["c"], {})])
    assert sorted(pipe.calls) == [["a"], ["b"], ["c"]]


def test_a_bad_input_fails_its_own_request_only():
    pipe = FakePipe()
    got = _burst(pipe, [(["a"], {}), (["ok"], {}), (["bad"], {})])
    assert got[:2] == [[[{"generated_text": "A"}]], [[{"generated_text": "OK"}]]]
    assert isinstance(got[2], ValueError)
    assert pipe.calls == [["a"], ["ok", "bad"], ["ok"], ["bad"]]  # the batch, then each request alone


@pytest.mark.torch
def test_one_encoder_and_one_decoder_session_serve_every_task(tiny_export):
    """pipeline() and serve open an encoder-decoder folder through Seq2SeqModel.load (the decoder first, the
    smaller peak RSS); serve opens it once for its summarization, translation and text2text-generation."""
    from onnxpipe._serve._models import load_model
    from onnxpipe._session_options import SessionOptions

    folder = tiny_export("t5", "text2text-generation", precisions="int8,fp32")
    pipe = pipeline("summarization", model=folder, precision="fp32")
    assert pipe.seq2seq.encoder is pipe.model and pipe.seq2seq.decoder.precision == "fp32"
    served = load_model("t5", str(folder), SessionOptions(precision="fp32"))
    assert sorted(served.pipelines) == ["summarization", "text2text-generation", "translation"]
    assert len({id(p.seq2seq) for p in served.pipelines.values()}) == 1
    assert all(p.model is served.model for p in served.pipelines.values())
