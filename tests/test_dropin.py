"""Drop-in idioms: transformers code that people already have, run against transformers and onnxpipe on the
same tiny checkpoint and its fp32 export, compared (same types and keys, floats within 1e-4).

Each idiom is a function ``f(lib, model)``: ``lib`` is the ``transformers`` or ``onnxpipe`` module, ``model``
the checkpoint folder or the export of it; what it returns is compared. Pipelines run at fp32
(``onnxpipe`` side: ``precision="fp32"``), so every difference is the runtime's, not quantisation's.
"""

from __future__ import annotations

import numpy as np
import pytest

import onnxpipe

ATOL = 1e-4
TEXT = "My name is Wolfgang and I live in Berlin."
TEXTS = [TEXT, "Hugging Face Inc. is a company based in New York City!", "unbelievably, it was... ok?"]
CONTEXT = "The Eiffel Tower is in Paris. It was built by Gustave Eiffel's company from 1887 to 1889."
LABELS = ["politics", "sports", "cooking"]
WORDS = TEXT.split()


def first_difference(a, b, path="result"):
    """None when equal (floats within ATOL, other leaves exactly, same container types), else where."""
    if isinstance(a, dict):
        if not isinstance(b, dict) or sorted(a) != sorted(b):
            return f"{path}: keys {sorted(a)} vs {sorted(b) if isinstance(b, dict) else type(b).__name__}"
        return next((d for k in a if (d := first_difference(a[k], b[k], f"{path}.{k}"))), None)
    if isinstance(a, (list, tuple)):
        if type(a) is not type(b) or len(a) != len(b):
            return f"{path}: {type(a).__name__} of {len(a)} vs {type(b).__name__} {b!r:.80}"
        return next((d for i, (x, y) in enumerate(zip(a, b)) if (d := first_difference(x, y, f"{path}[{i}]"))), None)
    if isinstance(a, np.ndarray) or type(a).__name__ == "Tensor":
        a = a.detach().numpy() if hasattr(a, "detach") else a
        if not isinstance(b, np.ndarray) or a.shape != b.shape:
            return f"{path}: array {a.shape} vs {type(b).__name__} {getattr(b, 'shape', '')}"
        if a.dtype.kind == "f":
            return None if np.allclose(a, b, atol=ATOL, rtol=0) else f"{path}: max diff {np.abs(a - b).max()}"
        return None if a.dtype == b.dtype and (a == b).all() else f"{path}: {a!r} vs {b!r}"
    if isinstance(a, (float, np.floating)):
        return None if isinstance(b, float) and abs(float(a) - b) <= ATOL else f"{path}: {a!r} vs {b!r}"
    if isinstance(a, (int, np.integer)) and not isinstance(a, bool):
        return None if type(b) is int and int(a) == b else f"{path}: {a!r} ({type(a).__name__}) vs {b!r}"
    return None if a == b and type(a) is type(b) else f"{path}: {a!r} vs {b!r}"


def _pipe(lib, task, model, **kwargs):
    if lib is onnxpipe:
        return onnxpipe.pipeline(task, model=model, precision="fp32", **kwargs)
    return lib.pipeline(task, model=str(model), **kwargs)


def _model(lib, cls, model):
    """``lib.<cls>.from_pretrained(model)``; onnxpipe's at fp32 (its default on CPU is int8)."""
    if lib is onnxpipe:
        return getattr(onnxpipe, cls).from_pretrained(model, precision="fp32")
    return getattr(lib, cls).from_pretrained(str(model))


def _copy(folder):  # beside it, in pytest's temporary tree
    import shutil

    return shutil.copytree(folder, folder.parent / "copy", dirs_exist_ok=True)


def _strategy(name):  # transformers' TruncationStrategy enum member; onnxpipe takes it too
    from transformers.tokenization_utils_base import TruncationStrategy

    return TruncationStrategy[name]


def _aggregation(name):  # transformers' AggregationStrategy enum member; onnxpipe takes it too
    from transformers.pipelines import AggregationStrategy

    return AggregationStrategy[name]


def _tok(lib, model):
    return lib.AutoTokenizer.from_pretrained(str(model))


def _mask(lib, model):
    return lib.AutoTokenizer.from_pretrained(str(model)).mask_token


# (head, idiom name, f(lib, model)); the head picks the checkpoint and its export.
IDIOMS = [
    # pipeline() construction
    # transformers finds the task of a hub model only (a local folder needs it); onnxpipe reads the manifest
    (
        "text-classification",
        "no task: the folder's",
        lambda lib, m: (
            lib.pipeline(model=str(m), precision="fp32") if lib is onnxpipe else _pipe(lib, "text-classification", m)
        )(TEXT),
    ),
    ("text-classification", "device=-1", lambda lib, m: _pipe(lib, "text-classification", m, device=-1)(TEXT)),
    (
        "text-classification",
        "top_k=None at construction",
        lambda lib, m: _pipe(lib, "sentiment-analysis", m, top_k=None)(TEXT),
    ),
    (
        "text-classification",
        "tokenizer=path",
        lambda lib, m: _pipe(lib, "text-classification", m, tokenizer=str(m))(TEXT),
    ),
    (
        "text-classification",
        "model=object, tokenizer=object",
        lambda lib, m: lib.pipeline(
            "text-classification",
            model=_model(lib, "AutoModelForSequenceClassification", m),
            tokenizer=lib.AutoTokenizer.from_pretrained(str(m)),
        )(TEXTS),
    ),
    (
        "token-classification",
        "grouped_entities=True (course ch. 1)",
        lambda lib, m: _pipe(lib, "ner", m, grouped_entities=True)(TEXT),
    ),
    (
        "token-classification",
        "aggregation_strategy at construction",
        lambda lib, m: _pipe(lib, "ner", m, aggregation_strategy="first")(TEXTS),
    ),
    # call-time arguments
    ("text-classification", "str", lambda lib, m: _pipe(lib, "sentiment-analysis", m)(TEXT)),
    (
        "text-classification",
        "list, batch_size=2",
        lambda lib, m: _pipe(lib, "sentiment-analysis", m)(TEXTS, batch_size=2),
    ),
    ("text-classification", "top_k=None", lambda lib, m: _pipe(lib, "sentiment-analysis", m)(TEXT, top_k=None)),
    ("text-classification", "top_k=2 list", lambda lib, m: _pipe(lib, "sentiment-analysis", m)(TEXTS, top_k=2)),
    (
        "text-classification",
        "return_all_scores=True str",
        lambda lib, m: _pipe(lib, "sentiment-analysis", m)(TEXT, return_all_scores=True),
    ),
    (
        "text-classification",
        "return_all_scores=True list",
        lambda lib, m: _pipe(lib, "sentiment-analysis", m)(TEXTS, return_all_scores=True),
    ),
    (
        "text-classification",
        "text_pair dict",
        lambda lib, m: _pipe(lib, "sentiment-analysis", m)({"text": TEXT, "text_pair": CONTEXT}),
    ),
    (
        "text-classification",
        "function_to_apply=none",
        lambda lib, m: _pipe(lib, "sentiment-analysis", m)(TEXT, function_to_apply="none"),
    ),
    (
        "text-classification",
        "generator in, iterator out",
        lambda lib, m: list(_pipe(lib, "sentiment-analysis", m)(t for t in TEXTS)),
    ),
    (
        "text-classification",
        "generator, batch_size=2",
        lambda lib, m: list(_pipe(lib, "sentiment-analysis", m)((t for t in TEXTS), batch_size=2)),
    ),
    (
        "text-classification",
        "max_length=6, truncation=True",
        lambda lib, m: _pipe(lib, "sentiment-analysis", m)(TEXTS, max_length=6, truncation=True),
    ),
    (
        "text-classification",
        "padding='max_length'",
        lambda lib, m: _pipe(lib, "sentiment-analysis", m)(TEXTS, padding="max_length", truncation=True),
    ),
    (
        "feature-extraction",
        "tokenize_kwargs",
        lambda lib, m: _pipe(lib, "feature-extraction", m)(
            TEXTS, tokenize_kwargs={"truncation": True, "max_length": 6}
        ),
    ),
    ("token-classification", "str", lambda lib, m: _pipe(lib, "ner", m)(TEXT)),
    (
        "token-classification",
        "aggregation_strategy=simple",
        lambda lib, m: _pipe(lib, "ner", m)(TEXTS, aggregation_strategy="simple"),
    ),
    ("fill-mask", "str", lambda lib, m: _pipe(lib, "fill-mask", m)(f"Hello {_mask(lib, m)} world.")),
    (
        "fill-mask",
        "top_k=2 list",
        lambda lib, m: _pipe(lib, "fill-mask", m)(
            [f"Hello {_mask(lib, m)} world.", f"The {_mask(lib, m)} was slow."], top_k=2
        ),
    ),
    (
        "question-answering",
        "question=, context=",
        lambda lib, m: _pipe(lib, "question-answering", m)(question="Who built it?", context=CONTEXT),
    ),
    (
        "question-answering",
        "dict, top_k=2",
        lambda lib, m: _pipe(lib, "question-answering", m)({"question": "Where is it?", "context": CONTEXT}, top_k=2),
    ),
    (
        "zero-shot-classification",
        "candidate_labels=",
        lambda lib, m: _pipe(lib, "zero-shot-classification", m)(TEXT, candidate_labels=LABELS),
    ),
    (
        "zero-shot-classification",
        "sequences= keyword",
        lambda lib, m: _pipe(lib, "zero-shot-classification", m)(
            sequences=TEXTS, candidate_labels=LABELS, multi_label=True
        ),
    ),
    (
        "zero-shot-classification",
        "labels positional",
        lambda lib, m: _pipe(lib, "zero-shot-classification", m)(TEXT, LABELS),
    ),
    ("feature-extraction", "str: nested lists", lambda lib, m: _pipe(lib, "feature-extraction", m)(TEXT)),
    # tokenizer
    *[
        (
            "text-classification",
            f"tokenizer.{a}",
            (lambda a_: lambda lib, m: getattr(lib.AutoTokenizer.from_pretrained(str(m)), a_))(a),
        )
        for a in (
            "cls_token",
            "sep_token",
            "pad_token",
            "mask_token",
            "unk_token",
            "cls_token_id",
            "sep_token_id",
            "pad_token_id",
            "mask_token_id",
            "unk_token_id",
            "vocab_size",
            "model_max_length",
            "all_special_ids",
        )
    ],
    ("text-classification", "len(tokenizer)", lambda lib, m: len(lib.AutoTokenizer.from_pretrained(str(m)))),
    (
        "text-classification",
        "tokenizer(text) lists",
        lambda lib, m: dict(lib.AutoTokenizer.from_pretrained(str(m))(TEXT)),
    ),
    (
        "text-classification",
        "tokenizer(texts, padding=True)",
        lambda lib, m: dict(lib.AutoTokenizer.from_pretrained(str(m))(TEXTS, padding=True)),
    ),
    (
        "text-classification",
        "tokenizer np, offsets",
        lambda lib, m: dict(
            lib.AutoTokenizer.from_pretrained(str(m))(
                TEXTS, padding=True, truncation=True, return_tensors="np", return_offsets_mapping=True
            )
        ),
    ),
    (
        "text-classification",
        "tokenizer pair, only_first",
        lambda lib, m: dict(
            lib.AutoTokenizer.from_pretrained(str(m))(CONTEXT * 20, "short", truncation="only_first", max_length=32)
        ),
    ),
    (
        "text-classification",
        "add_special_tokens=False",
        lambda lib, m: dict(lib.AutoTokenizer.from_pretrained(str(m))(TEXT, add_special_tokens=False)),
    ),
    ("text-classification", "word_ids()", lambda lib, m: lib.AutoTokenizer.from_pretrained(str(m))(TEXT).word_ids()),
    ("text-classification", "encode", lambda lib, m: lib.AutoTokenizer.from_pretrained(str(m)).encode(TEXT)),
    ("text-classification", "tokenize", lambda lib, m: lib.AutoTokenizer.from_pretrained(str(m)).tokenize(TEXT)),
    (
        "text-classification",
        "decode keeps specials",
        lambda lib, m: (lambda t: t.decode(t.encode(TEXT)))(lib.AutoTokenizer.from_pretrained(str(m))),
    ),
    (
        "text-classification",
        "decode skip_special_tokens",
        lambda lib, m: (lambda t: t.decode(t.encode(TEXT), skip_special_tokens=True))(
            lib.AutoTokenizer.from_pretrained(str(m))
        ),
    ),
    (
        "text-classification",
        "batch_decode",
        lambda lib, m: (lambda t: t.batch_decode(t(TEXTS, padding=True)["input_ids"]))(
            lib.AutoTokenizer.from_pretrained(str(m))
        ),
    ),
    (
        "text-classification",
        "convert_ids_to_tokens",
        lambda lib, m: (lambda t: t.convert_ids_to_tokens(t.encode(TEXT)))(lib.AutoTokenizer.from_pretrained(str(m))),
    ),
    (
        "text-classification",
        "convert_tokens_to_ids",
        lambda lib, m: (lambda t: t.convert_tokens_to_ids(t.tokenize(TEXT) + ["zzqqxx-not-a-token"]))(
            lib.AutoTokenizer.from_pretrained(str(m))
        ),
    ),
    # truncation strategies, padding and max_length in the pipelines
    *[
        (
            "text-classification",
            f"truncation {name}",
            (lambda call_: lambda lib, m: call_(_pipe(lib, "text-classification", m)))(call),
        )
        for name, call in [
            ("only_first, pair", lambda p: p({"text": TEXT * 30, "text_pair": "short"}, truncation="only_first")),
            (
                "only_first, pair, max_length",
                lambda p: p({"text": CONTEXT, "text_pair": TEXT}, truncation="only_first", max_length=20),
            ),
            (
                "only_second, pair, max_length",
                lambda p: p({"text": TEXT, "text_pair": CONTEXT}, truncation="only_second", max_length=20),
            ),
            (
                "longest_first, pair, max_length",
                lambda p: p({"text": TEXT, "text_pair": CONTEXT}, truncation="longest_first", max_length=20),
            ),
            (
                "only_second, long second",
                lambda p: p({"text": "short", "text_pair": TEXT * 30}, truncation="only_second"),
            ),
            ("only_first, one text", lambda p: p(TEXT * 30, truncation="only_first")),
            ("only_second, one text that fits", lambda p: p(TEXT, truncation="only_second")),
            (
                "TruncationStrategy enum",
                lambda p: p({"text": TEXT, "text_pair": CONTEXT}, truncation=_strategy("ONLY_SECOND"), max_length=20),
            ),
        ]
    ],
    *[
        ("text-classification", name, (lambda call_: lambda lib, m: call_(_pipe(lib, "text-classification", m)))(call))
        for name, call in [
            ("text_pair= keyword", lambda p: p(TEXT, text_pair=CONTEXT)),
            ("text_pair= keyword, list", lambda p: p([TEXT, "hello"], text_pair=CONTEXT)),
            (
                "text_pair= keyword, only_second, max_length",
                lambda p: p(TEXT, text_pair=CONTEXT, truncation="only_second", max_length=20),
            ),
            ("text_pair '' (no pair)", lambda p: p({"text": TEXT, "text_pair": ""})),
            (
                "padding='max_length', max_length (pads, cuts nothing)",
                lambda p: p(TEXTS, padding="max_length", max_length=6),
            ),
            ("padding=True, max_length (cuts nothing)", lambda p: p(TEXTS, padding=True, max_length=6)),
            ("max_length alone (cuts)", lambda p: p(TEXTS, max_length=6)),
            ("max_length, truncation=False", lambda p: p(TEXTS, max_length=6, truncation=False)),
        ]
    ],
    (
        "feature-extraction",
        "truncation='only_first'",
        lambda lib, m: _pipe(lib, "feature-extraction", m)(TEXT * 30, truncation="only_first"),
    ),
    (
        "feature-extraction",
        "tokenize_kwargs truncation='only_first'",
        lambda lib, m: _pipe(lib, "feature-extraction", m)(TEXT * 30, tokenize_kwargs={"truncation": "only_first"}),
    ),
    (
        "feature-extraction",
        "tokenize_kwargs max_length, padding (cuts nothing)",
        lambda lib, m: _pipe(lib, "feature-extraction", m)(TEXT, tokenize_kwargs={"max_length": 5, "padding": True}),
    ),
    (
        "zero-shot-classification",
        "truncation='only_first'",
        lambda lib, m: _pipe(lib, "zero-shot-classification", m)(
            TEXT * 30, candidate_labels=LABELS, truncation="only_first"
        ),
    ),
    (
        "zero-shot-classification",
        "truncation=True",
        lambda lib, m: _pipe(lib, "zero-shot-classification", m)(TEXT * 30, candidate_labels=LABELS, truncation=True),
    ),
    *[
        ("question-answering", name, (lambda call_: lambda lib, m: call_(_pipe(lib, "question-answering", m)))(call))
        for name, call in [
            (
                "padding='max_length', top_k=30",
                lambda p: p(question="Who built it?", context=CONTEXT, padding="max_length", top_k=30),
            ),
            (
                "padding=True, windows, top_k=40",
                lambda p: p(question="Who?", context=CONTEXT * 3, padding=True, max_seq_len=32, doc_stride=8, top_k=40),
            ),
            (
                "padding='max_length', windows, top_k=40",
                lambda p: p(
                    question="Who?", context=CONTEXT * 3, padding="max_length", max_seq_len=40, doc_stride=8, top_k=40
                ),
            ),
            (
                "windows, top_k=40",
                lambda p: p(question="Who?", context=CONTEXT * 3, max_seq_len=32, doc_stride=8, top_k=40),
            ),
            (
                "short context, padding='max_length', top_k=20",
                lambda p: p(question="Who built it?", context="Gustave built it.", padding="max_length", top_k=20),
            ),
            ("short context, top_k=20", lambda p: p(question="Who built it?", context="Gustave built it.", top_k=20)),
            ("topk=2 (deprecated name)", lambda p: p(question="Who built it?", context=CONTEXT, topk=2)),
            ("max_question_len", lambda p: p(question="Who built it?", context=CONTEXT, max_question_len=2)),
            (
                "truncation='only_second'",
                lambda p: p(question="Who built it?", context=CONTEXT, truncation="only_second"),
            ),
            (
                "handle_impossible_answer, max_answer_len",
                lambda p: p(question="Who?", context=CONTEXT, handle_impossible_answer=True, max_answer_len=3, top_k=3),
            ),
            ("align_to_words=False", lambda p: p(question="Who?", context=CONTEXT, align_to_words=False, top_k=3)),
        ]
    ],
    *[
        ("token-classification", name, (lambda call_: lambda lib, m: call_(_pipe(lib, "ner", m)))(call))
        for name, call in [
            ("is_split_into_words", lambda p: p(WORDS, is_split_into_words=True)),
            (
                "is_split_into_words batch, simple",
                lambda p: p(
                    [WORDS, ["Hugging", "Face", "Inc."]], is_split_into_words=True, aggregation_strategy="simple"
                ),
            ),
            (
                "is_split_into_words, delimiter, first",
                lambda p: p(WORDS, is_split_into_words=True, delimiter="__", aggregation_strategy="first"),
            ),
            (
                "is_split_into_words, stride, max",
                lambda p: p(WORDS * 20, is_split_into_words=True, stride=8, aggregation_strategy="max"),
            ),
            ("grouped_entities=True at call", lambda p: p(TEXT, grouped_entities=True)),
            (
                "grouped_entities overrides aggregation_strategy",
                lambda p: p(TEXT, grouped_entities=True, aggregation_strategy="max"),
            ),
            ("ignore_subwords=True alone (none)", lambda p: p(TEXT, ignore_subwords=True)),
        ]
    ],
    # tokenizer: pre-tokenized words, overflowing windows, padding to a multiple
    *[
        ("text-classification", f"tokenizer {name}", (lambda call_: lambda lib, m: call_(_tok(lib, m)))(call))
        for name, call in [
            ("is_split_into_words", lambda t: dict(t(WORDS, is_split_into_words=True))),
            ("is_split_into_words word_ids()", lambda t: t(WORDS, is_split_into_words=True).word_ids()),
            (
                "is_split_into_words batch np",
                lambda t: dict(
                    t([WORDS, ["Hi", "there"]], is_split_into_words=True, padding=True, return_tensors="np")
                ),
            ),
            (
                "is_split_into_words padded word_ids(1)",
                lambda t: t([WORDS, ["Hi", "there"]], is_split_into_words=True, padding=True).word_ids(1),
            ),
            (
                "is_split_into_words pair, offsets",
                lambda t: dict(t(WORDS, ["Hi", "there"], is_split_into_words=True, return_offsets_mapping=True)),
            ),
            ("is_split_into_words []", lambda t: dict(t([], is_split_into_words=True))),
            (
                "is_split_into_words truncation",
                lambda t: dict(t(WORDS * 40, is_split_into_words=True, truncation=True)),
            ),
            (
                "overflow + stride",
                lambda t: dict(t(CONTEXT, truncation=True, max_length=10, stride=2, return_overflowing_tokens=True)),
            ),
            (
                "overflow np padded",
                lambda t: dict(
                    t(
                        CONTEXT,
                        truncation=True,
                        max_length=10,
                        stride=2,
                        return_overflowing_tokens=True,
                        padding=True,
                        return_tensors="np",
                    )
                ),
            ),
            (
                "overflow batch, offsets, length, special mask",
                lambda t: dict(
                    t(
                        [CONTEXT, TEXT],
                        max_length=10,
                        stride=2,
                        return_overflowing_tokens=True,
                        return_offsets_mapping=True,
                        return_length=True,
                        return_special_tokens_mask=True,
                    )
                ),
            ),
            (
                "overflow word_ids(5)",
                lambda t: t([CONTEXT, TEXT], max_length=10, stride=2, return_overflowing_tokens=True).word_ids(5),
            ),
            (  # the course's question-answering preprocessing (chapter 7)
                "overflow QA windows only_second",
                lambda t: dict(
                    t(
                        "Who built it?",
                        CONTEXT,
                        truncation="only_second",
                        max_length=24,
                        stride=4,
                        return_overflowing_tokens=True,
                        return_offsets_mapping=True,
                        padding="max_length",
                    )
                ),
            ),
            (
                "overflow sequence_ids(2)",
                lambda t: t(
                    "Who?", CONTEXT, truncation="only_second", max_length=16, stride=3, return_overflowing_tokens=True
                ).sequence_ids(2),
            ),
            (
                "overflow pair longest_first",
                lambda t: dict(
                    t(CONTEXT, CONTEXT, truncation=True, max_length=20, stride=3, return_overflowing_tokens=True)
                ),
            ),
            (
                "overflow, no truncation",
                lambda t: dict(t([CONTEXT, TEXT], truncation=False, return_overflowing_tokens=True)),
            ),
            (
                "overflow at the model maximum",
                lambda t: dict(t([CONTEXT * 20, TEXT], truncation=True, stride=5, return_overflowing_tokens=True)),
            ),
            ("stride without overflow", lambda t: dict(t(CONTEXT, truncation=True, max_length=10, stride=2))),
            ("pad_to_multiple_of=8", lambda t: dict(t(TEXTS, padding=True, pad_to_multiple_of=8))),
            (
                "pad_to_multiple_of np, offsets, length",
                lambda t: dict(
                    t(
                        TEXTS,
                        padding=True,
                        pad_to_multiple_of=8,
                        return_tensors="np",
                        return_offsets_mapping=True,
                        return_special_tokens_mask=True,
                        return_length=True,
                    )
                ),
            ),
            ("pad_to_multiple_of without padding", lambda t: dict(t(TEXTS, pad_to_multiple_of=8))),
            (
                "pad_to_multiple_of, max_length",
                lambda t: dict(t(TEXTS, padding="max_length", max_length=16, truncation=True, pad_to_multiple_of=8)),
            ),
            (
                "pad_to_multiple_of, max_length untruncated",
                lambda t: dict(t(TEXTS, padding="max_length", max_length=10, pad_to_multiple_of=8)),
            ),
            ("pad_to_multiple_of tokens()", lambda t: t("hi", padding=True, pad_to_multiple_of=8).tokens()),
            ("padding='max_length' below the longest", lambda t: dict(t(TEXTS, padding="max_length", max_length=5))),
            ("return_length one text", lambda t: dict(t(TEXT, return_length=True))),
            ("return_length padded", lambda t: dict(t(TEXTS, return_length=True, padding=True))),
            ("text_pair '' (no pair)", lambda t: dict(t(TEXT, ""))),
            ("text_pair [''] (a pair)", lambda t: dict(t([TEXT], [""]))),
            ("max_length above the model's", lambda t: dict(t(TEXT * 30, truncation=True, max_length=200))),
            ("truncation='only_first' one text", lambda t: dict(t(TEXT * 30, truncation="only_first"))),
            ("truncation='only_second' one short text", lambda t: dict(t(TEXT, truncation="only_second"))),
            ("word_to_chars", lambda t: tuple(t(TEXT).word_to_chars(3))),
            ("token_to_chars", lambda t: tuple(t(TEXTS).token_to_chars(1, 3))),
            ("char_to_token", lambda t: t(TEXTS).char_to_token(1, 5)),
            ("word_to_tokens", lambda t: tuple(t(TEXTS).word_to_tokens(1, 2))),
            ("token_to_word", lambda t: t(TEXTS).token_to_word(3)),
            ("encoding[i].ids", lambda t: t(TEXTS)[1].ids),
            ("backend_tokenizer", lambda t: t.backend_tokenizer.pre_tokenizer.pre_tokenize_str(TEXT)),
            ("is_fast", lambda t: t.is_fast),
        ]
    ],
    (
        "roberta:text-classification",
        "tokenizer overflow, offsets (byte-level BPE)",
        lambda lib, m: dict(
            _tok(lib, m)(
                CONTEXT,
                truncation=True,
                max_length=10,
                stride=2,
                return_overflowing_tokens=True,
                return_offsets_mapping=True,
            )
        ),
    ),
    (
        "roberta:text-classification",
        "tokenizer pair only_first (byte-level BPE)",
        lambda lib, m: dict(_tok(lib, m)(CONTEXT * 10, TEXT, truncation="only_first")),
    ),
    # calls that once failed or differed from transformers after the cases above passed
    (
        "fill-mask",
        "tokenizer_kwargs truncation",
        lambda lib, m: _pipe(lib, "fill-mask", m)(
            f"Hello {_mask(lib, m)} world." * 40, tokenizer_kwargs={"truncation": True}
        ),
    ),
    (
        "fill-mask",
        "tokenizer_kwargs truncation, max_length",
        lambda lib, m: _pipe(lib, "fill-mask", m)(
            f"Hello {_mask(lib, m)} world." * 40, tokenizer_kwargs={"truncation": True, "max_length": 20}
        ),
    ),
    *[
        ("text-classification", f"tokenizer {name}", (lambda call_: lambda lib, m: call_(_tok(lib, m)))(call))
        for name, call in [
            ("convert_to_tensors('np')", lambda t: dict(t(TEXTS, padding=True).convert_to_tensors("np"))),
            ("BatchEncoding.is_fast, n_sequences", lambda t: (t(TEXT).is_fast, t(TEXT, "b").n_sequences)),
            ("pad(list of encodings), np", lambda t: dict(t.pad([t(x) for x in TEXTS], return_tensors="np"))),
            ("pad(dict of lists)", lambda t: dict(t.pad(t(TEXTS)))),
            (
                "pad max_length, pad_to_multiple_of, left",
                lambda t: dict(
                    t.pad(t(TEXTS), padding="max_length", max_length=20, pad_to_multiple_of=8, padding_side="left")
                ),
            ),
            (
                "pad one encoding",
                lambda t: dict(t.pad(t(TEXT, return_special_tokens_mask=True), padding="max_length", max_length=16)),
            ),
            ("padding_side, truncation_side", lambda t: (t.padding_side, t.truncation_side)),
            (
                "padding_side='left' set",
                lambda t: (setattr(t, "padding_side", "left"), dict(t(TEXTS, padding=True)))[1],
            ),
            (
                "padding_side='left' call",
                lambda t: dict(t(TEXTS, padding=True, padding_side="left", return_tensors="np")),
            ),
            ("encode_plus", lambda t: dict(t.encode_plus(TEXT, CONTEXT, truncation=True, max_length=20))),
            ("batch_encode_plus texts", lambda t: dict(t.batch_encode_plus(TEXTS, padding=True))),
            ("batch_encode_plus pairs", lambda t: dict(t.batch_encode_plus([(TEXT, CONTEXT), ("a", "b")]))),
        ]
    ],
    *[
        (
            "text-classification",
            f"AutoTokenizer.from_pretrained({name})",
            (lambda kw_: lambda lib, m: dict(lib.AutoTokenizer.from_pretrained(str(m), **kw_)(TEXTS, padding=True)))(
                kw
            ),
        )
        for name, kw in [
            ("use_fast=True", {"use_fast": True}),
            ("padding_side='left'", {"padding_side": "left"}),
            (
                "local_files_only, revision, cache_dir, token, force_download, trust_remote_code",
                {
                    "local_files_only": True,
                    "revision": "main",
                    "cache_dir": "unused-cache",
                    "token": None,
                    "force_download": False,
                    "trust_remote_code": True,
                },
            ),
        ]
    ],
    (
        "text-classification",
        "AutoTokenizer.from_pretrained(model_max_length=16)",
        lambda lib, m: dict(lib.AutoTokenizer.from_pretrained(str(m), model_max_length=16)(TEXT * 9, truncation=True)),
    ),
    ("text-classification", "tokenizer.vocab", lambda lib, m: _tok(lib, m).vocab),
    (
        "text-classification",
        "tokenizer.added_tokens_decoder ids",
        lambda lib, m: sorted(_tok(lib, m).added_tokens_decoder),
    ),
    (
        "text-classification",
        "tokenizer([(text, pair), text])",
        lambda lib, m: dict(_tok(lib, m)([(TEXT, CONTEXT), "a b", ["c", "d e"]])),
    ),
    (
        "question-answering",
        "X= keyword (older transformers)",
        lambda lib, m: _pipe(lib, "question-answering", m)(X={"question": "Who built it?", "context": CONTEXT}),
    ),
    (
        "question-answering",
        "data= keyword (older transformers)",
        lambda lib, m: _pipe(lib, "question-answering", m)(data=[{"question": "Who?", "context": CONTEXT}] * 2),
    ),
    # a decoder's tokenizer has no pad token: None there too, and the course's fix (pad_token = eos_token) works
    (
        "gpt2:text-generation",
        "tokenizer pad_token, pad_token_id",
        lambda lib, m: (_tok(lib, m).pad_token, _tok(lib, m).pad_token_id),
    ),
    (
        "gpt2:text-generation",
        "tokenizer.pad_token = eos_token, padding_side='left'",
        lambda lib, m: (
            lambda t: (
                setattr(t, "pad_token", t.eos_token),
                setattr(t, "padding_side", "left"),
                dict(t(TEXTS, padding=True)),
                t.pad_token_id,
            )[-2:]
        )(_tok(lib, m)),
    ),
    (
        "gpt2:text-generation",
        "tokenizer.add_special_tokens({'pad_token': eos})",
        lambda lib, m: (
            lambda t: (t.add_special_tokens({"pad_token": t.eos_token}), t.pad_token_id, dict(t(TEXTS, padding=True)))
        )(_tok(lib, m)),
    ),
    (
        "gpt2:text-generation",
        "text-generation arguments at construction",
        lambda lib, m: _pipe(lib, "text-generation", m, max_new_tokens=4, do_sample=False)("Hello"),
    ),
    (
        "gpt2:text-generation",
        "text-generation generator in, iterator out",
        lambda lib, m: list(
            _pipe(lib, "text-generation", m)((t for t in ["Hello", "The cat"]), max_new_tokens=4, do_sample=False)
        ),
    ),
    (
        "gpt2:text-generation",
        "text-generation batch_size (pad_token_id set)",
        lambda lib, m: (
            lambda p: (
                setattr(p.tokenizer, "pad_token_id", p.tokenizer.eos_token_id),
                p(["Hello", "The cat"], max_new_tokens=4, do_sample=False, batch_size=2),
            )[-1]
        )(_pipe(lib, "text-generation", m)),
    ),
    # the rest of the compatibility table's rows
    (
        "text-classification",
        "construction: batch_size, trust_remote_code, revision, num_workers",
        lambda lib, m: _pipe(
            lib, "sentiment-analysis", m, batch_size=2, trust_remote_code=True, revision="main", num_workers=1
        )(TEXTS),
    ),
    (
        "zero-shot-classification",
        "hypothesis_template, comma-separated labels, multi_class",
        lambda lib, m: _pipe(lib, "zero-shot-classification", m)(
            TEXTS, candidate_labels="politics, sports", hypothesis_template="This is about {}.", multi_class=True
        ),
    ),
    ("token-classification", "ignore_labels=[]", lambda lib, m: _pipe(lib, "ner", m)(TEXT, ignore_labels=[])),
    *[
        ("text-classification", f"tokenizer {name}", (lambda call_: lambda lib, m: call_(_tok(lib, m)))(call))
        for name, call in [
            (
                "return_attention_mask=False, return_token_type_ids=False",
                lambda t: dict(t(TEXT, return_attention_mask=False, return_token_type_ids=False)),
            ),
            (
                "char_to_word, token_to_sequence",
                lambda t: (t(TEXTS).char_to_word(1, 5), t(TEXT, "b").token_to_sequence(13)),
            ),
            (
                "get_vocab, convert_tokens_to_string",
                lambda t: (len(t.get_vocab()), t.convert_tokens_to_string(t.tokenize(TEXT))),
            ),
            (
                "special_tokens_map, all_special_tokens, model_input_names",
                lambda t: (t.special_tokens_map, t.all_special_tokens, t.model_input_names),
            ),
        ]
    ],
    (
        "gpt2:text-generation",
        "tokenizer bos/eos of a decoder",
        lambda lib, m: (lambda t: (t.bos_token, t.eos_token, t.bos_token_id, t.eos_token_id))(_tok(lib, m)),
    ),
    ("text-classification", "device='cpu'", lambda lib, m: _pipe(lib, "text-classification", m, device="cpu")(TEXT)),
    (
        "text-classification",
        "model_kwargs={}",
        lambda lib, m: _pipe(lib, "text-classification", m, model_kwargs={})(TEXT),
    ),
    (
        "text-classification",
        "return_all_scores=False",
        lambda lib, m: _pipe(lib, "sentiment-analysis", m)(TEXTS, return_all_scores=False),
    ),
    (
        "text-classification",
        "truncation='do_not_truncate'",
        lambda lib, m: _pipe(lib, "sentiment-analysis", m)(TEXTS, truncation="do_not_truncate"),
    ),
    (
        "feature-extraction",
        "return_tensors=True",
        lambda lib, m: _pipe(lib, "feature-extraction", m)(TEXTS, return_tensors=True),
    ),
    (
        "fill-mask",
        "targets=, top_k=1",
        lambda lib, m: _pipe(lib, "fill-mask", m)(f"Hello {_mask(lib, m)} world.", targets=["the", "a"], top_k=1),
    ),
    (
        "fill-mask",
        "two masks",
        lambda lib, m: _pipe(lib, "fill-mask", m)(f"Hello {_mask(lib, m)} {_mask(lib, m)} world."),
    ),
    (
        "token-classification",
        "aggregation_strategy enum",
        lambda lib, m: _pipe(lib, "ner", m)(TEXT, aggregation_strategy=_aggregation("SIMPLE")),
    ),
    (
        "token-classification",
        "stride, max",
        lambda lib, m: _pipe(lib, "ner", m)(TEXT * 5, stride=4, aggregation_strategy="max"),
    ),
    (
        "question-answering",
        "question=[...], context=str",
        lambda lib, m: _pipe(lib, "question-answering", m)(question=["Who built it?", "Where?"], context=CONTEXT),
    ),
    (
        "question-answering",
        "positional (question, context)",
        lambda lib, m: _pipe(lib, "question-answering", m)("Who built it?", CONTEXT),
    ),
    (
        "gpt2:text-generation",
        "text-generation return_full_text=False",
        lambda lib, m: _pipe(lib, "text-generation", m)(
            "Hello", max_new_tokens=5, do_sample=False, return_full_text=False
        ),
    ),
    ("text-classification", "tokenizer .encodings", lambda lib, m: [e.ids for e in _tok(lib, m)(TEXTS).encodings]),
    # models and their config
    *[
        (
            "text-classification",
            f"model.config.{a}",
            (lambda a_: lambda lib, m: getattr(_model(lib, "AutoModelForSequenceClassification", m).config, a_))(a),
        )
        for a in ("id2label", "label2id", "num_labels", "hidden_size", "model_type")
    ],
    (
        "text-classification",
        "pipe.model.config.id2label",
        lambda lib, m: _pipe(lib, "sentiment-analysis", m).model.config.id2label,
    ),
    (
        "text-classification",
        "outputs[0] / outputs['logits']",
        lambda lib, m: _model_outputs(
            lib, m, "AutoModelForSequenceClassification", lambda o: (o[0], o["logits"], o.logits, o.to_tuple()[0])
        ),
    ),
    (
        "token-classification",
        "AutoModelForTokenClassification",
        lambda lib, m: _model_outputs(lib, m, "AutoModelForTokenClassification", lambda o: (o[0], o.logits)),
    ),
    (
        "fill-mask",
        "AutoModelForMaskedLM",
        lambda lib, m: _model_outputs(lib, m, "AutoModelForMaskedLM", lambda o: (o[0], o["logits"])),
    ),
    (
        "question-answering",
        "AutoModelForQuestionAnswering",
        lambda lib, m: _model_outputs(
            lib, m, "AutoModelForQuestionAnswering", lambda o: (o[0], o[1], o.start_logits, o.end_logits)
        ),
    ),
    (
        "feature-extraction",
        "AutoModel last_hidden_state",
        lambda lib, m: _model_outputs(lib, m, "AutoModel", lambda o: (o[0], o.last_hidden_state)),
    ),
]


def _model_outputs(lib, m, cls, pick):
    tok = lib.AutoTokenizer.from_pretrained(str(m))
    model = _model(lib, cls, m)
    if lib is onnxpipe:
        return pick(model(**tok(TEXTS, padding=True, return_tensors="np")))
    import torch

    with torch.no_grad():
        return tuple(x.numpy() for x in pick(model(**tok(TEXTS, padding=True, return_tensors="pt"))))


@pytest.fixture(scope="module")
def folders(tiny_checkpoint, tiny_export):
    def make(head):  # "text-classification" (BERT) or "roberta:text-classification"
        arch, _, head = head.rpartition(":")
        precisions = "fp32" if head == "text-generation" else "int8,fp32"  # the folders test_generate.py uses
        return tiny_checkpoint(arch or "bert", head), tiny_export(arch or "bert", head, precisions)

    return make


@pytest.mark.torch
@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning", "ignore::DeprecationWarning")
@pytest.mark.parametrize("head,name,idiom", IDIOMS, ids=[f"{h}-{n}" for h, n, _ in IDIOMS])
def test_idiom_matches_transformers(folders, head, name, idiom):
    import transformers

    transformers.logging.set_verbosity_error()
    checkpoint, folder = folders(head)
    expected, got = idiom(transformers, checkpoint), idiom(onnxpipe, folder)
    assert first_difference(expected, got) is None, first_difference(expected, got)


# -- where transformers raises, onnxpipe raises too: a typed error that says why and what to do instead ---------
BOTH_RAISE = [
    (
        "text-classification",
        "tokenizer only_second, one long text",
        lambda lib, m: _tok(lib, m)(TEXT * 30, truncation="only_second"),
        onnxpipe.errors.InputTooLongError,
        "input 0 .*no text_pair",
    ),
    (
        "text-classification",
        "tokenizer only_first, first text too short",
        lambda lib, m: _tok(lib, m)(["a", "short"], ["b", TEXT * 30], truncation="only_first"),
        onnxpipe.errors.InputTooLongError,
        "input 1 .*first text is too short",
    ),
    (
        "text-classification",
        "truncation='only_second' on a long text without pair",
        lambda lib, m: _pipe(lib, "text-classification", m)(["ok", TEXT * 30], truncation="only_second"),
        onnxpipe.errors.InputTooLongError,
        "input 1 .*no text_pair",
    ),
    (
        "text-classification",
        "truncation='only_first' with a too short first text",
        lambda lib, m: _pipe(lib, "text-classification", m)(
            [{"text": "ok", "text_pair": "fine"}, {"text": "short", "text_pair": TEXT * 30}], truncation="only_first"
        ),
        onnxpipe.errors.InputTooLongError,
        "input 1 .*first text is too short",
    ),
    (
        "feature-extraction",
        "truncation given twice",
        lambda lib, m: _pipe(lib, "feature-extraction", m)(TEXT, truncation=True, tokenize_kwargs={"truncation": True}),
        ValueError,
        "twice",
    ),
    (
        "token-classification",
        "padding= (token-classification takes no tokenizer arguments)",
        lambda lib, m: _pipe(lib, "ner", m)(TEXT, padding=True),
        TypeError,
        "refuses them too.*stride",
    ),
    *[
        (
            "token-classification",
            f"{name}= (token-classification takes no tokenizer arguments)",
            (lambda kw_: lambda lib, m: _pipe(lib, "ner", m)(TEXT, **kw_))({name: value}),
            TypeError,
            "refuses them too",
        )
        for name, value in [("max_length", 10), ("truncation", True)]
    ],
    (
        "token-classification",
        "is_split_into_words given a str",
        lambda lib, m: _pipe(lib, "ner", m)(TEXT, is_split_into_words=True),
        TypeError,
        "list of words",
    ),
    (
        "roberta:token-classification",
        "is_split_into_words, byte-level BPE without add_prefix_space",
        lambda lib, m: _pipe(lib, "ner", m)(WORDS, is_split_into_words=True),
        ValueError,
        "add_prefix_space",
    ),
    (
        "gpt2:text-generation",
        "tokenizer padding without a pad token",
        lambda lib, m: _tok(lib, m)(TEXTS, padding=True),
        ValueError,
        "padding token",
    ),
    (
        "gpt2:text-generation",
        "tokenizer.pad without a pad token",
        lambda lib, m: (lambda t: t.pad(t(TEXTS)))(_tok(lib, m)),
        ValueError,
        "padding token",
    ),
    (
        "text-classification",
        "tokenizer stride >= window",
        lambda lib, m: _tok(lib, m)(CONTEXT, truncation=True, max_length=10, stride=8, return_overflowing_tokens=True),
        ValueError,
        "stride=8",
    ),
    (
        "text-classification",
        "tokenizer pad_to_multiple_of not dividing max_length",
        lambda lib, m: _tok(lib, m)(TEXTS, padding=True, truncation=True, pad_to_multiple_of=3),
        ValueError,
        "not a multiple of pad_to_multiple_of",
    ),
    (
        "text-classification",
        "tokenizer is_split_into_words given a str",
        lambda lib, m: _tok(lib, m)(TEXT, is_split_into_words=True),
        TypeError,
        "list of words",
    ),
    (
        "roberta:text-classification",
        "tokenizer is_split_into_words, byte-level BPE without add_prefix_space",
        lambda lib, m: _tok(lib, m)(WORDS, is_split_into_words=True),
        ValueError,
        "add_prefix_space",
    ),
]


@pytest.mark.torch
@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning", "ignore::DeprecationWarning")
@pytest.mark.parametrize("head,name,call,error,match", BOTH_RAISE, ids=[f"{r[0]}-{r[1]}" for r in BOTH_RAISE])
def test_raises_where_transformers_raises(folders, head, name, call, error, match):
    import transformers

    transformers.logging.set_verbosity_error()
    checkpoint, folder = folders(head)
    with pytest.raises(BaseException):  # noqa: B017  # transformers' errors are bare Exceptions, even panics
        call(transformers, checkpoint)
    with pytest.raises(error, match=match):
        call(onnxpipe, folder)


# -- where transformers ignores an argument (answering as if it were not given), onnxpipe refuses it -----------
IGNORED_BY_TRANSFORMERS = [
    (
        "feature-extraction",
        "padding given directly",
        lambda lib, m: _pipe(lib, "feature-extraction", m)(TEXT, padding=True),
        TypeError,
        r"tokenize_kwargs=\{'padding'",
    ),
    (
        "feature-extraction",
        "max_length given directly",
        lambda lib, m: _pipe(lib, "feature-extraction", m)(TEXT, max_length=5),
        TypeError,
        r"tokenize_kwargs=\{'max_length'",
    ),
    (
        "zero-shot-classification",
        "truncation='only_second'",
        lambda lib, m: _pipe(lib, "zero-shot-classification", m)(
            TEXT, candidate_labels=LABELS, truncation="only_second"
        ),
        ValueError,
        "never the hypothesis",
    ),
    (
        "zero-shot-classification",
        "truncation=False",
        lambda lib, m: _pipe(lib, "zero-shot-classification", m)(TEXT, candidate_labels=LABELS, truncation=False),
        ValueError,
        "always cuts the text",
    ),
    (
        "zero-shot-classification",
        "max_length",
        lambda lib, m: _pipe(lib, "zero-shot-classification", m)(TEXT, candidate_labels=LABELS, max_length=5),
        TypeError,
        "max_length",
    ),
    (
        "question-answering",
        "truncation='only_first'",
        lambda lib, m: _pipe(lib, "question-answering", m)(question="Who?", context=CONTEXT, truncation="only_first"),
        ValueError,
        "never cuts the question",
    ),
    (
        "question-answering",
        "max_length (the window is max_seq_len)",
        lambda lib, m: _pipe(lib, "question-answering", m)(question="Who?", context=CONTEXT, max_length=10),
        TypeError,
        "max_seq_len",
    ),
    (
        "token-classification",
        "is_split_into_words given to pipeline()",
        lambda lib, m: _pipe(lib, "ner", m, is_split_into_words=True)(WORDS),
        TypeError,
        "with each call",
    ),
]


@pytest.mark.torch
@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning", "ignore::DeprecationWarning")
@pytest.mark.parametrize(
    "head,name,call,error,match", IGNORED_BY_TRANSFORMERS, ids=[f"{r[0]}-{r[1]}" for r in IGNORED_BY_TRANSFORMERS]
)
def test_refused_where_transformers_ignores(folders, head, name, call, error, match):
    import transformers

    transformers.logging.set_verbosity_error()
    checkpoint, folder = folders(head)
    call(transformers, checkpoint)  # runs there, the argument unread
    with pytest.raises(error, match=match):
        call(onnxpipe, folder)


# -- transformers' own objects and PyTorch-only arguments: refused, saying what to pass instead ------------------
REFUSED_TORCH = [
    (
        "text-classification",
        "a PyTorch model",
        lambda ckpt, m: onnxpipe.pipeline(
            "text-classification",
            model=__import__("transformers").AutoModelForSequenceClassification.from_pretrained(ckpt),
        ),
        TypeError,
        "onnxpipe model",
    ),
    (
        "text-classification",
        "a tokenizer of another folder (a copy of it)",
        lambda ckpt, m: onnxpipe.pipeline("sentiment-analysis", model=m, tokenizer=_copy(m)),
        ValueError,
        "is not the model folder",
    ),
    (
        "text-classification",
        "a transformers tokenizer",
        lambda ckpt, m: onnxpipe.pipeline(
            "text-classification", model=m, tokenizer=__import__("transformers").AutoTokenizer.from_pretrained(ckpt)
        ),
        TypeError,
        "onnxpipe AutoTokenizer",
    ),
    (
        "text-classification",
        "use_fast=False",
        lambda ckpt, m: onnxpipe.pipeline("text-classification", model=m, use_fast=False),
        ValueError,
        "fast",
    ),
    (
        "text-classification",
        "config=",
        lambda ckpt, m: onnxpipe.pipeline("text-classification", model=m, config=ckpt),
        ValueError,
        "config.json",
    ),
    (
        "text-classification",
        "device_map=",
        lambda ckpt, m: onnxpipe.pipeline("text-classification", model=m, device_map="auto"),
        TypeError,
        "precision=",
    ),
    (
        "text-classification",
        "torch_dtype=",
        lambda ckpt, m: onnxpipe.pipeline("text-classification", model=m, torch_dtype="float16"),
        TypeError,
        "precision=",
    ),
    (
        "text-classification",
        "model.to(...)",
        lambda ckpt, m: onnxpipe.AutoModel.from_pretrained(m).to("cpu"),
        AttributeError,
        "to",
    ),
    (
        "text-classification",
        "model.generate",
        lambda ckpt, m: onnxpipe.AutoModelForSequenceClassification.from_pretrained(m).generate,
        AttributeError,
        "generate",
    ),
    (
        "text-classification",
        "max_length above the export's",
        lambda ckpt, m: onnxpipe.pipeline("sentiment-analysis", model=m)(TEXT, max_length=10_000),
        ValueError,
        "maximum is the upper bound",
    ),
    (
        "text-classification",
        "model.eval()",
        lambda ckpt, m: onnxpipe.AutoModel.from_pretrained(m).eval(),
        AttributeError,
        "eval",
    ),
    (
        "text-classification",
        "tokenizer.save_pretrained",
        lambda ckpt, m: onnxpipe.AutoTokenizer.from_pretrained(m).save_pretrained("x"),
        NotImplementedError,
        "copy the folder",
    ),
    (
        "text-classification",
        "tokenizer.add_tokens",
        lambda ckpt, m: onnxpipe.AutoTokenizer.from_pretrained(m).add_tokens(["new"]),
        NotImplementedError,
        "export it again",
    ),
    (
        "text-classification",
        "tokenizer.add_special_tokens, a new token",
        lambda ckpt, m: onnxpipe.AutoTokenizer.from_pretrained(m).add_special_tokens({"pad_token": "<new-pad>"}),
        NotImplementedError,
        "cannot grow",
    ),
    (
        "text-classification",
        "num_workers= at call",
        lambda ckpt, m: onnxpipe.pipeline("sentiment-analysis", model=m)(TEXT, num_workers=1),
        TypeError,
        "num_workers",
    ),
    (
        "text-classification",
        "AutoModel*.from_pretrained(num_labels=...)",
        lambda ckpt, m: onnxpipe.AutoModelForSequenceClassification.from_pretrained(m, num_labels=2),
        TypeError,
        "num_labels",
    ),
    (
        "text-classification",
        "model(..., output_hidden_states=True)",
        lambda ckpt, m: onnxpipe.AutoModel.from_pretrained(m)(
            **onnxpipe.AutoTokenizer.from_pretrained(m)(TEXT, return_tensors="np"), output_hidden_states=True
        ),
        TypeError,
        "output_hidden_states",
    ),
    *[
        (
            "text-classification",
            f"tokenizer.{name}",
            (lambda name_: lambda ckpt, m: getattr(onnxpipe.AutoTokenizer.from_pretrained(m), name_))(name),
            AttributeError,
            name,
        )
        for name in ("build_inputs_with_special_tokens", "get_special_tokens_mask", "additional_special_tokens")
    ],
    (
        "token-classification",
        "offset_mapping=",
        lambda ckpt, m: onnxpipe.pipeline("ner", model=m)(TEXT, offset_mapping=[(0, 2)]),
        TypeError,
        "offset_mapping",
    ),
    (
        "gpt2:text-generation",
        "max_length=",
        lambda ckpt, m: onnxpipe.pipeline("text-generation", model=m, precision="fp32")("Hi", max_length=20),
        TypeError,
        "max_new_tokens",
    ),
    (
        "gpt2:text-generation",
        "num_beams=",
        lambda ckpt, m: onnxpipe.pipeline("text-generation", model=m, precision="fp32")("Hi", num_beams=2),
        TypeError,
        "beam search",
    ),
    (
        "gpt2:text-generation",
        "return_tensors=",
        lambda ckpt, m: onnxpipe.pipeline("text-generation", model=m, precision="fp32")("Hi", return_tensors=True),
        TypeError,
        "return_tensors",
    ),
]


@pytest.mark.torch
@pytest.mark.parametrize("head,name,call,error,match", REFUSED_TORCH, ids=[f"{r[0]}-{r[1]}" for r in REFUSED_TORCH])
def test_refused_torch_objects_and_arguments(folders, head, name, call, error, match):
    checkpoint, folder = folders(head)
    with pytest.raises(error, match=match):
        call(str(checkpoint), folder)


# -- what cannot be the same says so ----------------------------------------------------------------------------
REFUSED = [
    (
        "return_tensors='pt'",
        lambda m: onnxpipe.AutoTokenizer.from_pretrained(str(m))(TEXT, return_tensors="pt"),
        ValueError,
        "numpy only",
    ),
    (
        "framework='pt'",
        lambda m: onnxpipe.pipeline("sentiment-analysis", model=m, framework="pt"),
        ValueError,
        "without",
    ),
    ("device=3", lambda m: onnxpipe.pipeline("sentiment-analysis", model=m, device=3), ValueError, "one GPU"),
    (
        "AutoTokenizer.from_pretrained(do_lower_case=False)",
        lambda m: onnxpipe.AutoTokenizer.from_pretrained(m, do_lower_case=False),
        TypeError,
        "frozen",
    ),
    (
        "AutoTokenizer.from_pretrained(use_fast=False)",
        lambda m: onnxpipe.AutoTokenizer.from_pretrained(m, use_fast=False),
        ValueError,
        "fast",
    ),
    (
        "tokenizer text_target=",
        lambda m: onnxpipe.AutoTokenizer.from_pretrained(m)(TEXT, text_target="x"),
        TypeError,
        "text_target",
    ),
    (
        "truncation_side='left'",
        lambda m: setattr(onnxpipe.AutoTokenizer.from_pretrained(m), "truncation_side", "left"),
        ValueError,
        r"\('right'\) only",
    ),
    (
        "padding_side='top'",
        lambda m: onnxpipe.AutoTokenizer.from_pretrained(m)(TEXTS, padding=True, padding_side="top"),
        ValueError,
        "'right' or 'left'",
    ),
    (
        "a head the folder lacks",
        lambda m: onnxpipe.AutoModelForTokenClassification.from_pretrained(m),
        onnxpipe.errors.TaskMismatchError,
        "token-classification",
    ),
    (
        "config is read-only",
        lambda m: setattr(onnxpipe.AutoModel.from_pretrained(m).config, "num_labels", 5),
        AttributeError,
        "read-only",
    ),
    (
        "unknown call argument",
        lambda m: onnxpipe.pipeline("sentiment-analysis", model=m)(TEXT, nope=1),
        TypeError,
        "nope",
    ),
    (
        "unknown construction argument",
        lambda m: onnxpipe.pipeline("sentiment-analysis", model=m, nope=1),
        TypeError,
        "nope",
    ),
]


@pytest.mark.parametrize("name,call,error,match", REFUSED, ids=[r[0] for r in REFUSED])
def test_refused_with_a_reason(tiny_export, name, call, error, match):
    with pytest.raises(error, match=match):
        call(tiny_export("bert", "text-classification", "int8,fp32"))


def test_iterable_in_iterator_out_is_lazy(tiny_export):
    pipe = onnxpipe.pipeline("sentiment-analysis", model=tiny_export("bert", "text-classification", "int8,fp32"))
    seen = []

    def texts():
        for t in TEXTS:
            seen.append(t)
            yield t

    results = pipe(texts())
    assert not seen  # nothing read before the first result is asked for
    assert [r["label"] for r in results] == [r[0]["label"] for r in (pipe(t) for t in TEXTS)]
    with pytest.raises(TypeError, match="nope"):  # arguments are checked at the call, not at the first next()
        pipe(texts(), nope=1)


def test_any_iterable_streams(tiny_export):
    """Not only generators: any iterable that is not a list/tuple/str (a datasets column, a reader) streams."""

    class Column:  # what a datasets column offers: len, indexing, iteration
        def __init__(self, items):
            self.items = items

        def __len__(self):
            return len(self.items)

        def __getitem__(self, i):
            return self.items[i]

        def __iter__(self):
            return iter(self.items)

    folder = tiny_export("bert", "text-classification", "int8,fp32")
    pipe = onnxpipe.pipeline("sentiment-analysis", model=folder, precision="fp32")
    results = pipe(Column(TEXTS), batch_size=2)
    assert not isinstance(results, list)  # an iterator, as for a generator
    assert list(results) == pipe(TEXTS, batch_size=2)
