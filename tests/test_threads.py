"""Shared use: one pipeline across threads and across fork, and no silent provider fallback.

Dynamic int8 quantizes activations per batch, so a text's scores depend on what it was batched with. Each
concurrent call is therefore compared with the *same call* run sequentially, and must be identical.
Runs on the embedded default model; no torch needed.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import threading
import time

import numpy as np
import pytest
from onnxruntime.capi import onnxruntime_pybind11_state as C

from onnxpipe import pipeline
from onnxpipe._model import OnnxModel
from onnxpipe._session import create_session
from onnxpipe.errors import InferenceError, ModelLoadError

THREADS, CALLS = 8, 200
TIMEOUT_S = 300  # far above the expected time; reaching it means a deadlock


@pytest.fixture(scope="module")
def classifier():
    return pipeline("sentiment-analysis")


WORDS = "the a film movie plot acting was is great awful boring lovely not very really quite so".split()


def _calls(seed: int = 0) -> list[tuple]:
    """THREADS x CALLS calls: classification (batch sizes 1-6, str or list, pairs, top_k, truncation=False)
    and direct tokenizer calls (several max_length values, i.e. several frozen tokenizer copies)."""
    rng = random.Random(seed)

    def text() -> str:
        r = rng.random()
        n = rng.randint(0, 8) if r < 0.98 else rng.randint(20, 40) if r < 0.998 else 600  # 600: truncated
        return " ".join(rng.choice(WORDS) for _ in range(n))

    calls = []
    for _ in range(THREADS * CALLS):
        kind = rng.choice(["batch", "batch", "batch", "single", "pair", "top_k", "strict", "tokenizer"])
        if kind == "single":
            calls.append(("classify", text(), {}))
        elif kind == "pair":
            calls.append(("classify", [{"text": text(), "text_pair": text()} for _ in range(rng.randint(1, 3))], {}))
        elif kind == "tokenizer":
            calls.append(
                (
                    "tokenize",
                    [text() for _ in range(rng.randint(1, 8))],
                    {"max_length": rng.choice([8, 16, 64, None]), "padding": True, "truncation": True},
                )
            )
        else:
            texts = [text() for _ in range(rng.randint(1, 6))]
            kwargs = {"top_k": None} if kind == "top_k" else {"truncation": False} if kind == "strict" else {}
            if kind == "strict":
                texts = [t[:200] for t in texts]  # short enough to pass without truncation
            calls.append(("classify", texts, kwargs))
    return calls


def _run(classifier, call):
    kind, inputs, kwargs = call
    if kind == "tokenize":
        return {k: np.asarray(v).tolist() for k, v in classifier.tokenizer(inputs, **kwargs).items()}
    return classifier(inputs, **kwargs)


@pytest.fixture(scope="module")
def sequential(classifier):
    calls = _calls()
    start = time.perf_counter()
    results = [_run(classifier, c) for c in calls]
    return calls, results, time.perf_counter() - start


def test_eight_threads_share_one_pipeline_with_identical_results(classifier, sequential, record_property):
    calls, expected, sequential_s = sequential
    results: list = [None] * len(calls)
    failures: list[str] = []
    barrier = threading.Barrier(THREADS)

    def worker(t: int) -> None:
        barrier.wait()
        # interleaved: thread t runs calls t, t+8, t+16, ... so neighbours in time differ in size and kind
        for i in range(t, len(calls), THREADS):
            try:
                results[i] = _run(classifier, calls[i])
            except BaseException as e:  # "Already borrowed" would land here
                failures.append(f"call {i} ({calls[i][0]}): {type(e).__name__}: {e}")

    threads = [threading.Thread(target=worker, args=(t,), daemon=True) for t in range(THREADS)]
    start = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=max(1.0, TIMEOUT_S - (time.perf_counter() - start)))
    threaded_s = time.perf_counter() - start
    assert not any(th.is_alive() for th in threads), f"deadlock: threads still running after {TIMEOUT_S}s"
    assert failures == []
    different = [i for i, (got, want) in enumerate(zip(results, expected)) if got != want]
    assert different == [], f"{len(different)} calls differ from the sequential run, e.g. call {different[:3]}"
    record_property("threads", f"{THREADS}x{CALLS} calls: sequential {sequential_s:.1f}s, threaded {threaded_s:.1f}s")
    print(f"\n{THREADS} threads x {CALLS} calls: sequential {sequential_s:.1f}s, 8 threads {threaded_s:.1f}s")


def _child(classifier, calls, queue) -> None:
    try:
        queue.put(("ok", [_run(classifier, c) for c in calls]))
    except BaseException as e:
        queue.put(("error", f"{type(e).__name__}: {e}"))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_the_pipeline_works_in_a_forked_child(classifier, sequential):
    calls, expected, _ = sequential
    # Use the Rust tokenizer's thread pool in the parent first: a fork after parallel work is the risky case.
    classifier.tokenizer.encode_batch(["warm the tokenizer's thread pool"] * 2_000)
    subset = list(range(0, len(calls), 16))  # 100 calls of every kind
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_child, args=(classifier, [calls[i] for i in subset], queue), daemon=True)
    child.start()
    try:
        status, payload = queue.get(timeout=120)
    finally:
        child.join(timeout=30)
        if child.is_alive():
            child.kill()
    assert status == "ok", payload
    assert payload == [expected[i] for i in subset]
    assert child.exitcode == 0
    assert classifier(["the parent still works"])[0]["label"] in {"NEGATIVE", "POSITIVE"}


class _EPFailingSession:
    """Stands in for onnxruntime's C++ session: every run fails the way a crashed execution provider does."""

    def __init__(self, real):
        self.real, self.calls = real, 0

    def __getattr__(self, name):
        return getattr(self.real, name)

    def run(self, *args, **kwargs):
        self.calls += 1
        raise C.EPFail("simulated execution provider failure")


def test_a_provider_failure_in_run_raises_instead_of_rebuilding_the_session(classifier):
    model = OnnxModel(classifier.model.manifest)  # its own session: the shared one stays intact
    session = model.session
    stub = _EPFailingSession(session._sess)
    session._sess = stub
    feeds = model.feeds(classifier.tokenizer(["text"], return_tensors="np"))
    with pytest.raises(InferenceError, match=r"onnxruntime failed on .* simulated execution provider failure"):
        model.run(feeds, ["logits"])
    assert session._sess is stub and stub.calls == 1  # not rebuilt, not retried
    # The control: with onnxruntime's default (fallback on) the same failure rebuilds the session silently.
    session.enable_fallback()
    model.run(feeds, ["logits"])
    assert session._sess is not stub


def test_a_failure_while_creating_the_session_is_not_retried(classifier, monkeypatch):
    import onnxruntime as ort

    original = ort.InferenceSession._create_inference_session
    attempts = []

    def fail_first(self, providers, *args, **kwargs):
        attempts.append(list(providers or []))
        if len(attempts) == 1:
            raise RuntimeError("simulated provider library failure")
        return original(self, providers, *args, **kwargs)

    monkeypatch.setattr(ort.InferenceSession, "_create_inference_session", fail_first)
    model = classifier.model
    with pytest.raises(ModelLoadError, match="simulated provider library failure"):
        create_session(model.manifest, model.choice)
    assert len(attempts) == 1  # onnxruntime's default would retry on CPUExecutionProvider and succeed
