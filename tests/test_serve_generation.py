"""Generation over HTTP, driven by the real client libraries (openai, huggingface_hub) against a real
``onnxpipe serve`` of a tiny exported Llama (fused graph, shared-buffer cache) and GPT-2 (optimum's graph):
greedy answers equal the in-process pipeline's, usage counts, stop strings, errors in OpenAI's shape, a client
that leaves mid-stream stops its decoding, and the decoder's continuous batching (requests joining a running
batch get their output alone)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

import onnxpipe
from _serve_util import Server

pytestmark = pytest.mark.torch
openai = pytest.importorskip("openai")
hub = pytest.importorskip("huggingface_hub")

CHAT = [{"role": "user", "content": "What time does the train leave?"}]
PROMPTS = ["What time does the train leave? It is late and", "Hello", "The food was great!", "naïve café, Zürich"]


@pytest.fixture(scope="module")
def folders(tiny_export):
    return {a: tiny_export(a, "text-generation", precisions="fp32") for a in ("llama", "gpt2")}


@pytest.fixture(scope="module")
def pipe(folders):
    return onnxpipe.pipeline("text-generation", model=folders["llama"])


@pytest.fixture(scope="module")
def server(folders):
    with Server(str(folders["llama"])) as s:
        yield s


def greedy(pipe, item, tokens):
    return pipe(item, max_new_tokens=tokens, do_sample=False, return_full_text=False)[0]["generated_text"]


def test_openai_chat_completions_plain_and_streamed(server, pipe):
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="none")
    want = greedy(pipe, CHAT, 12)
    r = client.chat.completions.create(model="llama", messages=CHAT, max_tokens=12, temperature=0)
    choice = r.choices[0]
    assert choice.message.content == want and choice.message.role == "assistant"
    from onnxpipe._chat import render

    text = render(pipe.info.chat_template, CHAT, pipe.specials)
    prompt = len(pipe.tokenizer.encode_batch([text], truncation=False, add_special_tokens=False)[0].ids)
    assert r.usage.prompt_tokens == prompt
    assert choice.finish_reason in ("stop", "length")
    if choice.finish_reason == "length":
        assert r.usage.completion_tokens == 12
    assert r.usage.total_tokens == prompt + r.usage.completion_tokens
    chunks = list(
        client.chat.completions.create(
            model="llama",
            messages=CHAT,
            max_tokens=12,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == want
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == [
        choice.finish_reason
    ]
    assert chunks[-1].usage.completion_tokens == r.usage.completion_tokens


@pytest.mark.parametrize("prompt", PROMPTS[:3])
def test_openai_completions_plain_and_streamed(server, pipe, prompt):
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="none")
    want = greedy(pipe, prompt, 10)
    r = client.completions.create(model="llama", prompt=prompt, max_tokens=10, temperature=0)
    assert r.choices[0].text == want
    ids = pipe.tokenizer.encode_batch([prompt], truncation=False)[0].ids
    assert r.usage.prompt_tokens == len(ids)
    streamed = client.completions.create(model="llama", prompt=prompt, max_tokens=10, temperature=0, stream=True)
    assert "".join(c.choices[0].text for c in streamed) == want


def test_openai_stop_n_and_seed(server, pipe):
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="none")
    want = greedy(pipe, PROMPTS[0], 24)
    stop = want[len(want) // 2 : len(want) // 2 + 2]
    r = client.completions.create(model="llama", prompt=PROMPTS[0], max_tokens=24, temperature=0, stop=[stop])
    assert r.choices[0].text == want[: want.index(stop)] and r.choices[0].finish_reason == "stop"
    streamed = client.completions.create(
        model="llama", prompt=PROMPTS[0], max_tokens=24, temperature=0, stop=stop, stream=True
    )
    assert "".join(c.choices[0].text for c in streamed) == want[: want.index(stop)]
    kw = {"model": "llama", "prompt": PROMPTS[1], "max_tokens": 16, "n": 3, "temperature": 1.0, "seed": 3}
    a, b = client.completions.create(**kw), client.completions.create(**kw)
    assert [c.text for c in a.choices] == [c.text for c in b.choices]
    assert [c.index for c in a.choices] == [0, 1, 2] and len({c.text for c in a.choices}) > 1
    if all(c.finish_reason == "length" for c in a.choices):
        assert a.usage.completion_tokens == 3 * 16


@pytest.mark.parametrize(
    "kwargs, status, param",
    [
        ({"max_tokens": 1000}, 400, "max_tokens"),
        ({"temperature": -1}, 400, "temperature"),
        ({"stop": ["a", "b", "c", "d", "e"]}, 400, "stop"),
        ({"logprobs": 2}, 422, "logprobs"),
    ],
)
def test_openai_errors_have_openais_shape(server, kwargs, status, param):
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0)
    with pytest.raises(openai.APIStatusError) as e:
        client.completions.create(model="llama", prompt="Hello", **kwargs)
    assert e.value.status_code == status
    body = e.value.body
    assert set(body) == {"message", "type", "param", "code"} and body["param"] == param and body["message"]


def test_huggingface_hub_text_generation_and_chat(server, pipe):
    client = hub.InferenceClient(server.url)
    want = greedy(pipe, PROMPTS[2], 10)
    assert client.text_generation(PROMPTS[2], max_new_tokens=10) == want
    assert "".join(client.text_generation(PROMPTS[2], max_new_tokens=10, stream=True)) == want
    details = client.text_generation(PROMPTS[2], max_new_tokens=10, details=True)
    assert details.generated_text == want and details.details.generated_tokens == len(details.details.tokens)
    last = list(client.text_generation(PROMPTS[2], max_new_tokens=10, stream=True, details=True))[-1]
    assert last.generated_text == want and last.details.finish_reason in ("length", "eos_token")
    tgi = hub.InferenceClient(server.url + "/generate")
    assert tgi.text_generation(PROMPTS[2], max_new_tokens=10) == want
    chat_want = greedy(pipe, CHAT, 12)
    r = client.chat_completion(CHAT, max_tokens=12, temperature=0)
    assert r.choices[0].message.content == chat_want
    streamed = client.chat_completion(CHAT, max_tokens=12, temperature=0, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == chat_want


def reference_logprobs(pipe, prompt, tokens):
    """Per generated token: the log-softmax of the pipeline's own model's logits (numpy, float64) at that step,
    the model fed the prompt and the tokens one by one."""
    from onnxpipe._generate import KVCache

    ids = pipe.tokenizer.encode_batch([prompt], truncation=False, add_special_tokens=True)[0].ids
    cache = KVCache(pipe.model, pipe.graph, 1, capacity=len(ids) + len(tokens))
    logits = cache.prefill(np.array([ids]), np.ones((1, len(ids)), dtype=np.int64))
    out = []
    for token in tokens:
        row = logits[0].astype(np.float64)
        logp = row - row.max() - np.log(np.exp(row - row.max()).sum())
        out.append(logp)
        logits = cache.step(np.array([token]))
    return out


def test_tgi_details_carry_each_tokens_logprob_and_top_tokens(server, pipe):
    client = hub.InferenceClient(server.url)
    r = client.text_generation(PROMPTS[0], max_new_tokens=8, details=True, top_n_tokens=3)
    tokens = r.details.tokens
    want = reference_logprobs(pipe, PROMPTS[0], [t.id for t in tokens])
    assert [t.logprob for t in tokens] == pytest.approx([logp[t.id] for t, logp in zip(tokens, want)], abs=1e-4)
    assert all(t.logprob < 0 for t in tokens)  # a distribution over a vocabulary: never certain here
    # huggingface_hub 0.36 leaves details.top_tokens (a list per token) as plain dicts
    tops = [[t if isinstance(t, dict) else vars(t) for t in top] for top in r.details.top_tokens]
    assert len(tops) == len(tokens)
    for step, top, logp in zip(tokens, tops, want):
        assert len(top) == 3 and top[0]["id"] == step.id  # greedy: the chosen token is the likeliest
        third = np.sort(logp)[-3]
        for t in top:  # each is the model's, and among its 3 likeliest (ties at the third either way)
            assert t["logprob"] == pytest.approx(logp[t["id"]], abs=1e-4) and t["logprob"] >= third - 1e-4
        assert [t["logprob"] for t in top] == sorted((t["logprob"] for t in top), reverse=True)
    streamed = list(client.text_generation(PROMPTS[0], max_new_tokens=8, stream=True, details=True, top_n_tokens=2))
    assert [e.token.logprob for e in streamed] == pytest.approx([t.logprob for t in tokens], abs=1e-5)
    assert [[t.id for t in e.top_tokens] for e in streamed] == [[t["id"] for t in top[:2]] for top in tops]
    with pytest.raises(hub.errors.ValidationError, match="top_n_tokens=6 is out of range"):  # TGI's bound, 5
        client.text_generation(PROMPTS[0], max_new_tokens=2, details=True, top_n_tokens=6)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_concurrent_requests_each_get_their_output_alone(folders, arch):
    p = onnxpipe.pipeline("text-generation", model=folders[arch])
    tokens = [30, 12, 40, 25]
    want = [greedy(p, x, n) for x, n in zip(PROMPTS, tokens)]
    with Server(str(folders[arch])) as s:
        client = openai.OpenAI(base_url=s.url + "/v1", api_key="none")

        def ask(i):
            r = client.completions.create(model=arch, prompt=PROMPTS[i], max_tokens=tokens[i], temperature=0)
            return r.choices[0].text

        with ThreadPoolExecutor(4) as pool:
            assert list(pool.map(ask, range(4))) == want


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_decoder_joins_requests_into_the_running_batch(folders, arch):
    """In-process: each request joins after the previous one has 4 tokens, so all four overlap; every output is
    its output alone, and the decoder took fewer steps than the requests' tokens (they shared steps)."""
    from onnxpipe._sampling import Sampling
    from onnxpipe._serve._decoding import Decoder, Finished, Request, Token

    p = onnxpipe.pipeline("text-generation", model=folders[arch])
    tokens = [30, 12, 40, 25]
    want = [greedy(p, x, n) for x, n in zip(PROMPTS, tokens)]
    decoder = Decoder(p)
    decoder.start()
    got: dict[int, Finished] = {}
    counts = [0] * 4
    joined = [threading.Event() for _ in PROMPTS]
    finished = [threading.Event() for _ in PROMPTS]

    def emit_for(i):
        def emit(event):
            if isinstance(event, Token):
                counts[i] += 1
                if counts[i] == 4:
                    joined[i].set()
            elif isinstance(event, Finished):
                got[i] = event
                joined[i].set()
                finished[i].set()

        return emit

    try:
        for i, prompt in enumerate(PROMPTS):
            ids = p.tokenizer.encode_batch([prompt], truncation=False)[0].ids
            decoder.submit(Request(ids, tokens[i], Sampling(), emit_for(i)))
            assert joined[i].wait(60)
        assert all(f.wait(60) for f in finished)
    finally:
        decoder.close()
    assert [got[i].text for i in range(4)] == want
    assert decoder.steps < sum(got[i].tokens for i in range(4))


def test_a_client_gone_mid_stream_stops_its_decoding(folders):
    with Server(str(folders["llama"]), "--log-level", "info", hooks=True) as s:
        body = {"model": "llama", "prompt": "Hello", "max_tokens": 100, "temperature": 0, "stream": True}
        s.release(1)  # the first decode step (the answer's headers come with its token)
        with httpx.stream("POST", s.url + "/v1/completions", json=body, timeout=60) as r:
            for line in r.iter_lines():
                if line.startswith("data:"):
                    break  # the first token arrived; the client leaves
        assert s.wait_output("its decoding stops")
        s.release(1)  # the next step finds the request cancelled
        assert s.wait_output("dropped 1 request(s) whose client went away")
        assert s.output().count("onnxpipe-test: at the gate") == 2  # and no step after: the batch is empty


@pytest.mark.parametrize("precision", ["int8", "int4"])
def test_a_low_bit_decoder_decodes_one_request_at_a_time(tiny_export, precision):
    """A low-bit decoder rounds a row differently beside other rows, so a request's tokens would depend on the
    requests beside it: the decoder runs such a variant one request at a time (every token its own step, but
    the first, which comes from the request's prefill), and each output is its output alone."""
    from onnxpipe._sampling import Sampling
    from onnxpipe._serve._decoding import Decoder, Finished, Request

    folder = tiny_export("llama", "text-generation", precisions=f"fp32,{precision}")
    p = onnxpipe.pipeline("text-generation", model=folder, precision=precision)
    assert p.model.execution == "alone"
    tokens = [12, 6, 9, 10]
    want = [greedy(p, x, n) for x, n in zip(PROMPTS, tokens)]
    decoder = Decoder(p)
    got: dict[int, Finished] = {}
    finished = [threading.Event() for _ in PROMPTS]

    def emit_for(i):
        def emit(event):
            if isinstance(event, Finished):
                got[i] = event
                finished[i].set()

        return emit

    for i, prompt in enumerate(PROMPTS):  # all four wait before the decoder starts: batching would take them all
        ids = p.tokenizer.encode_batch([prompt], truncation=False)[0].ids
        decoder.submit(Request(ids, tokens[i], Sampling(), emit_for(i)))
    decoder.start()
    try:
        assert all(f.wait(60) for f in finished)
    finally:
        decoder.close()
    assert [got[i].text for i in range(4)] == want
    assert decoder.steps >= sum(got[i].tokens for i in range(4)) - len(PROMPTS)
