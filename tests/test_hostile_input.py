"""Hostile input: every kind of text gets a prediction or a documented error, never a crash (the policy:
docs/reliability.md, "What each kind of input does").

Runs on the embedded default model (models/minilm-sst2, int8), so it needs no torch. Table-driven cases,
hypothesis properties over random Unicode and lengths, a 20,000-input stream measured for memory, and the
CLI's streaming. The terminal summary says how many hostile cases ran.
"""

from __future__ import annotations

import collections
import io
import json
import math
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from onnxpipe import AutoModelForSequenceClassification, pipeline
from onnxpipe._cli import main as cli_main
from onnxpipe._inputs import clean_text
from onnxpipe.errors import InputTooLongError

# -- the hostile-case counter, reported at the end of the run -----------------------------------------------
COUNTS: collections.Counter = collections.Counter()
FIGURES: dict[str, str] = {}


class _HostileReport:
    """Prints the counter in pytest's terminal summary (registered once by the fixture below)."""

    def pytest_terminal_summary(self, terminalreporter):
        total = sum(COUNTS.values())
        terminalreporter.write_sep("-", "hostile input")
        parts = ", ".join(f"{k} {v}" for k, v in sorted(COUNTS.items()))
        terminalreporter.write_line(f"hostile input cases run: {total} ({parts})")
        for key, value in FIGURES.items():
            terminalreporter.write_line(f"{key}: {value}")


@pytest.fixture(scope="module", autouse=True)
def _report(request):
    manager = request.config.pluginmanager
    if not manager.has_plugin("onnxpipe-hostile-report"):
        manager.register(_HostileReport(), "onnxpipe-hostile-report")


# -- the pipelines under test: the embedded model, through every pipeline its folder serves ---------------
@pytest.fixture(scope="module")
def classifier():
    return pipeline("sentiment-analysis")


@pytest.fixture(scope="module")
def folder(classifier):
    return classifier.model.manifest.folder


@pytest.fixture(scope="module")
def extractor(folder):
    return pipeline("feature-extraction", model=folder)


@pytest.fixture(scope="module")
def embedder(folder):
    return pipeline("sentence-embeddings", model=folder)


LABELS = {"NEGATIVE", "POSITIVE"}
LIMIT = 512  # the embedded model's max_length (checked in test_limit_is_the_manifest_max_length)


def assert_valid(result) -> None:
    assert isinstance(result, dict) and set(result) == {"label", "score"}, result
    assert result["label"] in LABELS
    # softmax over two labels: the winning score is in [0.5, 1]
    assert math.isfinite(result["score"]) and 0.5 <= result["score"] <= 1.0, result


# -- 1. table: text that is odd but valid ---------------------------------------------------------------------
HOSTILE_TEXTS = {
    "empty": "",
    "space": " ",
    "whitespace": " \t\n\r\u00a0\u2003\u3000",
    "newlines": "\n" * 200,
    "lone_high_surrogate": "bad \ud800 text",
    "lone_low_surrogate": "\udfff",
    "reversed_surrogates": "\udc00\ud800",
    "surrogate_code_units_of_an_emoji": "\ud83d\ude00 smile",
    "surrogateescape_bytes": b"caf\xe9 \xff\xfe".decode("utf-8", "surrogateescape"),
    "emoji": "I love it 😍🔥👍🏽",
    "emoji_zwj_sequence": "👨‍👩‍👧‍👦 family trip",
    "flags": "🇯🇵🇺🇸🏴‍☠️",
    "chinese": "这部电影很好看",
    "japanese": "この映画は最高です",
    "korean": "이 영화 정말 좋아요",
    "thai": "หนังเรื่องนี้ดีมาก",
    "arabic_rtl": "هذا الفيلم رائع",
    "hebrew_rtl": "הסרט הזה נהדר",
    "bidi_controls": "\u202eevil\u202c \u2066isolated\u2069 \u200fRTL mark",
    "combining_marks": "e\u0301" * 60,
    "zalgo": "g\u0336\u0321\u032a\u036b\u034co\u0338\u0327\u0349od\u035c\u0361 " * 5,
    "zero_width": "great\u200b\u200c\u200d\u2060\ufeff movie",
    "only_zero_width": "\u200b\u200c\u200d",
    "nul_and_controls": "a\x00b\x01c\x1bd\x7f\x9f",
    "noncharacters": "\ufdd0\ufffe\uffff\U0010ffff",
    "private_use": "\ue000\U000f0000\U0010fffd",
    "replacement_char": "\ufffd\ufffd",
    "line_separators": "a\u2028b\u2029c\x85d\x0b\x0c",
    "leading_bom": "\ufeffhello",
    "math_alphanumerics": "𝓖𝓻𝓮𝓪𝓽 𝕞𝕠𝕧𝕚𝕖",
    "fullwidth": "ＧＲＥＡＴ　ＭＯＶＩＥ",
    "one_long_word": "a" * 20_000,
    "many_words": "good " * 5_000,
    "long_emoji": "😀" * 3_000,
    "long_cjk": "好" * 3_000,
    "special_token_strings": "[CLS] [SEP] [PAD] [MASK] [UNK] <s> </s> <pad>",
    "markup": "<script>alert('x')</script>&amp;&#0;",
    "format_strings": "%s %n %x {0} {} ${x} \\x00 \\u0000",
}


@pytest.mark.parametrize("name", list(HOSTILE_TEXTS))
def test_odd_text_gets_a_normal_prediction(classifier, extractor, embedder, name):
    text = HOSTILE_TEXTS[name]
    COUNTS["table"] += 1
    result = classifier(text)
    assert isinstance(result, list) and len(result) == 1
    assert_valid(result[0])
    hidden = extractor(text, return_tensors=True)
    tokens = len(classifier.tokenizer(text, truncation=True)["input_ids"])
    assert hidden.shape == (1, tokens, 384) and 2 <= tokens <= LIMIT
    assert np.isfinite(hidden).all()
    vector = embedder(text)
    assert vector.shape == (384,) and abs(float(np.linalg.norm(vector)) - 1.0) < 1e-4


def test_the_whole_table_as_one_batch(classifier, extractor):
    texts = list(HOSTILE_TEXTS.values())
    COUNTS["table"] += 2 * len(texts)
    results = classifier(texts)
    assert len(results) == len(texts)
    for r in results:
        assert_valid(r)
    # in input order although batched by length: each row has its own text's token count
    assert [h.shape[1] for h in extractor(texts, return_tensors=True)] == [
        len(ids) for ids in classifier.tokenizer(texts, truncation=True)["input_ids"]
    ]


@pytest.mark.parametrize("text", ["", " ", "\t\n", "\u3000"])
def test_empty_and_whitespace_are_special_tokens_only(classifier, text):
    COUNTS["table"] += 1
    tok = classifier.tokenizer
    cls_sep = [tok.backend.token_to_id("[CLS]"), tok.backend.token_to_id("[SEP]")]
    assert tok(text)["input_ids"] == cls_sep  # as transformers' BERT tokenizer gives
    assert classifier(text) == classifier("")


# Lone surrogates are repaired to U+FFFD; a well-formed pair of code units is re-joined.
SURROGATE_REPAIRS = [
    ("bad \ud800 text", "bad \ufffd text"),
    ("\udfff", "\ufffd"),
    ("\udc00\ud800", "\ufffd\ufffd"),
    ("\ud83d\ude00 smile", "😀 smile"),
    ("caf\udce9", "caf\ufffd"),
    ("\ufeff\ud800", "\ufeff\ufffd"),  # a leading BOM is text, not a byte-order mark
    ("ok", "ok"),
]


@pytest.mark.parametrize("raw,clean", SURROGATE_REPAIRS)
def test_unencodable_text_is_repaired_not_refused(classifier, raw, clean):
    COUNTS["table"] += 1
    assert clean_text(raw) == clean
    assert classifier(raw) == classifier(clean)
    assert classifier.tokenizer(raw)["input_ids"] == classifier.tokenizer(clean)["input_ids"]


def test_text_pairs_are_accepted_as_transformers_accepts_them(classifier, folder):
    COUNTS["table"] += 3
    pair = {"text": "The plot was thin.", "text_pair": "But the acting was \ud800 wonderful 😍"}
    single = classifier(pair)
    assert_valid(single)  # a dict input gives a dict, as transformers does
    batch = classifier([pair, "plain text", {"text": "only a text"}])
    assert len(batch) == 3
    for r in batch:
        assert_valid(r)
    # the pair really reaches the model as two segments (token type 1 for the second)
    enc = classifier.tokenizer(pair["text"], text_pair=pair["text_pair"], return_tensors="np")
    assert enc["token_type_ids"].max() == 1
    logits = AutoModelForSequenceClassification.from_pretrained(folder)(**enc).logits[0].astype(np.float64)
    probs = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    assert single["score"] == pytest.approx(float(probs.max()), abs=1e-6)


# The other task pipelines, on tiny random exports (their outputs are meaningless; only their handling of odd
# input is under test here). Each call either gives a result or raises one of the documented errors.
OTHER_TASKS = {
    "fill-mask": lambda pipe, text: pipe(text + " [MASK]"),
    "token-classification": lambda pipe, text: pipe(text),
    "question-answering": lambda pipe, text: pipe(question="what is it?", context=text),
    "zero-shot-classification": lambda pipe, text: pipe(text, candidate_labels=["good", "bad"]),
}
OTHER_TASK_CALLS = {  # a batch with a non-string at index 1
    "fill-mask": lambda pipe, bad: pipe(["a [MASK]", bad]),
    "token-classification": lambda pipe, bad: pipe(["a b", bad]),
    "question-answering": lambda pipe, bad: pipe(
        [{"question": "q?", "context": "c"}, {"question": "q?", "context": bad}]
    ),
    "zero-shot-classification": lambda pipe, bad: pipe(["a b", bad], candidate_labels=["x"]),
}


@pytest.mark.torch
@pytest.mark.parametrize("task", list(OTHER_TASKS))
def test_other_task_pipelines_take_the_same_odd_text(tiny_export, task):
    pipe = pipeline(task, model=tiny_export("bert", task))
    outcomes = collections.Counter()
    for name, text in HOSTILE_TEXTS.items():
        COUNTS["table"] += 1
        try:
            result = OTHER_TASKS[task](pipe, text)
        except InputTooLongError:  # fill-mask does not truncate by default, as transformers
            assert task == "fill-mask" and len(pipe.tokenizer(text, truncation=False)["input_ids"]) > 120, name
            outcomes["InputTooLongError"] += 1
            continue
        except ValueError as e:  # documented refusals, e.g. an empty context or question
            assert task in ("question-answering", "zero-shot-classification") and "empty" in str(e).lower(), (name, e)
            outcomes["ValueError"] += 1
            continue
        assert result is not None
        outcomes["result"] += 1
    assert outcomes["result"] >= len(HOSTILE_TEXTS) - 12, outcomes
    for bad in (None, 5, b"bytes", ["nested"]):
        COUNTS["table"] += 1
        with pytest.raises(TypeError, match=rf"\b1 is {type(bad).__name__}\b"):
            OTHER_TASK_CALLS[task](pipe, bad)


# -- 2. over-long text: truncated by default, an error naming index and count with truncation=False ------------
def test_limit_is_the_manifest_max_length(classifier):
    assert classifier.tokenizer.model_max_length == LIMIT == classifier.model.manifest.max_length


LONG = "good " * 600  # 600 words -> 602 tokens with [CLS] and [SEP]


@pytest.mark.parametrize("kind", ["classifier", "extractor", "embedder"])
def test_long_text_is_truncated_by_default(request, classifier, kind):
    COUNTS["table"] += 1
    pipe = request.getfixturevalue(kind)
    assert len(classifier.tokenizer(LONG, truncation=False)["input_ids"]) == 602
    out = pipe(["short", LONG])
    assert len(out) == 2
    if kind == "extractor":
        assert np.asarray(out[1]).shape == (1, LIMIT, 384)
    for flag in (True, "longest_first"):
        assert len(pipe([LONG], truncation=flag)) == 1


@pytest.mark.parametrize("kind", ["classifier", "extractor", "embedder"])
@pytest.mark.parametrize("flag", [False, "do_not_truncate"])
def test_truncation_false_names_index_and_token_count(request, kind, flag):
    COUNTS["table"] += 1
    pipe = request.getfixturevalue(kind)
    with pytest.raises(InputTooLongError, match=r"input 2 has 602 tokens; the model accepts at most 512"):
        pipe(["fine", "also fine", LONG, "never reached"], truncation=flag)
    assert len(pipe(["fine", "x " * 500], truncation=flag)) == 2  # 502 tokens: within the limit


def test_truncation_false_counts_the_index_across_chunks(classifier):
    COUNTS["table"] += 1
    small_chunks = type(classifier)(classifier.model, classifier.tokenizer, chunk_size=4)
    texts = ["ok"] * 9 + [LONG]
    with pytest.raises(InputTooLongError, match=r"input 9 has 602 tokens"):
        list(small_chunks.iter(texts, truncation=False))


def test_truncation_false_counts_both_texts_of_a_pair(classifier):
    COUNTS["table"] += 1
    pair = {"text": "good " * 300, "text_pair": "bad " * 300}  # 300 + 300 + 3 special tokens
    with pytest.raises(InputTooLongError, match=r"input 1 has 603 tokens"):
        classifier(["fine", pair], truncation=False)
    assert_valid(classifier(pair))


def test_unsupported_truncation_strategy_is_refused_with_the_valid_values(classifier):
    with pytest.raises(ValueError, match=r"truncation='only_third' is not supported; use True"):
        classifier("text", truncation="only_third")
    # a pair strategy on one text: fine while nothing is cut; where it must cut, an error naming the input
    assert_valid(classifier("text", truncation="only_second")[0])
    with pytest.raises(InputTooLongError, match=r"input 1 .*no text_pair"):
        classifier(["fine", "word " * 600], truncation="only_second")


# Huge texts: with truncation on, only their start is tokenized (AutoTokenizer._head), which must give exactly
# the tokens the whole text gives. (References are computed the old way, which keeps the whole overflow: for a
# pair that is the product of both lengths, so pairs are checked at ~20k characters only.)
HUGE_TEXTS = {
    "english": "the movie was good but far too long " * 3_000,
    "cjk": "这部电影很好看但是太长了" * 3_000,
    "emoji_and_words": "great 😀👍🏽 plot " * 5_000,
    "no_spaces": "abcdefghij" * 20_000,  # one giant word: [UNK], cut or not
    "mostly_whitespace": " " * 1_000_000 + "but the ending was awful",  # head too short: whole text used
    "combining_marks": ("e\u0301 " * 20_000),
    "surrogates_and_zero_width": "bad\ud800 text\u200b " * 5_000,
}


@pytest.mark.parametrize("name", list(HUGE_TEXTS))
def test_huge_text_gets_exactly_the_tokens_of_the_whole_text(classifier, name):
    COUNTS["table"] += 1
    text = clean_text(HUGE_TEXTS[name])
    tok = classifier.tokenizer
    head = tok.encode_batch([text], bounded=True)[0]
    whole = tok.encode_batch([text])[0]
    assert head.ids == whole.ids and head.type_ids == whole.type_ids
    # Pairs: the same tokens, except that the odd token of an odd budget may go to the other text (documented).
    a, b = text[:20_000], text[::-1][:20_000]
    cut, whole = tok.encode_batch([a], [b], bounded=True)[0], tok.encode_batch([a], [b])[0]
    for segment in (0, 1):
        x, y = ([i for i, s in zip(e.ids, e.sequence_ids) if s == segment] for e in (cut, whole))
        shorter, longer = sorted((x, y), key=len)
        assert len(longer) - len(shorter) <= 1 and longer[: len(shorter)] == shorter
    assert_valid(classifier(HUGE_TEXTS[name])[0])


@settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(pieces=st.lists(st.text(st.characters(), min_size=1, max_size=12), min_size=1, max_size=30))
def test_property_the_head_of_a_huge_text_gives_its_tokens(classifier, pieces):
    COUNTS["hypothesis examples"] += 1
    unit = " ".join(pieces) + " "
    text = clean_text(unit * (20_000 // len(unit) + 1))  # over the 16,384-character cut
    tok = classifier.tokenizer
    assert tok.encode_batch([text], bounded=True)[0].ids == tok.encode_batch([text])[0].ids


_HUGE_CHILD = """
import re, sys, time
from onnxpipe import pipeline
classifier = pipeline("sentiment-analysis")
classifier("warm up")
text = "good movie, but far too long " * 400_000   # 11.6 MB
start = time.perf_counter()
result = classifier(text)[0]
# A pair of 60k-character texts: keeping the pair's overflow took ~1 GB (it grows with the product of lengths).
pair = classifier({"text": text[:60_000], "text_pair": text[:60_000]})
# Few tokens per character (150-letter words, each one [UNK]): the head has to grow to find enough tokens.
sparse = ("x" * 150 + " ") * 13_000
sparse_pair = classifier({"text": sparse, "text_pair": sparse})
hwm = int(re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1)) / 1024
print(result["label"], pair["label"], sparse_pair["label"], round(time.perf_counter() - start, 2), round(hwm))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads peak RSS from /proc/self/status")
def test_one_huge_input_does_not_take_gigabytes():
    proc = subprocess.run([sys.executable, "-c", _HUGE_CHILD], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    *labels, seconds, peak_mib = proc.stdout.split()
    COUNTS["table"] += 3
    FIGURES["one 11.6 MB input + a 2x60k-char pair + a 2x2MB sparse pair"] = f"{seconds} s, peak RSS {peak_mib} MiB"
    assert len(labels) == 3 and set(labels) <= LABELS
    assert float(peak_mib) < 600, FIGURES["one 11.6 MB input + a 2x60k-char pair + a 2x2MB sparse pair"]


# -- 3. non-strings: TypeError naming the index and the type, on every path -----------------------------------
NON_STRINGS = [
    None,
    0,
    3.5,
    float("nan"),
    True,
    b"bytes",
    bytearray(b"ba"),
    ["nested"],
    ("a", "b"),
    {"x"},
    object(),
    np.int64(3),
]


def _type_error(fn, index_word: str, bad) -> None:
    with pytest.raises(TypeError, match=rf"{index_word} is {type(bad).__name__} \("):
        fn()


@pytest.mark.parametrize("bad", NON_STRINGS, ids=lambda b: type(b).__name__)
def test_non_string_in_a_batch_is_a_type_error_naming_index_and_type(classifier, extractor, embedder, bad):
    COUNTS["table"] += 8
    batch = ["fine", "ok", bad, "never reached"]
    _type_error(lambda: classifier(batch), "input 2", bad)
    _type_error(lambda: list(classifier.iter(iter(batch))), "input 2", bad)
    _type_error(lambda: extractor(batch), "input 2", bad)
    _type_error(lambda: embedder(batch), "input 2", bad)
    _type_error(lambda: classifier([{"text": "a", "text_pair": "b"}, {"text": bad}]), "input 1", bad)
    if bad is not None:  # text_pair=None means "no pair", as in transformers
        _type_error(lambda: classifier([{"text": "a", "text_pair": bad}]), "text_pair 0", bad)
    if not (isinstance(bad, tuple) and len(bad) == 2):  # to the tokenizer, as to transformers', a (text, pair)
        _type_error(lambda: classifier.tokenizer(batch, padding=True), "text 2", bad)
    _type_error(lambda: classifier.tokenizer(["a", "b", "c"], text_pair=["a", "b", bad]), "text_pair 2", bad)


def test_nested_list_error_points_to_the_pair_format(classifier):
    with pytest.raises(TypeError, match=r"input 0 is list .*for a text pair pass \{'text'"):
        classifier([["a premise", "a hypothesis"]])


# A generator is an input stream for a pipeline (an iterator of results, as transformers: test_dropin.py), but
# not for the tokenizer, which returns one batch.
@pytest.mark.parametrize("bad", [None, 5, b"bytes", np.array(["a"])], ids=["None", "int", "bytes", "ndarray"])
def test_non_string_top_level_input_is_a_type_error_naming_the_type(classifier, bad):
    COUNTS["table"] += 2
    with pytest.raises(TypeError, match=rf"inputs must be a str or a list of str, got {type(bad).__name__}"):
        classifier(bad)
    with pytest.raises(TypeError, match=rf"text must be a str or a list of str, got {type(bad).__name__}"):
        classifier.tokenizer(bad)


def test_the_tokenizer_refuses_a_generator(classifier):
    with pytest.raises(TypeError, match="text must be a str or a list of str, got generator"):
        classifier.tokenizer(t for t in ["a"])
    assert list(classifier(t for t in ["a"])) == classifier(["a"])


def test_one_str_given_to_iter_is_one_input(classifier):
    assert list(classifier.iter("a whole sentence")) == classifier(["a whole sentence"])


# -- 4. properties over random Unicode and lengths ------------------------------------------------------------
# st.characters() with no codec draws from every code point, lone surrogates included.
any_text = st.one_of(
    st.text(st.characters(), max_size=40),
    st.text(st.characters(), min_size=400, max_size=1_000),  # mostly over 512 tokens
    st.lists(st.sampled_from(["a", " ", "😀", "好", "\u0301", "\u200b", "\ud800", "good ", "[SEP]"]), max_size=300).map(
        "".join
    ),
)
PROPERTY_SETTINGS = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.large_base_example, HealthCheck.data_too_large],
)


@PROPERTY_SETTINGS
@given(texts=st.lists(any_text, min_size=1, max_size=3))
def test_property_any_text_gets_a_valid_prediction(classifier, texts):
    COUNTS["hypothesis examples"] += 1
    results = classifier(texts)
    assert len(results) == len(texts)
    for r in results:
        assert_valid(r)
    lengths = [len(ids) for ids in classifier.tokenizer(texts, truncation=True)["input_ids"]]
    assert all(2 <= n <= LIMIT for n in lengths)


@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(texts=st.lists(any_text, min_size=1, max_size=4))
def test_property_truncation_false_fails_only_as_documented(classifier, texts):
    COUNTS["hypothesis examples"] += 1
    counts = [len(ids) for ids in classifier.tokenizer(texts, truncation=False)["input_ids"]]
    too_long = [i for i, n in enumerate(counts) if n > LIMIT]
    if not too_long:
        for r in classifier(texts, truncation=False):
            assert_valid(r)
        return
    first = too_long[0]
    with pytest.raises(InputTooLongError, match=rf"input {first} has {counts[first]} tokens; .* at most {LIMIT}"):
        classifier(texts, truncation=False)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(text=st.text(st.characters()))
def test_property_clean_text_is_always_utf8_and_changes_only_surrogates(text):
    COUNTS["hypothesis examples"] += 1
    clean = clean_text(text)
    clean.encode("utf-8")  # never raises
    try:
        text.encode("utf-8")
        assert clean == text
    except UnicodeEncodeError:
        assert "\ufffd" in clean and len(clean) <= len(text)


@settings(max_examples=40, deadline=None, derandomize=True)
@given(texts=st.lists(st.text(max_size=20), min_size=1, max_size=6), data=st.data())
def test_property_first_non_string_is_named(classifier, texts, data):
    COUNTS["hypothesis examples"] += 1
    index = data.draw(st.integers(0, len(texts)))
    bad = data.draw(st.sampled_from(NON_STRINGS))
    batch = texts[:index] + [bad] + texts[index:]
    with pytest.raises(TypeError, match=rf"input {index} is {type(bad).__name__}"):
        classifier(batch)


# -- 5. many inputs: streamed in bounded memory, results in input order ----------------------------------------
POSITIVE = ["wonderful", "brilliant", "delightful", "superb"]
NEGATIVE = ["terrible", "awful", "horrible", "dreadful"]


def _review(i: int) -> tuple[str, str]:
    """Input i: a polarized review whose label is known and whose length varies with i (so sorting by
    length reorders it inside its chunk)."""
    positive = (i * 2654435761 >> 7) % 2 == 0
    word = (POSITIVE if positive else NEGATIVE)[i % 4]
    return "the movie was " + "really " * (i % 13) + word, "POSITIVE" if positive else "NEGATIVE"


def _word(i: int) -> tuple[str, str]:
    """The cheapest polarized input (3 tokens), for the long streams."""
    positive = (i * 2654435761 >> 7) % 2 == 0
    return (POSITIVE if positive else NEGATIVE)[i % 4] + "!" * (i % 3), "POSITIVE" if positive else "NEGATIVE"


class _CountingSource:
    """An iterable of inputs that counts how many were pulled (proves lazy consumption)."""

    def __init__(self, n: int, make=_review):
        self.n, self.make, self.pulled = n, make, 0

    def __iter__(self):
        for i in range(self.n):
            self.pulled += 1
            yield self.make(i)[0]


def test_iter_pulls_one_chunk_at_a_time(classifier):
    pipe = type(classifier)(classifier.model, classifier.tokenizer, chunk_size=64)
    source = _CountingSource(1_000)
    stream = pipe.iter(source)
    first = next(stream)
    assert source.pulled == 64  # one chunk, not the whole input
    assert first["label"] == _review(0)[1]
    for i, result in enumerate(stream, start=1):
        assert result["label"] == _review(i)[1], (i, result)
        if i == 100:
            break
    assert source.pulled == 128
    stream.close()


def _traced_stream(pipe, n: int) -> float:
    """Stream n inputs, checking every label in order; return the traced peak in MiB."""
    tracemalloc.start()
    try:
        seen = 0
        for i, result in enumerate(pipe.iter(_CountingSource(n, _word))):
            assert result["label"] == _word(i)[1], (i, result)
            seen += 1
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert seen == n
    COUNTS["streamed inputs"] += n
    return peak / 2**20


def test_stream_memory_does_not_grow_with_the_number_of_inputs(classifier):
    # Small chunks so that a few thousand inputs are many chunks; the 20,000-input run on a tiny model is the
    # next test (it needs the export extra to build that model).
    pipe = type(classifier)(classifier.model, classifier.tokenizer, batch_size=256, chunk_size=256)
    list(pipe.iter(_CountingSource(256, _word)))  # warm-up
    small = _traced_stream(pipe, 400)
    big = _traced_stream(pipe, 4_000)
    FIGURES["stream on the embedded model"] = (
        f"4000 inputs (16 chunks): traced peak {big:.2f} MiB; 400 inputs: {small:.2f} MiB"
    )
    # 10x the inputs must not need more memory than one chunk does: results and encodings are not accumulated.
    assert big < 1.5 * small + 0.5, FIGURES["stream on the embedded model"]


_CHILD = """
import json, re, sys, time
from onnxpipe import pipeline
folder, n = sys.argv[1], int(sys.argv[2])
pipe = pipeline("feature-extraction", model=folder, batch_size=256)
texts = lambda count: ("good " * (1 + (i * 7919) % 61) for i in range(count))
# VmHWM (peak RSS of this process image), not ru_maxrss: Linux carries ru_maxrss over from the parent
# through fork and exec, so in a child of a big pytest process it would only show the parent's peak.
maxrss = lambda: int(re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1)) / 1024
for _ in pipe.iter(texts(2 * pipe.chunk_size), return_tensors=True):
    pass
before, t0, out_of_order, result_bytes, i = maxrss(), time.perf_counter(), 0, 0, -1
for i, hidden in enumerate(pipe.iter(texts(n), return_tensors=True)):
    out_of_order += hidden.shape[1] != 3 + (i * 7919) % 61   # token count identifies the input
    result_bytes += hidden.nbytes
print(json.dumps({"n": i + 1, "out_of_order": out_of_order, "rss_before_mib": before, "rss_after_mib": maxrss(),
                  "results_mib": result_bytes / 2**20, "seconds": time.perf_counter() - t0,
                  "torch_imported": "torch" in sys.modules}))
"""


# Inputs of 3 to 63 tokens, so that 20,000 of them (10 chunks) yield results well past the growth bound: the
# number of inputs, not their length, sets this test's time (each int8 input is a session call of its own).
STREAM_INPUTS = 20_000


@pytest.mark.torch
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads peak RSS from /proc/self/status")
def test_a_long_stream_in_bounded_memory_and_in_order(tiny_export):
    """20,000 inputs (10 chunks) through a fresh runtime-only process (peak RSS is per process), on a tiny
    model."""
    folder = tiny_export("bert", "text-classification")
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, str(folder), str(STREAM_INPUTS)], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    COUNTS["streamed inputs"] += r["n"]
    growth = r["rss_after_mib"] - r["rss_before_mib"]
    FIGURES[f"stream {STREAM_INPUTS} inputs (tiny bert, subprocess)"] = (
        f"max-RSS {r['rss_before_mib']:.0f} -> {r['rss_after_mib']:.0f} MiB (+{growth:.1f}) while yielding "
        f"{r['results_mib']:.0f} MiB of results, {r['seconds']:.1f} s"
    )
    assert r["n"] == STREAM_INPUTS and r["out_of_order"] == 0
    assert not r["torch_imported"]
    # Holding the results would grow RSS by more than results_mib (~80 MiB); streaming stays within a chunk.
    assert r["results_mib"] > 64 and growth < 32, FIGURES[f"stream {STREAM_INPUTS} inputs (tiny bert, subprocess)"]


# -- 6. the CLI streams and reports progress -----------------------------------------------------------------
class _TTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def _predict(monkeypatch, argv, stdin=None, tty=False):
    out, err = io.StringIO(), (_TTY() if tty else io.StringIO())
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(sys, "stderr", err)
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", stdin)
    code = cli_main(["predict", *argv])
    return code, out.getvalue(), err.getvalue()


def test_cli_predict_file_streams_results_in_order_and_shows_progress_on_a_tty(tmp_path, monkeypatch):
    n = 300
    lines = [_word(i)[0] for i in range(n)]
    lines[7] = "caf\udce9 \udcff"  # written with surrogateescape: invalid UTF-8 bytes in the file
    lines[8] = ""
    path = tmp_path / "reviews.txt"
    path.write_bytes("\n".join(lines).encode("utf-8", "surrogateescape") + b"\n")
    code, out, err = _predict(monkeypatch, ["--input", str(path), "--batch-size", "128"], tty=True)
    assert code == 0, err
    results = [json.loads(line) for line in out.splitlines()]
    assert len(results) == n
    COUNTS["streamed inputs"] += n
    for i, r in enumerate(results):
        assert_valid(r)
        if i not in (7, 8):
            assert r["label"] == _word(i)[1]
    assert f"{n} inputs in" in err  # the final progress line on a terminal
    code, _, err = _predict(monkeypatch, ["--input", str(path)], tty=False)
    assert code == 0 and err == ""  # no progress noise when stderr is a pipe or file


class _FailingStdin(io.StringIO):
    """A stdin that delivers `good` lines and then breaks, like a producer that dies mid-stream."""

    def __init__(self, good: int):
        super().__init__()
        self.good = good

    def __iter__(self):
        for i in range(self.good):
            yield _word(i)[0] + "\n"
        raise OSError("producer went away")


def test_cli_predict_writes_results_before_the_input_ends(monkeypatch, capsys):
    stdout = io.StringIO()
    monkeypatch.setattr(sys, "stdout", stdout)
    monkeypatch.setattr(sys, "stdin", _FailingStdin(2_100))
    # The broken input is one error line and exit 2 (no traceback), after what was finished was written.
    assert cli_main(["predict", "--input", "-", "--batch-size", "128"]) == 2
    assert "producer went away" in capsys.readouterr().err
    written = stdout.getvalue().splitlines()
    # the first chunk (2048 inputs) was already answered when the input broke
    assert len(written) == 2048
    COUNTS["streamed inputs"] += 2048
    assert [json.loads(x)["label"] for x in written] == [_word(i)[1] for i in range(2048)]
