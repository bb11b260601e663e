"""``onnxpipe serve``: the real server on a free loopback port, every endpoint, every error status, batching
across clients, overload and graceful shutdown. Results are checked against the in-process pipeline."""

from __future__ import annotations

import json
import logging
import select
import signal
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

pytest.importorskip("starlette", reason="needs the serve extra: pip install 'onnxpipe[serve]'")
pytest.importorskip("httpx", reason="needs the test extra")
pytest.importorskip("prometheus_client", reason="needs the serve extra: pip install 'onnxpipe[serve]'")

import httpx  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from _serve_util import ROOT, Server, wait_until  # noqa: E402
from onnxpipe import SessionOptions, pipeline  # noqa: E402

SST2 = str(ROOT / "models" / "minilm-sst2")
TEXTS = [
    "I love this!",
    "I hate this so much!",
    "The plot was thin but the actors were great.",
    "Boring.",
    "An absolute triumph of cinema.",
    "Not worth the ticket.",
    "",
    "caf\u00e9 \U0001f600 ok",
]
LONG = " ".join(["the movie was long and the story kept going"] * 60)  # ~540 tokens: over 512


@pytest.fixture(scope="module")
def server():
    # Two names for one folder: requests choose a model by name. Small limits so each status is reachable.
    with Server(
        f"sst2={SST2}",
        f"other={SST2}",
        "--max-client-batch-size",
        "8",
        "--max-input-length",
        "64",
        "--payload-limit",
        "20000",
    ) as s:
        yield s


@pytest.fixture(scope="module")
def classifier():
    return pipeline("text-classification", model=SST2)


@pytest.fixture(scope="module")
def short_classifier():
    """The pipeline the server runs: its tokenizer capped at --max-input-length 64."""
    from onnxpipe._serve import load_model

    return load_model("sst2", SST2, max_input_length=64).pipelines["text-classification"]


# -- endpoints -----------------------------------------------------------------------------------------------
def test_what_a_first_request_would_build_exists_when_the_server_starts():
    """Built lazily, the untruncated tokenizer copy (~35 ms with the GIL held, on the event loop) and the lane
    session (~100 ms) landed on the first requests: the first burst's 429s took 25-45 ms instead of 3-6."""
    from onnxpipe._serve import load_model

    served = load_model("sst2", SST2, SessionOptions(threads=2))
    assert served.model.execution == "alone"
    assert served.model._lane_session is not None and served.model._pool is not None
    assert None in served.pipelines["text-classification"].tokenizer._encoder._pinned


def test_predict_single_equals_the_pipeline(server, classifier):
    for text in TEXTS:
        r = server.post("/predict", {"inputs": text})
        assert r.status_code == 200, r.text
        assert r.json() == classifier(text, top_k=None)  # a lone request is a batch of one: bit-identical


def test_predict_batch_pairs_and_raw_scores(server, classifier):
    r = server.post(
        "/predict",
        {
            "inputs": ["I love this!", ["A man eats.", "Someone is eating."], {"text": "Good.", "text_pair": "Bad."}],
            "raw_scores": True,
        },
    )
    assert r.status_code == 200, r.text
    got = r.json()
    want = classifier(
        [
            "I love this!",
            {"text": "A man eats.", "text_pair": "Someone is eating."},
            {"text": "Good.", "text_pair": "Bad."},
        ],
        top_k=None,
        function_to_apply="none",
    )
    assert [[x["label"] for x in row] for row in got] == [[x["label"] for x in row] for row in want]
    np.testing.assert_allclose(
        [[x["score"] for x in row] for row in got], [[x["score"] for x in row] for row in want], atol=2e-2
    )
    assert any(x["score"] > 1 or x["score"] < 0 for row in got for x in row)  # logits, not probabilities


def test_embed_and_openai_embeddings(server):
    embed = pipeline("sentence-embeddings", model=SST2)
    # Two classifiers and no embedding model: a request must name the one whose hidden states it wants.
    refused = server.post("/embed", {"inputs": "I love this!"})
    assert refused.status_code == 422 and 'name one with "model"' in refused.json()["error"], refused.text
    r = server.post("/embed", {"inputs": "I love this!", "model": "sst2"})
    assert r.status_code == 200, r.text
    assert np.array(r.json()).shape == (1, 384)
    np.testing.assert_array_equal(np.array(r.json()[0], np.float32), embed("I love this!"))
    raw = server.post("/embed", {"inputs": ["I love this!"], "normalize": False, "model": "sst2"}).json()
    assert abs(np.linalg.norm(raw[0]) - 1) > 1e-3
    r = server.post("/v1/embeddings", {"input": ["I love this!", "Boring."], "model": "other"})
    body = r.json()
    assert r.status_code == 200 and body["object"] == "list" and body["model"] == "other"
    assert [d["index"] for d in body["data"]] == [0, 1]
    tokens = sum(len(e.ids) for e in embed.tokenizer.encode_batch(["I love this!", "Boring."]))
    assert body["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens}
    b64 = server.post("/v1/embeddings", {"input": "Boring.", "encoding_format": "base64", "model": "sst2"}).json()
    import base64

    vector = np.frombuffer(base64.b64decode(b64["data"][0]["embedding"]), dtype="<f4")
    np.testing.assert_allclose(vector, body["data"][1]["embedding"], atol=2e-2)


def test_tokenize(server, classifier):
    r = server.post("/tokenize", {"inputs": ["I love this!"]})
    assert r.status_code == 200, r.text
    tokens = r.json()[0]
    assert [t["id"] for t in tokens] == classifier.tokenizer.encode_batch(["I love this!"])[0].ids
    assert tokens[0]["special"] and tokens[0]["start"] is None
    assert tokens[1]["text"] == "i" and (tokens[1]["start"], tokens[1]["stop"]) == (0, 1)
    plain = server.post("/tokenize", {"inputs": "I love this!", "add_special_tokens": False}).json()[0]  # TEI: [[...]]
    assert [t["id"] for t in plain] == [t["id"] for t in tokens[1:-1]]


def test_tokenize_cuts_at_the_served_maximum_when_asked(server, short_classifier):
    long = "word " * 3000  # 15 kB: 3,000 tokens
    r = server.post("/tokenize", {"inputs": [long, "I love this!"], "truncate": True})
    assert r.status_code == 200, r.text
    cut, short = r.json()
    assert [t["id"] for t in cut] == short_classifier.tokenizer.encode_batch([long], truncation=True)[0].ids
    assert len(cut) == 64 and cut[-1]["special"] and not cut[-2]["special"]
    assert len(short) == 6
    plain = server.post("/tokenize", {"inputs": long, "truncate": True, "add_special_tokens": False}).json()[0]
    assert len(plain) == 64 and not any(t["special"] for t in plain)


def test_tokenization_of_large_bodies_leaves_the_event_loop_free():
    """/tokenize, and the model endpoints' tokenization of bodies over 64 KiB, run on a worker thread: held at
    the gate mid-tokenization, the server still answers /health (on the loop, it stalled for seconds)."""
    big = "__block__ " + "the movie was long " * 5000  # 95 kB
    cases = [("/tokenize", {"inputs": "__block__"}), ("/predict", {"inputs": big, "truncate": True})]
    with Server(SST2, hooks=True) as s, ThreadPoolExecutor(1) as pool:
        for n, (path, body) in enumerate(cases, 1):
            held = pool.submit(s.post, path, body)
            assert s.wait_output("onnxpipe-test: at the gate", count=2 * n - 1)
            assert httpx.get(s.url + "/health", timeout=10).json() == {"status": "ok"}
            s.release(2)  # each waits at a second gate: the tokenizer's (/tokenize), the model's (/predict)
            assert held.result(60).status_code == 200, path


@pytest.mark.parametrize(
    "writes, closed, sent",
    [
        # (response started?, bytes) per write -> what reaches the socket, write by write
        ([(False, b"100"), (True, b"HEAD"), (True, b"BODY"), (True, b"MORE")], False, [b"100", b"HEADBODY", b"MORE"]),
        ([(True, b"HEAD")], True, [b"HEAD"]),  # closed after the head alone: the head still goes out
        ([(True, b"HEAD"), (True, b"")], False, [b"HEAD"]),  # an empty body (HEAD request) flushes it
    ],
    ids=["continue-head-body-stream", "head-then-close", "empty-body"],
)
def test_a_responses_head_leaves_with_its_body(writes, closed, sent):
    """uvicorn writes a response's head at http.response.start and its body at http.response.body; the
    protocol's transport joins them into one write. A write before the response starts (100 Continue) and
    every write after the first body part go as they come."""
    from onnxpipe._serve._protocol import _OneWrite

    class Cycle:
        response_started = False

    class Transport:
        def __init__(self):
            self.sent, self.closed = [], False

        def write(self, data):
            self.sent.append(data)

        def close(self):
            self.closed = True

        def is_closing(self):
            return self.closed

    cycle, transport = Cycle(), Transport()
    one = _OneWrite(transport, cycle)
    for started, data in writes:
        cycle.response_started = started
        one.write(data)
    if closed:
        one.close()
    assert [d for d in transport.sent if d] == sent and transport.closed == closed
    assert one.is_closing() == closed  # everything else is the transport's


@pytest.mark.parametrize(
    "head, complete, lingers",
    [
        (b"HTTP/1.1 408 Request Timeout\r\n", True, True),
        (b"HTTP/1.1 503 Service Unavailable\r\n", True, True),
        (b"HTTP/1.1 200 OK\r\n", True, False),  # a client that asked to close: it sent all, it reads
        (b"HTTP/1.1 500 Internal Server Error\r\n", False, False),  # cut mid-answer: nothing whole to keep
    ],
    ids=["408", "503", "200", "unfinished"],
)
def test_a_close_after_a_whole_error_answer_lingers(head, complete, lingers):
    from onnxpipe._serve._protocol import _OneWrite

    class Cycle:
        response_started, response_complete = True, complete

    class Transport:
        closed = False

        def write(self, data):
            pass

        def close(self):
            self.closed = True

    transport, lingered = Transport(), []
    one = _OneWrite(transport, Cycle(), lingered.append)
    one.write(head + b"content-length: 2\r\n\r\n")
    one.write(b"{}")
    one.close()
    assert (lingered != [], transport.closed) == (lingers, not lingers)


@pytest.mark.parametrize(
    "events, aborted",
    [
        (["bytes:all"], False),  # up to LINGER_BYTES are dropped
        (["bytes:all", "bytes:1"], True),  # one more: cut
        (["bytes:1", "timer"], True),  # LINGER_SECONDS over, whatever came
        (["bytes:1", "eof"], False),  # the client closed: the transport closes (eof_received says so)
    ],
    ids=["bytes-within", "bytes-past", "time-past", "client-closed"],
)
def test_a_lingering_close_drops_what_comes_within_its_bounds(events, aborted):
    from onnxpipe._serve._protocol import LINGER_BYTES, LINGER_SECONDS, _Lingering

    class Loop:
        def call_later(self, delay, callback):
            self.delay, self.callback = delay, callback
            return self

        def cancel(self):
            self.cancelled = True

    class Transport:
        aborted = False

        def abort(self):
            self.aborted = True

    loop, transport = Loop(), Transport()
    lingering = _Lingering(transport, loop)
    assert loop.delay == LINGER_SECONDS
    for event in events:
        if event == "timer":
            loop.callback()
        elif event == "eof":
            assert not lingering.eof_received()
        else:
            n = event.removeprefix("bytes:")
            lingering.data_received(b"x" * (LINGER_BYTES if n == "all" else int(n)))
    assert transport.aborted == aborted
    lingering.connection_lost(None)
    assert loop.cancelled


def test_metric_values_are_exact():
    """Counts past a million were printed with %g: 1234567 read back as 1.23457e+06."""
    from onnxpipe._serve._metrics import Metrics

    m = Metrics()
    m.tokens.inc("sst2", amount=1_234_567)
    m.tokens.inc("sst2")
    m.latency.observe(0.123456789, "/predict")
    for _ in range(3):
        m.requests.inc("/predict", "200")
    samples = {s.name: s.value for f in text_string_to_metric_families(m.render()) for s in f.samples}
    assert samples["onnxpipe_input_tokens_total"] == 1_234_568
    assert samples["onnxpipe_request_duration_seconds_sum"] == 0.123456789
    assert samples["onnxpipe_requests_total"] == 3


class _FakeAlonePipe:
    """A pipeline whose model runs inputs alone on two cores; ``execute_batch`` records how each input ran."""

    class model:  # noqa: N801  # the attributes the batcher reads of a pipeline's model
        execution, threads = "alone", 2

    def __init__(self):
        self.calls: list[tuple[str, bool]] = []

    def execute_batch(self, encodings, batch_size=None, max_batch_tokens=None, on_lane=False):
        from onnxpipe._pipelines._base import Batch

        self.calls.append((encodings[0], on_lane))
        yield Batch([0], 1, [encodings[0].upper()])

    def gather(self, info, encodings, rows):
        return rows[0]


@pytest.mark.parametrize(
    "requests, on_lane",
    [
        ([["a"]], [False]),  # alone in the queue and on the cores: every core on it, as pipe(text)
        ([["a", "b", "c", "d"], ["e"]], None),  # answers in each request's order, whichever worker ran them
    ],
)
def test_batcher_answers_inputs_run_alone_by_its_workers(requests, on_lane):
    import asyncio

    from onnxpipe._serve._batcher import Batcher
    from onnxpipe._serve._metrics import Metrics

    pipe = _FakeAlonePipe()

    async def ask() -> list:
        batcher = Batcher(Metrics(), max_batch_tokens=1024, workers=2)
        batcher.start()
        try:
            prepared = [[(None, [x]) for x in texts] for texts in requests]
            return await asyncio.gather(*(batcher.submit("m", pipe, p, {}) for p in prepared))
        finally:
            await batcher.aclose()

    assert asyncio.run(ask()) == [[x.upper() for x in texts] for texts in requests]
    assert sorted(x for x, _ in pipe.calls) == sorted(x for texts in requests for x in texts)
    if on_lane is not None:
        assert [lane for _, lane in pipe.calls] == on_lane


def test_health_info_metrics_and_playground(server):
    assert httpx.get(server.url + "/health").json() == {"status": "ok"}
    info = httpx.get(server.url + "/info").json()
    assert [m["name"] for m in info["models"]] == ["sst2", "other"]
    assert info["models"][0]["labels"] == {"0": "NEGATIVE", "1": "POSITIVE"}
    assert info["models"][0]["max_input_length"] == 64
    assert info["endpoints"]["/predict"]["models"] == ["sst2", "other"]
    assert info["limits"]["max_client_batch_size"] == 8
    # Names, not the server's paths: any client can read /info (it showed the absolute folder path).
    raw = httpx.get(server.url + "/info").text
    assert str(ROOT) not in raw and "../shared" not in raw and "folder" not in info["models"][0]
    assert info["models"][0]["validation_data"]["file"] == "dev.tsv"
    before = server.metric("onnxpipe_requests_total", endpoint="/predict", status="200")
    server.post("/predict", {"inputs": "x"})
    scrape = httpx.get(server.url + "/metrics")
    text = scrape.text
    assert scrape.headers["content-type"].startswith("text/plain")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("onnxpipe_requests_total", (("endpoint", "/predict"), ("status", "200")))] == before + 1
    for family in (
        "onnxpipe_requests_total",
        "onnxpipe_request_duration_seconds_bucket",
        "onnxpipe_batch_size_bucket",
        "onnxpipe_queue_depth",
        "onnxpipe_input_tokens_total",
        "onnxpipe_batches_total",
    ):
        assert family in text, family
    page = httpx.get(server.url + "/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"] and "/info" in page.text


# -- errors ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "path, body, status, needle",
    [
        ("/predict", b'{"inputs": ', 400, "not valid JSON"),
        ("/predict", b"\xff\xfe", 400, "not valid JSON"),
        # Nesting past 32 levels (5,000 raised RecursionError: a 500), on every endpoint that reads JSON.
        ("/predict", b'{"inputs": ' + b"[" * 5000 + b"]" * 5000 + b"}", 400, "nested deeper than 32"),
        ("/tokenize", b'{"inputs": ' + b"[" * 33 + b"]" * 33 + b"}", 400, "nested deeper than 32"),
        ("/v1/embeddings", b'{"input": ' + b"{" * 40, 400, "not valid JSON"),
        # A 5,000-digit number (CPython's int() limit: was a 422 naming sys.set_int_max_str_digits), NaN.
        ("/predict", b'{"inputs": ' + b"1" * 5000 + b"}", 400, "a number longer than 4300 digits"),
        ("/embed", b'{"inputs": "x", "truncate": ' + b"9" * 4301 + b"}", 400, "not valid JSON"),
        ("/predict", b'{"inputs": "x", "truncate": NaN}', 400, "NaN is not a JSON value"),
        ("/predict", json.dumps({"inputs": ["x"] * 9}).encode(), 413, "at most 8"),
        ("/predict", json.dumps({"inputs": "x" * 30000}).encode(), 413, "--payload-limit"),
        ("/predict", json.dumps({"inputs": 3}).encode(), 422, "string or a list"),
        ("/predict", json.dumps({"inputs": [None]}).encode(), 422, "input 0 is NoneType"),
        ("/predict", json.dumps({"inputs": []}).encode(), 422, "empty list"),
        ("/predict", json.dumps({"text": "x"}).encode(), 422, "unknown fields ['text']"),
        ("/predict", json.dumps(["x"]).encode(), 422, "JSON object"),
        ("/predict", json.dumps({"inputs": "x", "truncate": "yes"}).encode(), 422, "truncate='yes'"),
        ("/predict", json.dumps({"inputs": "x", "model": "nope"}).encode(), 422, "['other', 'sst2']"),
        ("/predict", json.dumps({"inputs": " ".join(["word"] * 100)}).encode(), 422, "at most 64"),
        ("/embed", json.dumps({"inputs": "x", "normalize": 1}).encode(), 422, "normalize=1"),
        # /tokenize answers at most the served maximum (64 here) per input: was every token of the text.
        ("/tokenize", json.dumps({"inputs": "word " * 3000}).encode(), 422, "more than 64 tokens, the most"),
        ("/tokenize", json.dumps({"inputs": ["x", "word " * 65]}).encode(), 422, "input 1 has more than 64"),
        ("/tokenize", json.dumps({"inputs": "x", "truncate": "no"}).encode(), 422, "truncate='no'"),
        ("/v1/embeddings", json.dumps({"input": "x", "encoding_format": "hex"}).encode(), 422, "'float' or 'base64'"),
        ("/fill-mask", json.dumps({"inputs": "a [MASK]"}).encode(), 404, "no served model does fill-mask"),
        ("/nowhere", b"{}", 404, "Not Found"),
    ],
)
def test_error_statuses(server, path, body, status, needle):
    r = httpx.post(server.url + path, content=body, headers={"content-type": "application/json"}, timeout=60)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert needle in (error["message"] if path.startswith("/v1/") else error)  # OpenAI's shape on /v1/*
    assert r.json()["error_type"]


def test_brackets_inside_strings_are_not_nesting(server, classifier):
    text = "[[{" * 12 + " fine"  # 36 brackets: more than 32, all inside one string
    r = server.post("/predict", {"inputs": [text]})
    assert r.status_code == 200, r.text
    assert r.json() == [classifier(text, top_k=None)]


def test_a_model_endpoint_answers_other_methods_405(server):
    r = httpx.get(server.url + "/predict")
    assert r.status_code == 405 and r.headers["allow"] == "POST"
    assert "takes POST" in r.json()["error"]


def test_truncate_per_request(server, short_classifier):
    text = " ".join(["great"] * 100)
    assert server.post("/predict", {"inputs": text}).status_code == 422
    r = server.post("/predict", {"inputs": text, "truncate": True})
    assert r.status_code == 200, r.text
    assert r.json() == short_classifier(text, top_k=None, truncation=True)


# -- batching -------------------------------------------------------------------------------------------------
def _ask_together(server, texts):
    barrier = threading.Barrier(len(texts))

    def ask(text):
        with httpx.Client(timeout=60) as client:
            barrier.wait(30)
            return client.post(server.url + "/predict", json={"inputs": text, "model": "sst2"})

    with ThreadPoolExecutor(len(texts)) as pool:
        responses = list(pool.map(ask, texts))
    assert all(r.status_code == 200 for r in responses)
    return responses


CONCURRENT = [f"{w} movie number {i}." for i, w in enumerate(["great", "awful", "fine", "terrible"] * 8)]


def test_concurrent_requests_get_exactly_their_lone_answer(server, short_classifier):
    # The int8 folder runs each input alone (execution "auto"), so a request's scores do not depend on the
    # requests queued with it: equal to the last digit to the text scored by itself.
    for text, r in zip(CONCURRENT, _ask_together(server, CONCURRENT)):
        assert r.json() == short_classifier(text, top_k=None), text


@pytest.fixture(scope="module")
def batched_server():
    # --expose-paths: here rather than on a server of its own (test_info_shows_paths_only_when_asked).
    with Server(f"sst2={SST2}", "--max-input-length", "64", "--execution", "batched", "--expose-paths") as s:
        yield s


def test_info_shows_paths_only_when_asked(batched_server):
    model = httpx.get(batched_server.url + "/info").json()["models"][0]
    assert model["folder"] == SST2 and model["validation_data"]["file"] == "../shared/data/sst2/dev.tsv"


def test_batched_execution_shares_model_calls_across_clients(batched_server, short_classifier):
    before = batched_server.metric("onnxpipe_batches_total", model="sst2")
    responses = _ask_together(batched_server, CONCURRENT)
    calls = batched_server.metric("onnxpipe_batches_total", model="sst2") - before
    assert 1 <= calls < len(CONCURRENT), f"{len(CONCURRENT)} requests took {calls} model calls"
    for text, r in zip(CONCURRENT, responses):  # each client got the result for its own text
        want = short_classifier(text, top_k=None)
        assert [x["label"] for x in r.json()] == [x["label"] for x in want], text
        # Not to the last digit: in padded batches dynamic int8 quantizes a batch's activations with one scale,
        # so a score moves with its batch-mates (what execution "auto" avoids). A routing mix-up moves it more.
        np.testing.assert_allclose([x["score"] for x in r.json()], [x["score"] for x in want], atol=0.1)


# -- overload and shutdown (their own servers) -----------------------------------------------------------------
def _busy_body(n: int = 32) -> dict:
    return {"inputs": [LONG] * n, "truncate": True}


def test_overload_answers_429_and_keeps_serving_the_admitted():
    # The admitted request is held at the model (the hooks' gate) until the refusal is in: certain, not hoped for.
    with Server(SST2, "--max-concurrent-requests", "1", hooks=True) as s:
        with ThreadPoolExecutor(1) as pool:
            busy = pool.submit(s.post, "/predict", {"inputs": ["busy"] * 4})
            assert s.wait_output("onnxpipe-test: at the gate")
            refused = s.post("/predict", {"inputs": "one more"})
            assert refused.status_code == 429, refused.text
            assert "--max-concurrent-requests=1" in refused.json()["error"]
            s.release(2)
            admitted = busy.result(120)
        assert admitted.status_code == 200 and len(admitted.json()) == 4
        assert s.post("/predict", {"inputs": "one more"}).status_code == 200
        assert s.metric("onnxpipe_requests_rejected_total", reason="concurrency") == 1


def _refused_without_a_body(port: int) -> bytes:
    """The status line for a POST that announces a body and never sends it (a server waiting for it would hang)."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 5000\r\n\r\n"
        )
        head = b""
        while b"\r\n" not in head:
            chunk = sock.recv(4096)
            if not chunk:
                break
            head += chunk
    return head.split(b"\r\n", 1)[0]


def test_429_comes_at_once_before_the_body_the_tokenizer_or_the_model():
    # The admitted request is held at the model until the test releases it, so each refusal that comes back
    # meanwhile waited for no in-flight work; none of them was tokenized.
    with Server(SST2, "--max-concurrent-requests", "1", hooks=True) as s:
        with ThreadPoolExecutor(1) as pool:
            busy = pool.submit(s.post, "/predict", {"inputs": ["busy"] * 4})
            assert s.wait_output("onnxpipe-test: at the gate")
            tokens = s.metric("onnxpipe_input_tokens_total", model="minilm-sst2")
            assert _refused_without_a_body(s.port).startswith(b"HTTP/1.1 429 ")
            with httpx.Client(timeout=60) as client:
                for _ in range(5):
                    r = client.post(s.url + "/predict", json={"inputs": "one more"})
                    assert r.status_code == 429 and r.json()["error_type"] == "Overloaded"
            assert not busy.done(), "the refusals waited for the admitted request"
            s.release()
            admitted = busy.result(300)
        assert admitted.status_code == 200 and len(admitted.json()) == 4
        assert s.metric("onnxpipe_input_tokens_total", model="minilm-sst2") == tokens  # no refusal was tokenized


def _exchange(port: int, raw: bytes, responses: int) -> tuple[list[bytes], bool]:
    """Send ``raw`` on one connection; read ``responses`` responses (status lines) and whether it then closed."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(raw)
        data, statuses = b"", []
        while len(statuses) < responses:
            head_end = data.find(b"\r\n\r\n")
            if head_end < 0:
                chunk = sock.recv(65536)
                assert chunk, f"closed after {statuses}"
                data += chunk
                continue
            head = data[:head_end].decode("latin-1").split("\r\n")
            length = next(int(h.split(":")[1]) for h in head if h.lower().startswith("content-length:"))
            while len(data) < head_end + 4 + length:
                data += sock.recv(65536)
            statuses.append(head[0].encode())
            data = data[head_end + 4 + length :]
        sock.settimeout(2)
        try:
            closed = sock.recv(1) == b""
        except TimeoutError:
            closed = False
    return statuses, closed


def test_refusals_written_by_the_protocol_keep_the_connection_and_its_pipelined_requests():
    post = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 19\r\n%s\r\n"
    body = b'{"inputs": "hello"}'
    # The one admitted request waits at the model (the hooks' gate) until released: the server is certainly at
    # its limit for every refusal below (a request left to run could finish first on a loaded machine).
    with Server(SST2, "--max-concurrent-requests", "1", hooks=True) as s:
        with ThreadPoolExecutor(1) as pool:
            busy = pool.submit(s.post, "/predict", {"inputs": "busy"}, 300)
            assert s.wait_output("onnxpipe-test: at the gate")
            # Two refused POSTs (their bodies discarded) and a GET, pipelined on one connection: in order, open.
            raw = post % b"" + body + post % b"" + body + b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
            statuses, closed = _exchange(s.port, raw, 3)
            assert [x.split(b" ")[1] for x in statuses] == [b"429", b"429", b"200"] and not closed
            # A client that asked to close gets its 429, then the close.
            statuses, closed = _exchange(s.port, post % b"Connection: close\r\n" + body, 1)
            assert statuses[0].startswith(b"HTTP/1.1 429 ") and closed
            s.release(2)
            assert busy.result(300).status_code == 200
        assert s.metric("onnxpipe_requests_rejected_total", reason="concurrency") == 3
        assert s.metric("onnxpipe_requests_in_flight") == 0
        assert s.post("/predict", {"inputs": "hello"}).status_code == 200


# -- slow clients: header and body timeouts (short, set by flag) ------------------------------------------------
HEAD = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"


def _trickle_until_answered(sock: socket.socket, data: bytes, rounds: int = 150) -> bytes:
    """Send ``data`` a byte at a time, waiting up to 0.2 s on the socket between bytes, until the server
    answers or closes; return everything it sent (b"" if it only closed). A server that never answers fails
    the test after ``rounds`` bytes (30 s)."""
    for i in range(rounds):
        if i < len(data):
            sock.sendall(data[i : i + 1])
        sock.settimeout(0.2)
        try:
            first = sock.recv(65536)
        except TimeoutError:
            continue
        sock.settimeout(30)
        got = first
        while first:  # the rest, up to the close: a FIN, never a reset (the server lingers over our bytes)
            first = sock.recv(65536)
            got += first
        return got
    raise AssertionError(f"no answer after {rounds} rounds of 0.2 s")


def _json_408(answer: bytes, needle: str) -> None:
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert b"connection: close" in head.lower()
    error = json.loads(body)
    assert error["error_type"] == "RequestTimeout" and needle in error["error"], error


def test_stalled_uploads_get_408_and_free_their_admission_slots():
    """Two clients hold both admission slots by trickling their bodies; past --body-timeout each gets a JSON
    408 and the connection closes, and the next client is served (they held the slots for as long as they
    trickled: 40 s and more)."""
    with Server(SST2, "--max-concurrent-requests", "2", "--body-timeout", "1", "--header-timeout", "30") as s:
        socks = [socket.create_connection(("127.0.0.1", s.port), timeout=30) for _ in range(2)]
        try:
            for sock in socks:
                sock.sendall(HEAD + b"{")
            for sock in socks:
                _json_408(_trickle_until_answered(sock, b'"inputs": "' + b"x" * 90), "--body-timeout")
        finally:
            for sock in socks:
                sock.close()
        assert wait_until(lambda: s.metric("onnxpipe_requests_in_flight") == 0)
        assert s.post("/predict", {"inputs": "served"}).status_code == 200
        assert s.metric("onnxpipe_requests_total", endpoint="/predict", status="408") == 2


def test_slow_headers_get_408_and_silent_connections_are_closed():
    with Server(SST2, "--header-timeout", "1") as s:
        with socket.create_connection(("127.0.0.1", s.port), timeout=30) as slow:
            _json_408(_trickle_until_answered(slow, HEAD), "--header-timeout")
        with socket.create_connection(("127.0.0.1", s.port), timeout=30) as silent:
            assert silent.recv(1) == b""  # closed without a word, as an idle keep-alive connection
        # A request that sends its headers at once is untouched, on a connection then kept alive.
        with httpx.Client(timeout=30) as client:
            assert client.post(s.url + "/predict", json={"inputs": "fine"}).status_code == 200
            assert client.get(s.url + "/health").status_code == 200


@pytest.mark.parametrize(
    "start, more, status, error_type",
    [
        # httptools has no limit on a request's head: a 77 MB header within the header timeout cost 130 MB.
        (b"POST /predict HTTP/1.1\r\nHost: x\r\nX-Big: ", b"a" * 65536, b"431", "HeadersTooLarge"),
        (b"NOT HTTP\r\n", b"garbage " * 8192, b"400", "BadRequest"),
    ],
    ids=["431-head-too-large", "400-not-http"],
)
def test_refused_heads_get_their_whole_answer_while_the_client_still_sends(server, start, more, status, error_type):
    """The client is still sending when the server refuses its head and closes: the server lingers, reading and
    dropping what comes, so the answer and then the close (a FIN) arrive whole, never cut by a reset."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(start)
        for _ in range(64):  # 4 MB at most, in 64 KiB writes, stopping as soon as the server answers
            sock.sendall(more)
            if select.select([sock], [], [], 0.05)[0]:
                break
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 " + status + b" ") and b"connection: close" in head.lower(), answer[:300]
    assert json.loads(body)["error_type"] == error_type
    assert server.post("/predict", {"inputs": "fine"}).status_code == 200
    with httpx.Client(timeout=30) as client:  # a head just under the limit passes
        r = client.post(server.url + "/predict", json={"inputs": "x"}, headers={"x-pad": "a" * 60000})
        assert r.status_code == 200


@pytest.mark.parametrize(
    "chunk, every, lingers",  # lingers: the share of LINGER_SECONDS it is let send at least (a trickle: all)
    [(b"x", 0.05, 0.5), (b"x" * 65536, 0.0, 0.0)],
    ids=["trickle", "flood"],
)
def test_a_client_that_sends_on_after_its_408_is_cut_off_within_the_linger_bound(chunk, every, lingers):
    """After the 408 and the FIN a client that sends on, a byte at a time or as fast as it can, is cut off
    (a reset) past LINGER_SECONDS or LINGER_BYTES; while it lingers it holds no admission slot (the one there
    is serves another client) and the event loop serves the others."""
    from onnxpipe._serve._protocol import LINGER_SECONDS

    with Server(SST2, "--max-concurrent-requests", "1", "--body-timeout", "1", "--header-timeout", "30") as s:
        with socket.create_connection(("127.0.0.1", s.port), timeout=30) as sock:
            sock.sendall(HEAD + b"{")
            _json_408(_trickle_until_answered(sock, b'"inputs": "'), "--body-timeout")
            answered = time.monotonic()
            assert s.post("/predict", {"inputs": "served"}).status_code == 200
            # Waits for the reset alone: POLLHUP and POLLERR are reported unasked, and the FIN keeps it readable.
            reset = select.poll()
            reset.register(sock, 0)
            while not reset.poll(every * 1000):
                assert time.monotonic() - answered < LINGER_SECONDS + 5, "still open past the linger bound"
                try:
                    sock.sendall(chunk)
                except (BrokenPipeError, ConnectionResetError):
                    break
        assert lingers * LINGER_SECONDS < time.monotonic() - answered < LINGER_SECONDS + 5
        assert s.metric("onnxpipe_requests_total", endpoint="/predict", status="408") == 1


def test_512_stalled_uploads_do_not_lock_the_default_limit_out():
    """With the default --max-concurrent-requests (512), 512 requests that never send their body each get a
    408 and leave the server serving (without the body timeout they held every slot for good). 512 idle
    connections that never send a byte do not count at all."""
    with Server(SST2, "--body-timeout", "2", "--header-timeout", "60") as s:
        idle = [socket.create_connection(("127.0.0.1", s.port), timeout=60) for _ in range(512)]
        stalled = [socket.create_connection(("127.0.0.1", s.port), timeout=60) for _ in range(512)]
        try:
            assert s.post("/predict", {"inputs": "while idle"}).status_code == 200
            for sock in stalled:
                sock.sendall(HEAD)
            for sock in stalled:
                answer = b""
                while chunk := sock.recv(65536):
                    answer += chunk
                _json_408(answer, "--body-timeout")
            assert s.post("/predict", {"inputs": "after"}).status_code == 200
        finally:
            for sock in idle + stalled:
                sock.close()
        assert s.metric("onnxpipe_requests_total", endpoint="/predict", status="408") == 512


@pytest.fixture
def guard():
    from onnxpipe._serve import Limits, ModelSet, create_app, load_model

    return create_app(ModelSet([load_model("sst2", SST2)]), Limits(max_concurrent_requests=2))


def _scope(**extra):
    return {"type": "http", "method": "POST", "path": "/predict", "headers": [], **extra}


def test_admission_counts_each_request_as_its_headers_complete(guard):
    """A burst parsed in one read: each request is counted as the protocol sees it, before any task runs."""
    from onnxpipe._serve._app import ADMITTED
    from onnxpipe._serve._protocol import refusing_protocol

    assert refusing_protocol(guard) is not None, "uvicorn lost HttpToolsProtocol._start_asgi_task: see _protocol.py"
    scopes = [_scope() for _ in range(3)]
    answers = [guard.admit(sc) for sc in scopes]
    assert answers[:2] == [None, None] and answers[2][0].startswith(b"HTTP/1.1 429 ")
    assert json.loads(answers[2][1].split(b"\r\n\r\n", 1)[1])["error_type"] == "Overloaded"
    assert [ADMITTED in sc for sc in scopes] == [True, True, False] and guard.in_flight == 2


def test_without_the_protocol_the_guard_admits_and_refuses_itself(guard):
    """On h11 (or a uvicorn without the hook) the ASGI call does the admission; an admitted one is released."""
    import asyncio

    sent = []

    async def send(message):
        sent.append(message)

    async def no_body():
        raise AssertionError("a refusal reads no body")

    guard.in_flight = 2
    asyncio.run(guard(_scope(), no_body, send))
    assert sent[0]["status"] == 429 and json.loads(sent[1]["body"])["error_type"] == "Overloaded"
    guard.in_flight = 1
    sent.clear()
    asyncio.run(guard(_scope(headers=[(b"content-length", b"99999999")]), no_body, send))
    assert sent[0]["status"] == 413 and guard.in_flight == 1  # admitted, answered, released


@pytest.mark.parametrize("flags, logged", [((), True), (("--log-level", "critical"), False)])
def test_a_500_is_logged_with_its_traceback_on_stderr(flags, logged):
    """The 500's body says "see the server log": the log must have it (it had only a NullHandler)."""
    with Server(SST2, *flags, hooks=True) as s:
        r = s.post("/tokenize", {"inputs": "__boom__"})
        assert r.status_code == 500 and r.json()["error_type"] == "InternalError"
        assert "see the server log" in r.json()["error"]
        assert s.post("/tokenize", {"inputs": "after"}).status_code == 200  # the server goes on
        s.stop()
        out = s.output()
    assert ("POST /tokenize: unexpected error" in out and "Traceback" in out) == logged, out[-2000:]
    assert ("RuntimeError: a bug planted by the test" in out) == logged


def test_sigterm_finishes_requests_in_flight_and_exits_0():
    # A long grace period: four requests of four ~512-token inputs take seconds on a loaded 2-core machine.
    s = Server(SST2, "--graceful-timeout", "300")
    try:
        with ThreadPoolExecutor(4) as pool:
            futures = [pool.submit(s.post, "/predict", _busy_body(4), 300) for _ in range(4)]
            assert wait_until(lambda: s.metric("onnxpipe_requests_in_flight") >= 4)
            s.proc.send_signal(15)
            responses = [f.result(300) for f in futures]
        assert [r.status_code for r in responses] == [200] * 4
        assert all(len(r.json()) == 4 for r in responses)
        assert s.proc.wait(60) == 0
        with pytest.raises(httpx.TransportError):
            httpx.get(s.url + "/health", timeout=2)
    finally:
        s.stop()


def test_sigterm_past_the_graceful_timeout_answers_503_and_drops_the_abandoned_work():
    """Requests still waiting when --graceful-timeout runs out get a JSON 503 (were: uvicorn's plain-text 500
    and a CancelledError traceback each), and the inference thread computes none of their queued work (it
    finished all of it first: the exit took 14.5 s for a 2 s grace)."""
    s = Server(SST2, "--graceful-timeout", "1", "--execution", "batched", hooks=True)
    try:
        with ThreadPoolExecutor(3) as pool:
            futures = [pool.submit(s.post, "/predict", {"inputs": [f"text {i}", "more"]}, 120) for i in range(3)]
            # The first request waits at the gate on the model; the other two are queued behind it.
            assert s.wait_output("onnxpipe-test: at the gate")
            assert wait_until(lambda: s.metric("onnxpipe_queue_depth", model="minilm-sst2") == 6)
            s.proc.send_signal(signal.SIGTERM)
            responses = [f.result(120) for f in futures]
        assert [r.status_code for r in responses] == [503] * 3, [r.text for r in responses]
        assert all(r.json()["error_type"] == "Unavailable" and "shutting down" in r.json()["error"] for r in responses)
        assert all(r.headers["connection"] == "close" for r in responses)
        s.release(3)  # the gate opens: the round the thread holds is all abandoned, as is the queue
        assert s.proc.wait(60) == 0
        s.stop()
        out = s.output()
        assert "onnxpipe-test: model call" not in out, out[-3000:]
        assert "Traceback" not in out and "CancelledError" not in out, out[-3000:]
    finally:
        s.stop()


def test_a_client_that_goes_away_leaves_no_work_for_the_model():
    """A request whose client disconnected before its answer is stopped and its queued work dropped (uvicorn
    let it run: the model computed it for nobody, holding its admission slot meanwhile)."""
    with Server(SST2, "--execution", "batched", hooks=True) as s, ThreadPoolExecutor(1) as pool:
        kept = pool.submit(s.post, "/predict", {"inputs": "kept"}, 120)
        assert s.wait_output("onnxpipe-test: at the gate")  # the thread holds the first round
        body = b'{"inputs": ["gone", "away"]}'
        with socket.create_connection(("127.0.0.1", s.port), timeout=30) as gone:
            gone.sendall(HEAD.replace(b"100", b"%d" % len(body)) + body)
            assert wait_until(lambda: s.metric("onnxpipe_queue_depth", model="minilm-sst2") == 3)
        assert wait_until(lambda: s.metric("onnxpipe_requests_in_flight") == 1)  # its request was stopped
        s.release(2)
        assert kept.result(120).status_code == 200
        assert wait_until(lambda: s.metric("onnxpipe_queue_depth", model="minilm-sst2") == 0)
        assert s.output().count("onnxpipe-test: model call") == 1  # the kept request's batch only
        assert "Traceback" not in s.output()


def test_a_crash_in_the_inference_thread_fails_its_request_and_the_thread_goes_on():
    with Server(SST2, hooks=True) as s:
        s.release(10)  # no gate
        r = s.post("/predict", {"inputs": "crash"}, timeout=30)
        assert r.status_code == 500 and r.json()["error_type"] == "InternalError", r.text
        assert s.post("/predict", {"inputs": "fine"}, timeout=30).status_code == 200
        assert s.metric("onnxpipe_queue_depth", model="minilm-sst2") == 0
        assert "RuntimeError: the inference thread crashed" in s.output()


def test_serve_freezes_what_it_loaded_before_it_serves(monkeypatch):
    """A full collection walked the loaded models' objects again each time (~7 ms, 14 ms inside a burst)."""
    import gc

    import uvicorn

    from onnxpipe._serve import serve

    seen = {}

    def run(self, sockets=None):  # in place of serving: what the collector sees when the first request could arrive
        seen["frozen"] = gc.get_freeze_count()
        self.started = True

    monkeypatch.setattr(uvicorn.Server, "run", run)
    gc.unfreeze()
    try:
        assert serve([SST2], port=0) == 0
    finally:
        gc.unfreeze()  # the test process's objects go back to the collector
    assert seen["frozen"] > 10_000


def test_serve_shortens_the_gil_switch_interval_while_it_serves_only(monkeypatch):
    """Workers back from the model waited up to Python's 5 ms for the GIL the event loop kept retaking."""
    import uvicorn

    from onnxpipe._serve import SWITCH_INTERVAL_S, serve

    seen = {}

    def run(self, sockets=None):
        seen["interval"] = sys.getswitchinterval()
        self.started = True

    monkeypatch.setattr(uvicorn.Server, "run", run)
    before = sys.getswitchinterval()
    assert serve([SST2], port=0) == 0
    assert seen["interval"] == pytest.approx(SWITCH_INTERVAL_S) and SWITCH_INTERVAL_S < before
    assert sys.getswitchinterval() == before


# -- the CLI without the extra -------------------------------------------------------------------------------
def test_serve_without_the_extra_names_the_pip_line(monkeypatch, capsys):
    import importlib.util as util

    from onnxpipe._cli import main

    real = util.find_spec
    monkeypatch.setattr(
        util, "find_spec", lambda name, *a: None if name in ("starlette", "uvicorn") else real(name, *a)
    )
    monkeypatch.setitem(sys.modules, "onnxpipe._serve", None)  # were the check missed, the import fails: no server
    assert main(["serve", "minilm-sst2"]) == 2
    err = capsys.readouterr().err
    assert "pip install 'onnxpipe[serve]'" in err and "starlette, uvicorn" in err


def test_http_stack_prefers_httptools_and_uvloop_and_says_when_they_are_missing(monkeypatch, caplog):
    from onnxpipe._serve import http_stack

    monkeypatch.setitem(sys.modules, "httptools", None)  # None in sys.modules: the import fails
    monkeypatch.setitem(sys.modules, "uvloop", None)
    with caplog.at_level(logging.INFO, logger="onnxpipe.serve"):
        assert http_stack() == ("h11", "asyncio")
    assert "pip install httptools uvloop" in caplog.text
    monkeypatch.undo()
    pytest.importorskip("httptools")
    pytest.importorskip("uvloop")
    assert http_stack() == ("httptools", "uvloop")


# -- tasks on tiny exports (need the export extra to build them) ------------------------------------------------
TASK_CASES = [
    ("fill-mask", "/fill-mask", "fm", "Paris is the [MASK] of France.", {"top_k": 3}),
    (
        "token-classification",
        "/ner",
        "ner",
        "Hugging Face is based in New York City.",
        {"aggregation_strategy": "simple"},
    ),
    (
        "question-answering",
        "/question-answering",
        "qa",
        {"question": "Where is it based?", "context": "Hugging Face is based in New York City."},
        {"top_k": 2},
    ),
    (
        "zero-shot-classification",
        "/zero-shot-classification",
        "zs",
        "I want to go to the beach.",
        {"candidate_labels": ["travel", "cooking", "dancing"]},
    ),
]


@pytest.fixture(scope="module")
def task_server(tiny_export):
    folders = {name: str(tiny_export("bert", task)) for task, _, name, _, _ in TASK_CASES}
    with Server(*[f"{name}={folder}" for name, folder in folders.items()]) as s:
        yield s, folders


@pytest.mark.torch
@pytest.mark.parametrize("task, path, name, inputs, params", TASK_CASES, ids=[c[0] for c in TASK_CASES])
def test_task_endpoints_equal_the_pipeline(task_server, task, path, name, inputs, params):
    s, folders = task_server
    pipe = pipeline(task, model=folders[name])
    want = pipe(inputs, **params)
    r = s.post(path, {"inputs": inputs, "parameters": params, "model": name})
    assert r.status_code == 200, r.text
    assert r.json() == json.loads(json.dumps(want, default=float))
    r = s.post(path, {"inputs": [inputs, inputs], "parameters": params})  # no model: the first serving the task
    assert r.status_code == 200 and len(r.json()) == 2
    bad = s.post(path, {"inputs": inputs, "parameters": {"no_such_argument": 1}})
    assert bad.status_code == 422 and "no_such_argument" in bad.json()["error"]


# -- the load test cannot rot: a tiny run of bench/serve_load.py ---------------------------------------------------
def test_load_test_smoke(tmp_path):
    import subprocess

    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "serve_load.py"),
            "--smoke",
            "--engines",
            "onnxpipe-serve,onnxpipe-serve-batched,onnxpipe-unbatched",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "serve_load.json").read_text())
    assert [(r["engine"], r["clients"]) for r in report["levels"]] == [
        ("onnxpipe-serve", 2),
        ("onnxpipe-serve-batched", 2),
        ("onnxpipe-unbatched", 2),
    ]
    assert all(r["errors"] == 0 and r["ok"] == 20 for r in report["levels"])
    assert report["overload"]["refused_429"] >= 1 and report["overload"]["other"] == {}
    assert report["machine"]["cores"] >= 1 and report["commit"]
    assert "| onnxpipe-serve | 2 |" in (tmp_path / "serve_load.md").read_text()


def test_overhead_bench_smoke(tmp_path):
    import subprocess

    argv = ["--smoke", "--stacks", "h11+asyncio", "--out", str(tmp_path)]
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "serve_overhead.py"), *argv],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "serve_overhead.json").read_text())
    assert [(r["stack"], r["clients"]) for r in report["rows"]] == [("h11+asyncio", 2)]
    assert report["rows"][0]["loop_cpu_ms"] >= 0 and report["in_process"]["process_cpu_ms"] > 0  # ticks: may be 0
    assert report["refusals"][0]["refused"] >= 1 and report["refusals"][0]["other"] == {}
    assert report["provenance"]["argv"] == argv
    assert "| this | h11+asyncio | 2 |" in (tmp_path / "serve_overhead.md").read_text()
