"""question-answering: extractive answers, with long contexts read in overlapping ``doc_stride`` windows.

Span scoring (``_spans.py``) is transformers' own, line for line; windows, p_mask, word alignment and the
merging of equal answers across windows follow its QuestionAnsweringPipeline, so the outputs match.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from tokenizers import Encoding

from .._inputs import clean_text, int_option
from ._base import Pipeline
from ._spans import select_starts_ends
from ._text import tokenizer_config


class QuestionAnsweringPipeline(Pipeline):
    """Answers as ``{'score', 'start', 'end', 'answer'}``, with character offsets into the context.

    Example:
        >>> qa = pipeline("question-answering", model="models/distilbert-base-cased-distilled-squad")
        >>> qa(question="Where do I live?", context="My name is Wolfgang and I live in Berlin")
        {'score': 0.9..., 'start': 34, 'end': 40, 'answer': 'Berlin'}
    """

    task = "question-answering"
    output_names = ("start_logits", "end_logits")

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.cls_id = tokenizer_config(self.model.manifest).get("cls_token_id")

    def __call__(self, *args: Any, question: Any = None, context: Any = None, **kwargs: Any) -> Any:
        for legacy in ("X", "data"):  # transformers' older keywords for the inputs
            if legacy in kwargs:
                if args:
                    raise TypeError(f"pass the inputs once: positionally or as {legacy}=, not both")
                args = (kwargs.pop(legacy),)
        if args and (question is not None or context is not None):
            raise TypeError("pass question=/context=, or inputs as dicts, not both")
        if len(args) == 2 and all(isinstance(a, str) for a in args):
            args = ({"question": args[0], "context": args[1]},)
        elif question is not None or context is not None:
            args = (_pairs(question, context),)
        if len(args) != 1:
            raise TypeError("pass question= and context=, a {'question': ..., 'context': ...} dict, or a list of them")
        inputs = args[0]
        # As transformers: a list of one input gives a bare result.
        return super().__call__(inputs[0] if isinstance(inputs, list) and len(inputs) == 1 else inputs, **kwargs)

    def _normalize(self, inputs: Any) -> tuple[bool, list[Any]]:
        if isinstance(inputs, dict):
            return True, [inputs]
        if isinstance(inputs, (list, tuple)):
            return False, list(inputs)
        raise TypeError(
            f"inputs must be a {{'question': ..., 'context': ...}} dict or a list of them, got {type(inputs).__name__}"
        )

    def _sanitize_parameters(
        self,
        top_k: int | None = 1,
        doc_stride: int | None = None,
        max_answer_len: int = 15,
        max_seq_len: int | None = None,
        max_question_len: int = 64,
        handle_impossible_answer: bool = False,
        align_to_words: bool = True,
        padding: Any = None,
        truncation: Any = True,
        topk: int | None = None,
        **kwargs: Any,
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        # max_question_len is accepted for compatibility: with fast tokenizers transformers ignores it too.
        if kwargs:
            hint = " (the window length here is max_seq_len)" if "max_length" in kwargs else ""
            raise TypeError(
                f"unexpected arguments {sorted(kwargs)}{hint}; question-answering takes top_k, doc_stride, "
                "max_answer_len, max_seq_len, max_question_len, handle_impossible_answer, align_to_words, padding"
            )
        # transformers always cuts the context only ("only_second") into doc_stride windows, whatever truncation=
        if getattr(truncation, "value", truncation) not in (True, "only_second"):
            raise ValueError(
                f"truncation={truncation!r}: question-answering always reads a long context in overlapping windows "
                "(max_seq_len, doc_stride) and never cuts the question, as transformers does; use truncation=True "
                "or 'only_second'"
            )
        padding = getattr(padding, "value", padding)
        if padding not in (None, True, False, "longest", "max_length", "do_not_pad"):
            raise ValueError(f"padding={padding!r}: use True/'longest', 'max_length' or False")
        if topk is not None:  # transformers' deprecated name, with its warning
            warnings.warn("topk parameter is deprecated, use top_k instead", UserWarning, stacklevel=3)
            top_k = topk if top_k is None or top_k == 1 else top_k
        top_k = 1 if top_k is None else top_k
        top_k, max_answer_len = int_option("top_k", top_k), int_option("max_answer_len", max_answer_len)
        # Checked here, not in the Rust tokenizer: 0 meant the model maximum, a negative value an OverflowError,
        # and a stride that leaves no new context per window a panic.
        specials, limit = self.tokenizer.num_special_tokens_to_add(pair=True), self.tokenizer.model_max_length
        if max_seq_len is None:
            max_seq_len = min(limit, 384)
        else:
            max_seq_len = min(
                int_option(
                    "max_seq_len",
                    max_seq_len,
                    specials + 2,
                    None,
                    f"room for {specials} special tokens, a question and a context",
                ),
                limit,
            )
        if doc_stride is None:
            doc_stride = min(max_seq_len // 2, 128, max_seq_len - specials - 2)
        else:
            doc_stride = int_option(
                "doc_stride",
                doc_stride,
                0,
                max_seq_len - specials - 2,
                f"windows of max_seq_len={max_seq_len} tokens must each add new context",
            )
        return (
            {"max_seq_len": max_seq_len, "doc_stride": doc_stride},
            {
                "top_k": top_k,
                "max_answer_len": max_answer_len,
                "impossible": bool(handle_impossible_answer),
                "align": bool(align_to_words),
                # the width transformers pads each window to; it takes part in the scores' ranking of ties
                "pad_to": max_seq_len
                if padding == "max_length"
                else "longest"
                if padding in (True, "longest")
                else None,
            },
        )

    def preprocess(  # type: ignore[override]  # takes its windowing, from its _sanitize_parameters
        self, items: Sequence[Any], offset: int, max_seq_len: int = 384, doc_stride: int = 128
    ) -> list[tuple[str, list[Encoding]]]:
        pairs = []
        for i, item in enumerate(items):
            if not isinstance(item, dict) or set(item) != {"question", "context"}:
                raise ValueError(
                    f"input {offset + i}: expected a dict with the keys 'question' and 'context', "
                    f"got {sorted(item) if isinstance(item, dict) else type(item).__name__}"
                )
            question, context = (clean_text(item[k], offset + i, k) for k in ("question", "context"))
            if not question or not context:
                raise ValueError(f"input {offset + i}: question and context must not be empty")
            pairs.append((question, context))
        try:
            encodings = self.tokenizer.encode_batch(
                [q for q, _ in pairs],
                [c for _, c in pairs],
                max_length=max_seq_len,
                stride=doc_stride,
                strategy="only_second",
            )
        except BaseException as e:  # the Rust tokenizer: a question leaving no room for the context (an error),
            if not isinstance(e, Exception) and type(e).__name__ != "PanicException":  # or a stride (a panic)
                raise
            raise ValueError(
                f"inputs {offset}..{offset + len(pairs) - 1}: {e}. A question must leave room for "
                f"more than doc_stride={doc_stride} context tokens within max_seq_len={max_seq_len}; "
                "shorten it, raise max_seq_len or lower doc_stride"
            ) from e
        return [(context, [e, *e.overflowing]) for (_, context), e in zip(pairs, encodings)]

    def gather(  # type: ignore[override]  # takes only the gather params its _sanitize_parameters returns
        self,
        context: str,
        encodings: list[Encoding],
        rows: list[dict[str, np.ndarray]],
        top_k: int = 1,
        max_answer_len: int = 15,
        impossible: bool = False,
        align: bool = True,
        pad_to: int | str | None = None,
    ) -> Any:
        answers: list[dict[str, Any]]
        min_null_score, answers = 1000000.0, []
        width = len(encodings[0].ids) if pad_to == "longest" else pad_to
        for enc, row in zip(encodings, rows):
            # p_mask: 1 where an answer cannot be (question, special tokens), but the CLS token stays allowed.
            p_mask = np.array([s != 1 for s in enc.sequence_ids], dtype=np.int64)
            if self.cls_id is not None:
                p_mask[np.array(enc.ids) == self.cls_id] = 0
            start_logits, end_logits = row["start_logits"], row["end_logits"]
            attention = np.array(enc.attention_mask)
            if isinstance(width, int) and width > len(p_mask):  # padding as transformers pads: never an answer
                extra = (0, width - len(p_mask))
                start_logits, end_logits = np.pad(start_logits, extra), np.pad(end_logits, extra)
                p_mask, attention = np.pad(p_mask, extra, constant_values=1), np.pad(attention, extra)
            starts, ends, scores, min_null_score = select_starts_ends(
                start_logits[None].astype(np.float32),
                end_logits[None].astype(np.float32),
                p_mask,
                attention,
                min_null_score,
                top_k * 2 + 10 if align else top_k,
                impossible,
                max_answer_len,
            )
            for s, e, score in zip(starts, ends, scores):
                start, end = _char_span(enc, int(s), int(e), align)
                same = next((a for a in answers if a["answer"].lower() == context[start:end].lower()), None)
                if same:
                    same["score"] += score.item()
                else:
                    answers.append({"score": score.item(), "start": start, "end": end, "answer": context[start:end]})
        if impossible:
            answers.append({"score": min_null_score, "start": 0, "end": 0, "answer": ""})
        answers = sorted(answers, key=lambda a: a["score"], reverse=True)[:top_k]
        return answers[0] if len(answers) == 1 else answers


def _pairs(question: Any, context: Any) -> Any:
    if isinstance(question, str) and isinstance(context, str):
        return {"question": question, "context": context}
    if isinstance(question, list) and isinstance(context, str):
        return [{"question": q, "context": context} for q in question]
    if isinstance(question, list) and isinstance(context, list) and len(question) == len(context):
        return [{"question": q, "context": c} for q, c in zip(question, context)]
    raise ValueError(
        "question/context: pass two strings, a list of questions and one context, or two lists of the same length"
    )


def _char_span(enc: Encoding, s: int, e: int, align: bool) -> tuple[int, int]:
    if align:
        try:  # whole words of the context; special tokens have no word, so fall back on token offsets
            return enc.word_to_chars(enc.token_to_word(s), 1)[0], enc.word_to_chars(enc.token_to_word(e), 1)[1]
        except Exception:
            pass
    return enc.offsets[s][0], enc.offsets[e][1]
