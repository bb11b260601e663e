"""A text's answer does not depend on the texts it is batched with.

Dynamic int8 scales each matmul's activations by the whole batch tensor, so in padded batches a score moves with
its batch-mates. The runtime therefore runs dynamic-int8 inputs each as its own batch of one, several at once on
a worker pool ("alone" execution); the shipped fixed-scale int8 file runs the same way, there because it is
faster. These tests hold both to the gate: a text scored inside a call of many equals the text scored alone
(max score change <= 1e-3, no label flip; here it is exact).
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from conftest import SHARED  # noqa: F401  (the suite needs ../shared; conftest exits without it)
from onnxpipe import AutoModelForSequenceClassification, pipeline
from onnxpipe._manifest import load_manifest
from onnxpipe._session import SessionChoice, batch_dependent, choose_execution
from onnxpipe.errors import NonFiniteOutputError

ROOT = Path(__file__).resolve().parents[1]
SST2 = ROOT / "models" / "minilm-sst2"
DEV = ROOT.parent / "shared" / "data" / "sst2" / "dev.tsv"


def _dev_texts() -> list[str]:
    lines = DEV.read_text(encoding="utf-8").splitlines()[1:]
    return [line.split("\t", 1)[1] for line in lines]


def _probs(results) -> np.ndarray:
    return np.array([[d["score"] for d in sorted(r, key=lambda d: d["label"])] for r in results])


@pytest.fixture(scope="module")
def dev_texts():
    return _dev_texts()


@pytest.fixture(scope="module")
def sst2_alone():
    return pipeline("text-classification", model=str(SST2))


def test_shipped_sentiment_model_is_invariant_on_sst2_dev(sst2_alone, dev_texts):
    # The invariance gate (module docstring) on the shipped default, the whole dev set: scored in one call vs
    # each sentence alone.
    assert sst2_alone.model.execution == "alone"
    together = _probs(sst2_alone(dev_texts, top_k=None))
    alone = _probs([sst2_alone(t, top_k=None) for t in dev_texts])
    assert np.abs(together - alone).max() <= 1e-3
    assert (together.argmax(1) == alone.argmax(1)).all()
    np.testing.assert_array_equal(together, alone)  # and in fact bit for bit: both are batches of one


def test_padded_batches_of_the_shipped_file_give_the_alone_answers(dev_texts):
    # The shipped int8 file has fixed activation scales, so every consumer that batches it (Optimum,
    # transformers.js, execution="batched" here) gets each text's alone answer; "auto" runs it alone only
    # because that is faster. (A dynamic-scale file moves: test_int8_invariance.py.)
    batched = pipeline("text-classification", model=str(SST2), execution="batched")
    assert batched.model.execution == "batched"
    texts = dev_texts[:256]
    together = _probs(batched(texts, top_k=None))
    alone = _probs([batched(t, top_k=None) for t in texts])
    assert np.abs(together - alone).max() <= 1e-5
    assert (together.argmax(1) == alone.argmax(1)).all()


@pytest.mark.parametrize(
    ("precision", "recipe", "dependent", "expected"),
    [
        ("int8", {"method": "dynamic"}, True, "alone"),
        ("int8", None, True, "alone"),  # folders from before recipes were recorded were dynamic
        ("int8", {"method": "fixed-scales"}, False, "alone"),  # exact in batches, faster alone
        ("int8", {"method": "static"}, False, "batched"),  # fixed activation scales: exact in batches
        ("int8", {"method": "MatMulNBits"}, False, "batched"),  # per-row activation blocks
        ("fp32", None, False, "batched"),
        ("fp16", None, False, "batched"),
    ],
)
def test_auto_execution_follows_the_variant(precision, recipe, dependent, expected):
    from dataclasses import replace

    manifest = load_manifest(SST2, verify=False)
    variant = replace(manifest.variants["int8"], recipe=recipe)
    manifest = replace(manifest, variants={precision: variant})
    assert batch_dependent(manifest, precision) is dependent
    assert choose_execution(manifest, SessionChoice("cpu", precision)) == expected
    for forced in ("alone", "batched"):
        assert choose_execution(manifest, SessionChoice("cpu", precision), forced) == forced


def test_unknown_execution_names_the_valid_ones():
    with pytest.raises(ValueError, match=r"execution='fast'.*'auto', 'alone', 'batched'"):
        pipeline("text-classification", model=str(SST2), execution="fast")


def test_lane_session_answers_equal_the_main_session():
    # Several inputs run on the 1-thread lane session, a lone input on the main one: their answers must agree
    # to the last bit, or "alone" would still depend on how many texts a call carries.
    model = AutoModelForSequenceClassification.from_pretrained(str(SST2), threads=2)
    feeds = model.feeds({"input_ids": [[101, 2023, 3185, 2001, 2307, 999, 102]]})
    main = model.run(feeds, ["logits"])[0]
    model._lanes()
    lane = model.run(feeds, ["logits"], lane=True)[0]
    np.testing.assert_array_equal(main, lane)


def test_map_batches_keeps_order_bounds_work_in_flight_and_stops_on_error():
    model = AutoModelForSequenceClassification.from_pretrained(str(SST2), threads=2)
    assert model.execution == "alone"
    active, peak, lock = [0], [0], threading.Lock()
    started = []

    def work(i, lane):
        assert lane
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
            started.append(i)
        try:
            if i == 20:
                raise RuntimeError("row 20")
            return i
        finally:
            with lock:
                active[0] -= 1

    out = model.map_batches(work, range(100))
    assert [next(out) for _ in range(20)] == list(range(20))
    with pytest.raises(RuntimeError, match="row 20"):
        next(out)
    out.close()
    assert peak[0] <= 2
    assert max(started) < 20 + 2 * model.threads + 1  # nothing far beyond the failure was started


def test_a_single_input_and_one_thread_never_start_the_pool():
    model = AutoModelForSequenceClassification.from_pretrained(str(SST2), threads=1)
    assert list(model.map_batches(lambda i, lane: (i, lane), range(3))) == [(0, False), (1, False), (2, False)]
    two = AutoModelForSequenceClassification.from_pretrained(str(SST2), threads=2)
    assert list(two.map_batches(lambda i, lane: (i, lane), [7])) == [(7, False)]
    assert two._pool is None


@pytest.mark.parametrize("threads, lane", [(1, False), (2, True)])
def test_on_lane_runs_every_item_on_the_calling_thread(threads, lane):
    """A server's workers call the model at once, each on its own core: on_lane runs their items on the
    calling thread, on the 1-thread session where the model has another (never the pool)."""
    model = AutoModelForSequenceClassification.from_pretrained(str(SST2), threads=threads)
    caller = threading.get_ident()
    ran = list(model.map_batches(lambda i, on: (i, on, threading.get_ident() == caller), range(3), on_lane=True))
    assert ran == [(0, lane, True), (1, lane, True), (2, lane, True)]
    assert model._pool is None and (model._lane_session is not None) == lane


def test_non_finite_rows_name_the_callers_input_in_alone_execution(sst2_alone, monkeypatch):
    # A row that computes NaN is reported by its input index, also when it ran on a worker.
    real = sst2_alone.model.run

    def run(feeds, names, lane=False):
        if feeds["input_ids"].shape[1] == 7:  # the third text below, alone, is 7 tokens long: its row 0 "is NaN"
            raise sst2_alone.model.non_finite_error("logits", [0])
        return real(feeds, names, lane)

    monkeypatch.setattr(sst2_alone.model, "run", run)
    texts = ["good", "bad film", "a perfectly ordinary sentence here", "fine"]
    assert [len(e.ids) for e in sst2_alone.tokenizer.encode_batch(texts)] == [3, 4, 7, 3]
    with pytest.raises(NonFiniteOutputError, match="input 2"):
        sst2_alone(texts)


@pytest.mark.torch
@pytest.mark.parametrize(
    ("head", "args", "kwargs"),
    [
        ("text-classification", (["good", "a much longer sentence about the film", "bad"],), {"top_k": None}),
        ("token-classification", (["My name is Wolfgang.", "Berlin is big and very old indeed"],), {}),
        ("fill-mask", (["The film was [MASK].", "Hello [MASK], hello again and again!"],), {"top_k": 3}),
        (
            "question-answering",
            (
                [
                    {"question": "Who?", "context": "Eiffel built it."},
                    {"question": "Where?", "context": "In Paris, France."},
                ],
            ),
            {},
        ),
        ("zero-shot-classification", (["a match", "a long speech in parliament"], ["sports", "politics"]), {}),
        ("feature-extraction", (["short", "a longer text with more tokens"],), {}),
    ],
)
def test_every_task_answers_each_input_as_if_alone(tiny_export, head, args, kwargs):
    folder = tiny_export("bert", head)
    task = head
    pipe = pipeline(task, model=str(folder), precision="int8")
    assert pipe.model.execution == "alone"
    together = pipe(*args, **kwargs)
    if head == "zero-shot-classification":
        one = [pipe(t, args[1], **kwargs) for t in args[0]]
    else:
        one = [pipe(t, **kwargs) for t in args[0]]
    assert repr(together) == repr(one)  # equal to the last digit, nested lists and arrays included
