"""text-classification / sentiment-analysis, with transformers' output format and top_k semantics."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import Any

import numpy as np
from tokenizers import Encoding

from .._inputs import clean_text
from ._base import Pipeline
from ._text import sigmoid, softmax

_FUNCTIONS = ("softmax", "sigmoid", "none")


class TextClassificationPipeline(Pipeline):
    """Labels and scores per text (or per ``{"text": ..., "text_pair": ...}``), like transformers.

    Example:
        >>> classifier = pipeline("sentiment-analysis")
        >>> classifier("I hate this so much!")
        [{'label': 'NEGATIVE', 'score': 0.99...}]
        >>> classifier("I hate this so much!", top_k=None)   # every label, best first
    """

    task = "text-classification"
    output_names = ("logits",)

    def _normalize(self, inputs: Any) -> tuple[bool, list[Any]]:
        if isinstance(inputs, dict):
            return True, [inputs]
        return super()._normalize(inputs)

    def _finish(self, results: list[Any], single: bool, inputs: Any, kwargs: dict[str, Any]) -> Any:
        # transformers wraps a single str input's result in a list unless top_k was given.
        if isinstance(inputs, str) and "top_k" not in kwargs:
            return results
        return super()._finish(results, single, inputs, kwargs)

    def _sanitize_parameters(
        self,
        top_k: Any = "",
        function_to_apply: str | None = None,
        truncation: Any = None,
        return_all_scores: bool | None = None,
        padding: Any = None,
        max_length: int | None = None,
        tokenize_kwargs: dict[str, Any] | None = None,
        text_pair: str | None = None,
        **kwargs: Any,
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        if kwargs:
            raise TypeError(
                f"unexpected arguments {sorted(kwargs)}; text-classification takes top_k, function_to_apply, "
                "truncation, return_all_scores, padding, max_length, text_pair, tokenize_kwargs"
            )
        if function_to_apply is not None:
            function_to_apply = str(getattr(function_to_apply, "value", function_to_apply)).lower()
            if function_to_apply not in _FUNCTIONS:
                raise ValueError(f"function_to_apply={function_to_apply!r}; use one of {list(_FUNCTIONS)}")
        legacy = top_k == ""
        if not legacy and top_k is not None and (not isinstance(top_k, int) or top_k < 1):
            raise ValueError(f"top_k={top_k!r}; use a positive int, or None for every label")
        if legacy and return_all_scores is not None:  # transformers' deprecated form: every label, old shapes
            top_k = None if return_all_scores else 1
        pre = self._tokenize_options(truncation, padding, max_length, tokenize_kwargs)
        if text_pair is not None:  # as transformers, the tokenizer's text_pair: the second text of every input
            if not isinstance(text_pair, str):
                raise ValueError(
                    f"text_pair= takes one str, the second text of every input (got {type(text_pair).__name__}); "
                    "for a pair per input pass dicts: [{'text': ..., 'text_pair': ...}, ...]"
                )
            pre["text_pair"] = clean_text(text_pair, 0, "text_pair")
        return pre, {"top_k": 1 if top_k == "" else top_k, "legacy": legacy, "function_to_apply": function_to_apply}

    def preprocess(  # also takes the text_pair of every input
        self,
        items: Sequence[Any],
        offset: int,
        truncation: bool = True,
        max_length: int | None = None,
        strategy: str = "longest_first",
        text_pair: str | None = None,
    ) -> list[tuple[None, list[Encoding]]]:
        texts, pairs = [], []
        for i, item in enumerate(items):
            pair = text_pair
            if isinstance(item, dict):
                if "text" not in item or set(item) - {"text", "text_pair"}:
                    raise ValueError(
                        f"input {offset + i}: a dict input takes the keys 'text' and 'text_pair', got {sorted(item)}"
                    )
                if "text_pair" in item and text_pair is not None:  # transformers: "got multiple values"
                    raise TypeError(f"input {offset + i} has a text_pair, and text_pair= gives another; pass one")
                pair = item.get("text_pair", text_pair)
                item = item["text"]
            texts.append(clean_text(item, offset + i))
            # as transformers' tokenizer: an empty second text is no pair
            pairs.append(None if pair is None or pair == "" else clean_text(pair, offset + i, "text_pair"))
        encodings = self.tokenizer.encode_batch(
            texts,
            pairs if any(p is not None for p in pairs) else None,
            truncation=truncation,
            max_length=max_length,
            strategy=strategy,
            bounded=True,
            offset=offset,
        )
        if not truncation:
            self._check_lengths(encodings, offset)
        return [(None, [e]) for e in encodings]

    @cached_property
    def _function(self) -> str:
        problem_type = self.model.manifest.problem_type
        if problem_type == "regression":
            return "none"
        if problem_type == "multi_label_classification" or len(self.model.labels) == 1:
            return "sigmoid"
        return "softmax"

    @cached_property
    def _labels(self) -> dict[int, str]:
        # The manifest never changes after load; rebuilding the dict on every call costs batch-1 latency.
        return self.model.labels

    def postprocess(self, outputs: dict[str, np.ndarray], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return list(outputs["logits"].astype(np.float32))

    def gather(  # type: ignore[override]  # takes only the gather params its _sanitize_parameters returns
        self,
        info: None,
        encodings: list[Encoding],
        rows: list[np.ndarray],
        top_k: int | None = 1,
        legacy: bool = True,
        function_to_apply: str | None = None,
    ) -> Any:
        logits, labels = rows[0], self._labels
        fn = function_to_apply or self._function
        scores = softmax(logits) if fn == "softmax" else sigmoid(logits) if fn == "sigmoid" else logits
        if legacy and top_k == 1:
            best = int(scores.argmax())
            return {"label": labels.get(best, f"LABEL_{best}"), "score": float(scores[best])}
        # As transformers: return_all_scores=True (legacy, every label) keeps the labels' order, unsorted.
        ranked = range(len(scores)) if legacy else sorted(range(len(scores)), key=lambda j: -scores[j])
        if top_k is not None:
            ranked = list(ranked)[:top_k]
        return [{"label": labels.get(j, f"LABEL_{j}"), "score": float(scores[j])} for j in ranked]
