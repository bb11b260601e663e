"""The client libraries people already have, unchanged, against a real ``onnxpipe serve``: huggingface_hub's
``InferenceClient``, openai's ``OpenAI`` and LangChain's ``OpenAIEmbeddings``. Each answer is compared with the
in-process pipeline's (embeddings by cosine >= 0.9999, labels equal, generated text equal under greedy decoding).

huggingface_hub twice: the test venv's 0.36 (transformers 4.x pins it below 1.0), imported here, and 2.4 in a
consumer environment of its own (tests/interop/envs.py builds ``huggingface-hub-2`` on first use; a failed
build fails the test), driven through tests/interop/run_huggingface_hub.py.

Tiny exports (the export extra) stand in for fill-mask, NER, question answering, zero-shot and embeddings;
models/minilm-sst2 for sentiment. One server per model, so that ``InferenceClient(base)`` reaches the model's
main task through ``POST /`` as it does on text-embeddings-inference.
"""

from __future__ import annotations

import base64
import contextlib
import json
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("starlette", reason="needs the serve extra: pip install 'onnxpipe[serve]'")
hub = pytest.importorskip("huggingface_hub", reason="needs the test extra")
openai = pytest.importorskip("openai", reason="needs the test extra")
langchain_openai = pytest.importorskip("langchain_openai", reason="needs the test extra")

import httpx  # noqa: E402

from _serve_util import ROOT, Server  # noqa: E402
from conftest import HAS_EXPORT_EXTRA  # noqa: E402
from onnxpipe import pipeline  # noqa: E402

sys.path.insert(0, str(ROOT / "tests" / "interop"))
import envs  # noqa: E402

SST2 = str(ROOT / "models" / "minilm-sst2")
# model key -> the tiny export's head (None: the committed sentiment model)
HEADS = {
    "emb": "feature-extraction",
    "fm": "fill-mask",
    "ner": "token-classification",
    "qa": "question-answering",
    "zs": "zero-shot-classification",
    "sst2": None,
    "gen": "text-generation",  # a tiny Llama (fp32: greedy text is each request's own)
    "t2t": "text2text-generation",  # a tiny T5 (fp32: requests are batched together)
}
ARCH = {"gen": "llama", "t2t": "t5"}  # else bert


@pytest.fixture(scope="module")
def folders(request):
    """key -> model folder; without the export extra only the sentiment model (the others' tests skip)."""
    out = {"sst2": SST2}
    if HAS_EXPORT_EXTRA:  # an export that fails fails the tests: it is not taken for a missing extra
        tiny_export = request.getfixturevalue("tiny_export")
        for key, head in HEADS.items():
            if head in ("text-generation", "text2text-generation"):
                out[key] = str(tiny_export(ARCH[key], head, precisions="fp32"))
            elif head:
                out[key] = str(tiny_export(ARCH.get(key, "bert"), head))
    return out


@pytest.fixture(scope="module")
def servers(folders):
    """key -> a running single-model server, started on first use, stopped at the module's end."""
    with contextlib.ExitStack() as stack:
        cache: dict[tuple[str, tuple[str, ...]], Server] = {}

        def get(key: str, *extra: str) -> Server:
            if key not in folders:
                pytest.skip("needs the export extra: pip install 'onnxpipe[export]'")
            if (key, extra) not in cache:
                cache[(key, extra)] = stack.enter_context(Server(f"{key}={folders[key]}", *extra))
            return cache[(key, extra)]

        yield get


def cosine(a, b) -> float:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


TEXT = "Hugging Face is based in New York City."
LABELS = ["travel", "cooking", "dancing"]


def _hub_case(name, key, call, want, compare):
    return pytest.param(key, call, want, compare, id=name)


def _same_labels(got, want):
    got = [g.__dict__ if hasattr(g, "__dict__") else g for g in got]
    assert [g["label"] for g in got] == [w["label"] for w in want]
    np.testing.assert_allclose([g["score"] for g in got], [w["score"] for w in want], atol=1e-5)


def _same(fields):
    def check(got, want):
        rows = got if isinstance(got, list) else [got]
        wants = want if isinstance(want, list) else [want]
        assert len(rows) == len(wants)
        for g, w in zip(rows, wants):
            for f in fields:
                if f == "score":
                    assert abs(g.score - w["score"]) < 1e-5
                else:
                    assert getattr(g, f) == w[f], (f, g, w)

    return check


def _close_vector(got, want):
    assert np.asarray(got).shape == (1, len(want))
    assert cosine(got, want) >= 0.9999


def _close_scores(got, want):
    np.testing.assert_allclose(got, want, atol=1e-4)


def _similarity(pipe):
    source, *others = pipe(["A man eats.", "Someone is eating.", "The sky is blue."])
    return [cosine(source, o) for o in others]


# (name, model key, the client's call, the in-process answer, comparison)
def _t2t(text):
    """What POST / of the T5 folder answers: its main task's (text2text-generation) greedy text."""
    return lambda f: pipeline("text2text-generation", model=f)(text)[0]["generated_text"]


def _text_field(name):
    def check(got, want):
        assert (got[name] if isinstance(got, dict) else getattr(got, name)) == want

    return check


S2S_TEXT = "The film was great, and the soup was cold."

HUB_CASES = [
    _hub_case(
        "feature_extraction",
        "emb",
        lambda c: c.feature_extraction("I love this!"),
        lambda f: pipeline("sentence-embeddings", model=f)("I love this!"),
        _close_vector,
    ),
    _hub_case(
        "text_classification",
        "sst2",
        lambda c: c.text_classification("I love this!"),
        lambda f: pipeline("text-classification", model=f)("I love this!", top_k=None),
        _same_labels,
    ),
    _hub_case(
        "fill_mask",
        "fm",
        lambda c: c.fill_mask("Paris is the [MASK] of France."),
        lambda f: pipeline("fill-mask", model=f)("Paris is the [MASK] of France."),
        _same(["token", "token_str", "sequence", "score"]),
    ),
    _hub_case(
        "token_classification",
        "ner",
        lambda c: c.token_classification(TEXT),
        lambda f: pipeline("token-classification", model=f)(TEXT),
        _same(["entity", "word", "start", "end", "score"]),
    ),
    _hub_case(
        "zero_shot_classification",
        "zs",
        lambda c: c.zero_shot_classification("I want to go to the beach.", LABELS),
        lambda f: [
            {"label": lab, "score": sc}
            for r in [pipeline("zero-shot-classification", model=f)("I want to go to the beach.", LABELS)]
            for lab, sc in zip(r["labels"], r["scores"])
        ],
        _same_labels,
    ),
    _hub_case(
        "question_answering",
        "qa",
        lambda c: c.question_answering(question="Where is it based?", context=TEXT),
        lambda f: pipeline("question-answering", model=f)(question="Where is it based?", context=TEXT),
        _same(["answer", "start", "end", "score"]),
    ),
    _hub_case(
        "sentence_similarity",
        "emb",
        lambda c: c.sentence_similarity("A man eats.", ["Someone is eating.", "The sky is blue."]),
        lambda f: _similarity(pipeline("sentence-embeddings", model=f)),
        _close_scores,
    ),
    # huggingface_hub posts summarization and translation to / alike: a text2text folder answers both
    _hub_case("summarization", "t2t", lambda c: c.summarization(S2S_TEXT), _t2t(S2S_TEXT), _text_field("summary_text")),
    _hub_case("translation", "t2t", lambda c: c.translation(S2S_TEXT), _t2t(S2S_TEXT), _text_field("translation_text")),
]


@pytest.mark.parametrize("key, call, want, compare", HUB_CASES)
def test_inference_client_on_post_root(servers, folders, key, call, want, compare):
    """``InferenceClient(base)`` posts to ``/``: the served model's main task answers, in the hub's shapes."""
    s = servers(key)
    compare(call(hub.InferenceClient(s.url)), want(folders[key]))


@pytest.mark.parametrize(
    "key, path, call",
    [
        ("sst2", "/predict", lambda c: c.text_classification("I love this!")),  # was 422: unknown 'parameters'
        ("zs", "/zero-shot-classification", lambda c: c.zero_shot_classification("Go to the beach.", LABELS)),
        ("emb", "/embed", lambda c: c.feature_extraction("I love this!")),
        ("emb", "/similarity", lambda c: c.sentence_similarity("A man eats.", ["Someone is eating."])),
        ("sst2", "/invocations", lambda c: c.text_classification("I love this!")),
        ("t2t", "/invocations", lambda c: c.summarization(S2S_TEXT)),
    ],
    ids=["predict", "zero-shot", "embed", "similarity", "invocations", "seq2seq-invocations"],
)
def test_inference_client_on_task_paths(servers, key, path, call):
    s = servers(key)
    root = call(hub.InferenceClient(s.url))
    assert repr(call(hub.InferenceClient(s.url + path))) == repr(root)


def test_inference_client_shows_the_servers_message(servers):
    s = servers("sst2")
    with pytest.raises(hub.errors.HfHubHTTPError) as caught:
        hub.InferenceClient(s.url).text_classification("word " * 600)  # over minilm-sst2's 512 tokens
    assert caught.value.response.status_code == 422 and '"truncate": true' in str(caught.value)


def test_zero_shot_shape_follows_the_hub_version(servers):
    """huggingface_hub 0.x parses transformers' {labels, scores}; 1.x and later a list of {label, score}. The
    User-Agents are those the clients send (build_hf_headers: "unknown/None; hf_hub/2.4.0; python/3.11.7")."""
    s = servers("zs")
    body = {"inputs": "Go to the beach.", "parameters": {"candidate_labels": LABELS}}
    old = s.post("/", body, headers={"user-agent": "unknown/None; hf_hub/0.36.2; python/3.11.7"}).json()
    assert set(old) == {"sequence", "labels", "scores"}
    for agent in ("unknown/None; hf_hub/2.4.0; python/3.11.7", "huggingface_hub/1.2.0; python/3.12"):
        new = s.post("/", body, headers={"user-agent": agent}).json()
        assert new == [{"label": lab, "score": sc} for lab, sc in zip(old["labels"], old["scores"])], agent


# -- openai ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def emb(servers, folders):
    return servers("emb"), pipeline("sentence-embeddings", model=folders["emb"])


def client(s: Server):
    return openai.OpenAI(base_url=s.url + "/v1", api_key="unused", max_retries=0)


@pytest.mark.parametrize("fmt", ["float", "base64"])
def test_openai_embeddings(emb, fmt):
    s, pipe = emb
    texts = ["I love this!", "Boring.", "caf\u00e9 \U0001f600 ok"]
    r = client(s).embeddings.create(model="emb", input=texts, encoding_format=fmt)
    vectors = [d.embedding if fmt == "float" else np.frombuffer(base64.b64decode(d.embedding), "<f4") for d in r.data]
    assert [d.index for d in r.data] == [0, 1, 2] and r.model == "emb"
    assert all(cosine(v, w) >= 0.9999 for v, w in zip(vectors, pipe(texts)))
    assert r.usage.prompt_tokens == sum(len(e.ids) for e in pipe.tokenizer.encode_batch(texts))


def test_openai_models_list(emb):
    s, _ = emb
    assert [m.id for m in client(s).models.list()] == ["emb"]


@pytest.mark.parametrize(
    "kwargs, error, needle",
    [
        ({"model": "nope"}, openai.UnprocessableEntityError, "is not served here"),
        ({"model": "emb", "dimensions": 4096}, openai.UnprocessableEntityError, "over this model's output size"),
        ({"model": "emb", "input": [[101, 10**6]]}, openai.BadRequestError, "outside this model's"),
        ({"model": "emb", "input": [[101, 102], "x"]}, openai.UnprocessableEntityError, "mixes texts"),
        ({"model": "emb", "input": ["x"] * 2049}, openai.APIStatusError, "at most 2048"),
        ({"model": "emb", "input": "word " * 200}, openai.UnprocessableEntityError, '"truncate": true'),
    ],
    ids=["unknown-model", "dimensions", "token-id-range", "mixed-input", "2049-inputs", "too-long"],
)
def test_openai_errors_show_the_message(emb, kwargs, error, needle):
    """OpenAI's clients show ``error.message`` (before, the user saw only 'Error code: 422')."""
    s, _ = emb
    with pytest.raises(error) as caught:
        client(s).embeddings.create(**{"input": "I love this!", **kwargs})
    assert needle in str(caught.value), str(caught.value)
    assert isinstance(caught.value.body, dict) and caught.value.body["message"] in str(caught.value)
    assert caught.value.type == "invalid_request_error"


def test_openai_shape_for_refusals_before_the_handler():
    """429 (written by the protocol), 413 (from Content-Length), 404 and 405 on /v1/* reach OpenAI's clients
    with their message too."""
    from concurrent.futures import ThreadPoolExecutor

    with (
        Server(f"sst2={SST2}", "--max-concurrent-requests", "1", "--payload-limit", "20000", hooks=True) as s,
        ThreadPoolExecutor(1) as pool,
    ):
        c = client(s)
        with pytest.raises(openai.APIStatusError) as big:
            c.embeddings.create(model="sst2", input=["x" * 30000])
        assert big.value.status_code == 413 and "--payload-limit" in str(big.value)
        busy = pool.submit(s.post, "/v1/embeddings", {"input": "busy"})
        assert s.wait_output("onnxpipe-test: at the gate")
        with pytest.raises(openai.RateLimitError) as refused:
            c.embeddings.create(model="sst2", input="one more")
        assert "--max-concurrent-requests=1" in str(refused.value) and refused.value.type == "rate_limit_error"
        s.release(2)
        assert busy.result(120).status_code == 200
        for method, path, status in [("GET", "/v1/nowhere", 404), ("GET", "/v1/embeddings", 405)]:
            r = httpx.request(method, s.url + path, timeout=10)
            assert r.status_code == status and path in r.json()["error"]["message"], r.text


def test_openai_dimensions_and_truncation(emb):
    s, pipe = emb
    c = client(s)
    full = pipe("I love this!")
    short = c.embeddings.create(model="emb", input="I love this!", dimensions=8).data[0].embedding
    assert len(short) == 8 and abs(np.linalg.norm(short) - 1) < 1e-5
    assert cosine(short, full[:8]) >= 0.9999  # the first 8 values, renormalised
    long = "word " * 200  # over the tiny model's 128 positions
    cut = c.embeddings.create(model="emb", input=long, extra_body={"truncate": True}).data[0].embedding
    assert cosine(cut, pipe(long, truncation=True)) >= 0.9999


def test_openai_token_id_input_equals_the_text(emb):
    """``input: [[ids]]``: the ids as given (as /tokenize returns them, specials included) run without the
    tokenizer, and embed as their text does."""
    s, pipe = emb
    texts = ["I love this!", "Boring."]
    rows = [e.ids for e in pipe.tokenizer.encode_batch(texts)]
    r = client(s).embeddings.create(model="emb", input=rows)
    assert all(cosine(d.embedding, w) >= 0.9999 for d, w in zip(r.data, pipe(texts)))
    assert r.usage.prompt_tokens == sum(map(len, rows))
    one = client(s).embeddings.create(model="emb", input=rows[0]).data  # one input as a flat list of ids
    assert len(one) == 1 and cosine(one[0].embedding, r.data[0].embedding) >= 0.9999
    long = [rows[0][0]] + [rows[0][1]] * 300 + [rows[0][-1]]  # [CLS] ... [SEP], over the tiny model's 128 positions
    refused = s.post("/v1/embeddings", {"input": [long]})
    assert refused.status_code == 422 and '"truncate": true' in refused.json()["error"]["message"]
    assert s.post("/v1/embeddings", {"input": [long], "truncate": True}).status_code == 200


def test_auto_truncate_is_the_server_default(servers, folders):
    s = servers("emb", "--auto-truncate")
    long = "word " * 200
    want = pipeline("sentence-embeddings", model=folders["emb"])(long, truncation=True)
    r = s.post("/v1/embeddings", {"input": long})
    assert r.status_code == 200 and cosine(r.json()["data"][0]["embedding"], want) >= 0.9999
    assert s.post("/v1/embeddings", {"input": long, "truncate": False}).status_code == 422  # the request decides


def test_openai_takes_up_to_2048_inputs(emb):
    s, pipe = emb
    texts = [f"sentence number {i}" for i in range(2048)]
    r = client(s).embeddings.create(model="emb", input=texts)
    assert len(r.data) == 2048 and [d.index for d in r.data] == list(range(2048))
    for i in (0, 777, 2047):
        assert cosine(r.data[i].embedding, pipe(texts[i])) >= 0.9999


# -- LangChain -------------------------------------------------------------------------------------------------
def test_langchain_openai_embeddings_100_documents(emb):
    """OpenAIEmbeddings' defaults send up to 1000 inputs per request (was 413 past 32); with
    check_embedding_ctx_length=False it sends the texts."""
    s, pipe = emb
    docs = [f"document {i}: the quick brown fox jumps over the lazy dog {i % 7}" for i in range(100)]
    lc = langchain_openai.OpenAIEmbeddings(
        model="emb", base_url=s.url + "/v1", api_key="unused", check_embedding_ctx_length=False, max_retries=0
    )
    got = lc.embed_documents(docs)
    want = pipe(docs)
    assert len(got) == 100 and min(cosine(g, w) for g, w in zip(got, want)) >= 0.9999
    assert cosine(lc.embed_query("the lazy dog"), pipe("the lazy dog")) >= 0.9999


@pytest.fixture(scope="module")
def tiktoken_offline():
    """TIKTOKEN_CACHE_DIR with OpenAI's cl100k_base (envs.tiktoken_cache: rebuilt from npm's js-tiktoken, its
    sha256 the one tiktoken checks), so LangChain's default path tokenizes here as it does online."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TIKTOKEN_CACHE_DIR", str(envs.tiktoken_cache()))
        yield


# Texts whose tiktoken ids all fall inside a BERT vocabulary (the row then lacks [CLS] ... [SEP]) and ones with
# an id past it: both refusals must name LangChain's setting.
@pytest.mark.parametrize("text", ["the cat sat on the mat", "I love this!", "the quick brown fox", "naïve café"])
def test_langchain_defaults_send_tiktoken_ids_and_get_a_400_that_says_so(emb, tiktoken_offline, text):
    """OpenAIEmbeddings' default check_embedding_ctx_length=True tokenizes with tiktoken and sends OpenAI's
    token ids, which this model would read as its own (garbage, silently). The server refuses them with a 400
    in OpenAI's shape whose message names the setting; the real client, unchanged, raises it."""
    import tiktoken

    s, pipe = emb
    ids = tiktoken.get_encoding("cl100k_base").encode(text)
    size = pipe.tokenizer.backend.get_vocab_size()
    lc = langchain_openai.OpenAIEmbeddings(model="emb", base_url=s.url + "/v1", api_key="unused", max_retries=0)
    assert lc.check_embedding_ctx_length  # the default under test
    with pytest.raises(openai.BadRequestError) as caught:
        lc.embed_documents([text])
    error = caught.value.body
    assert caught.value.status_code == 400 and error["param"] == "input" and error["type"] == "invalid_request_error"
    assert "check_embedding_ctx_length=False" in error["message"]
    why = "outside this model's vocabulary" if max(ids) >= size else "does not start with [CLS] [101]"
    assert why in error["message"], error["message"]


def test_this_models_own_ids_still_run(emb):
    """The check refuses other tokenizers' ids, not this model's: /tokenize's ids (specials included) embed as
    their text; without the specials, a 400 saying what to send."""
    s, pipe = emb
    ids = [t["id"] for t in s.post("/tokenize", {"inputs": "I love this!"}).json()[0]]
    r = s.post("/v1/embeddings", {"input": [ids]})
    assert r.status_code == 200 and cosine(r.json()["data"][0]["embedding"], pipe("I love this!")) >= 0.9999
    bare = s.post("/v1/embeddings", {"input": [ids[1:-1]]})
    assert bare.status_code == 400 and "as POST /tokenize returns them" in bare.json()["error"]["message"]


# -- routing like TEI -------------------------------------------------------------------------------------------
def test_routing_by_main_task(folders):
    if "emb" not in folders:
        pytest.skip("needs the export extra")
    with Server(f"sst2={SST2}", f"emb={folders['emb']}", f"zs={folders['zs']}") as s:
        want = pipeline("sentence-embeddings", model=folders["emb"])("food")
        for path, body in [("/embed", {"inputs": "food"}), ("/v1/embeddings", {"input": "food"})]:
            r = s.post(path, body)
            vector = r.json()[0] if path == "/embed" else r.json()["data"][0]["embedding"]
            assert cosine(vector, want) >= 0.9999, path  # the embedding model, not the classifier's states
        assert s.post("/", {"inputs": "I love this!"}).json()[0]["label"] == "POSITIVE"  # the first model's task
        named = s.post("/", {"inputs": "food", "model": "emb"}).json()  # the named model's main task
        assert cosine(named[0], want) >= 0.9999
        zs = s.post("/zero-shot-classification", {"inputs": "x", "parameters": {"candidate_labels": LABELS}})
        assert zs.status_code == 200  # the NLI model, whose main task it is
        endpoints = httpx.get(s.url + "/info", timeout=10).json()["endpoints"]
        assert endpoints["/embed"]["default"] == "emb" and endpoints["/predict"]["default"] == "sst2"
        assert endpoints["/zero-shot-classification"]["default"] == "zs" and endpoints["/"]["default"] == "sst2"
        assert "emb (sentence-embeddings) answers /embed, /v1/embeddings, /similarity" in s.output()


def test_a_classifier_alone_answers_embeddings_and_says_so():
    with Server(f"sst2={SST2}") as s:
        assert s.post("/embed", {"inputs": "food"}).status_code == 200
        assert "/embed and /v1/embeddings answer sst2's pooled hidden states" in s.output()
        single = s.post("/tokenize", {"inputs": "I love this!"}).json()
        assert isinstance(single[0], list)  # TEI: [[...]] for one string too


# -- the command line -------------------------------------------------------------------------------------------
def test_serve_without_a_model_serves_the_default_and_a_taken_port_is_one_error_line():
    with Server() as s:
        models = httpx.get(s.url + "/info", timeout=10).json()["models"]
        assert [m["name"] for m in models] == ["minilm-sst2"]
        assert "serving minilm-sst2" in s.output()
        proc = subprocess.run(
            # The port is taken before the models load: said at once, even for a folder that does not exist.
            [sys.executable, "-m", "onnxpipe._cli", "serve", "/nonexistent/model", "--port", str(s.port)],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=300,
        )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot listen on 127.0.0.1:") and "--port" in lines[0]
    assert "serving" not in proc.stderr


# -- TEI's /rerank, /embed_all, /decode -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cross_encoder(tiny_checkpoint, tmp_path_factory):
    """A tiny cross-encoder: the tiny BERT classifier with one output, as sentence-transformers' CrossEncoder
    checkpoints are (a sequence-classification head with one label), exported as text-classification."""
    pytest.importorskip("torch", reason="needs the export extra: pip install 'onnxpipe[export]'")
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from onnxpipe_export import export

    src = tiny_checkpoint("bert", "text-classification")
    ckpt = tmp_path_factory.mktemp("cross-encoder-ckpt")
    one = {"num_labels": 1, "id2label": {0: "LABEL_0"}, "label2id": {"LABEL_0": 0}, "problem_type": "regression"}
    AutoModelForSequenceClassification.from_pretrained(src, ignore_mismatched_sizes=True, **one).save_pretrained(ckpt)
    AutoTokenizer.from_pretrained(src).save_pretrained(ckpt)
    out = tmp_path_factory.mktemp("cross-encoder") / "model"
    return str(export(ckpt, task="text-classification", out=out, precisions="fp32", progress=False))


def test_rerank_with_a_cross_encoder(cross_encoder, folders):
    query, texts = "Where is it based?", ["It is based in New York.", "The sky is blue.", "Paris is in France."]
    pipe = pipeline("text-classification", model=cross_encoder)
    logits = [
        r[0]["score"]
        for r in pipe([{"text": query, "text_pair": t} for t in texts], function_to_apply="none", top_k=None)
    ]
    with Server(f"ce={cross_encoder}", f"emb={folders.get('emb', SST2)}") as s:
        r = s.post("/rerank", {"query": query, "texts": texts, "return_text": True})
        assert r.status_code == 200, r.text
        got = r.json()
        assert [g["index"] for g in got] == sorted(range(3), key=lambda i: -logits[i])  # best first
        for g in got:
            assert abs(g["score"] - 1 / (1 + np.exp(-logits[g["index"]]))) < 1e-5 and g["text"] == texts[g["index"]]
        raw = s.post("/rerank", {"query": query, "texts": texts, "raw_scores": True}).json()
        assert all(abs(g["score"] - logits[g["index"]]) < 1e-5 and "text" not in g for g in raw)
        root = s.post("/", {"query": query, "texts": texts, "return_text": True})
        assert root.json() == got  # POST / runs the first model's main task: rerank
        bi = s.post("/rerank", {"query": query, "texts": texts, "model": "emb"})
        assert bi.status_code == 422 and "rerank needs a cross-encoder" in bi.json()["error"], bi.text
        assert "ce (rerank) answers /, /invocations" in s.output()


def test_tei_embed_all_and_decode(servers, folders):
    s = servers("emb")
    want = pipeline("feature-extraction", model=folders["emb"])("I love this!")  # [1][tokens][hidden]
    got = s.post("/embed_all", {"inputs": "I love this!"}).json()
    assert len(got) == 1 and np.allclose(got[0], want[0], atol=1e-5)
    ids = s.post("/tokenize", {"inputs": ["I love this!"]}).json()[0]
    decoded = s.post("/decode", {"ids": [t["id"] for t in ids]}).json()
    assert decoded == [
        pipeline("sentence-embeddings", model=folders["emb"]).tokenizer.decode(
            [t["id"] for t in ids], skip_special_tokens=True
        )
    ]
    assert s.post("/decode", {"ids": [[1, 2], "x"]}).status_code == 422
    short = s.post("/embed", {"inputs": "I love this!", "dimensions": 8}).json()[0]  # as huggingface_hub 1.x sends
    full = pipeline("sentence-embeddings", model=folders["emb"])("I love this!")
    assert len(short) == 8 and cosine(short, full[:8]) >= 0.9999 and abs(np.linalg.norm(short) - 1) < 1e-5


# -- huggingface_hub 2.4, in its own environment ---------------------------------------------------------------
CHAT = [{"role": "user", "content": "What time does the train leave?"}]
PROMPT = "The food was great!"


def _greedy(folder, item, tokens):
    pipe = pipeline("text-generation", model=folder)
    return pipe(item, max_new_tokens=tokens, do_sample=False, return_full_text=False)[0]["generated_text"]


def _fields(names):
    def check(got, want):
        rows, wants = (got if isinstance(got, list) else [got]), (want if isinstance(want, list) else [want])
        assert len(rows) == len(wants)
        for g, w in zip(rows, wants):
            for f in names:
                assert (abs(g[f] - w[f]) < 1e-5) if f == "score" else g[f] == w[f], (f, g, w)

    return check


def _equal(got, want):
    assert got == want


def _text_details(got, want):
    assert got["generated_text"] == want
    details = got["details"]
    assert details["generated_tokens"] == len(details["tokens"]) and details["finish_reason"] in ("length", "eos_token")
    assert all(t["logprob"] < 0 for t in details["tokens"])


def _streamed_text(got, want):
    assert "".join(got) == want


def _chat(got, want):
    assert got["choices"][0]["message"]["content"] == want


def _chat_stream(got, want):
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in got if c["choices"]) == want


# (name, model key, method, args, kwargs, stream, the in-process answer, comparison): every call of the issue's
# table, the generation ones whole and streamed
HUB2_CASES = [
    ("feature_extraction", "emb", "feature_extraction", ["I love this!"], {}, False,
     lambda f: pipeline("sentence-embeddings", model=f)("I love this!"), _close_vector),
    ("text_classification", "sst2", "text_classification", ["I love this!"], {}, False,
     lambda f: pipeline("text-classification", model=f)("I love this!", top_k=None), _same_labels),
    ("fill_mask", "fm", "fill_mask", ["Paris is the [MASK] of France."], {}, False,
     lambda f: pipeline("fill-mask", model=f)("Paris is the [MASK] of France."),
     _fields(["token", "token_str", "sequence", "score"])),
    ("token_classification", "ner", "token_classification", [TEXT], {}, False,
     lambda f: pipeline("token-classification", model=f)(TEXT), _fields(["entity", "word", "start", "end", "score"])),
    ("zero_shot_classification", "zs", "zero_shot_classification", ["I want to go to the beach.", LABELS], {}, False,
     lambda f: [
         {"label": lab, "score": sc}
         for r in [pipeline("zero-shot-classification", model=f)("I want to go to the beach.", LABELS)]
         for lab, sc in zip(r["labels"], r["scores"])
     ], _same_labels),
    ("question_answering", "qa", "question_answering", [], {"question": "Where is it based?", "context": TEXT}, False,
     lambda f: pipeline("question-answering", model=f)(question="Where is it based?", context=TEXT),
     _fields(["answer", "start", "end", "score"])),
    ("sentence_similarity", "emb", "sentence_similarity", ["A man eats.", ["Someone is eating.", "The sky is blue."]],
     {}, False, lambda f: _similarity(pipeline("sentence-embeddings", model=f)), _close_scores),
    ("text_generation", "gen", "text_generation", [PROMPT], {"max_new_tokens": 10}, False,
     lambda f: _greedy(f, PROMPT, 10), _equal),
    ("text_generation_details", "gen", "text_generation", [PROMPT], {"max_new_tokens": 10, "details": True}, False,
     lambda f: _greedy(f, PROMPT, 10), _text_details),
    ("text_generation_stream", "gen", "text_generation", [PROMPT], {"max_new_tokens": 10, "stream": True}, True,
     lambda f: _greedy(f, PROMPT, 10), _streamed_text),
    ("chat_completion", "gen", "chat_completion", [CHAT], {"max_tokens": 12, "temperature": 0}, False,
     lambda f: _greedy(f, CHAT, 12), _chat),
    ("chat_completion_stream", "gen", "chat_completion", [CHAT], {"max_tokens": 12, "temperature": 0, "stream": True},
     True, lambda f: _greedy(f, CHAT, 12), _chat_stream),
    ("summarization", "t2t", "summarization", [S2S_TEXT], {}, False, _t2t(S2S_TEXT), _text_field("summary_text")),
    ("translation", "t2t", "translation", [S2S_TEXT], {}, False, _t2t(S2S_TEXT), _text_field("translation_text")),
]  # fmt: skip


@pytest.fixture(scope="module")
def hub2_answers(servers):
    """Every HUB2_CASES call, made once by huggingface_hub 2.4 in its own environment: name -> its output."""
    python = envs.python_of("huggingface-hub-2")
    calls = [
        {"id": name, "url": servers(key).url, "method": method, "args": args, "kwargs": kwargs, "stream": stream}
        for name, key, method, args, kwargs, stream, _, _ in HUB2_CASES
    ]
    script = ROOT / "tests" / "interop" / "run_huggingface_hub.py"
    proc = subprocess.run([str(python), str(script)], input=json.dumps(calls), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    answers = {a["id"]: a for a in map(json.loads, proc.stdout.splitlines())}
    assert {a["version"] for a in answers.values()} == {"2.4.0"}
    return answers


@pytest.mark.parametrize(
    "name, key, want, compare", [pytest.param(c[0], c[1], c[6], c[7], id=c[0]) for c in HUB2_CASES]
)
def test_huggingface_hub_2_inference_client(hub2_answers, folders, name, key, want, compare):
    """huggingface_hub 2.4's ``InferenceClient(base)``, each task's call against the in-process pipeline."""
    answer = hub2_answers[name]
    assert "error" not in answer, answer["error"]
    compare(answer["result"], want(folders[key]))
