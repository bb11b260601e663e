"""token-classification / ner: per-token labels, optionally grouped into entities, with transformers' rules.

``word``, ``start`` and ``end`` come from the tokenizer's character offsets into the input; how sub-words
join (``aggregation_strategy``) follows transformers' TokenClassificationPipeline step for step, quirks
included, because users compare the two outputs. ``stride`` runs long texts in overlapping windows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from tokenizers import Encoding

from .._encoder import check_split_into_words
from .._inputs import clean_text, clean_words, int_option
from ._base import Pipeline
from ._text import Decoder, softmax, tokenizer_config

STRATEGIES = ("none", "simple", "first", "average", "max")


class TokenClassificationPipeline(Pipeline):
    """Entities per text: ``[{'entity', 'score', 'index', 'word', 'start', 'end'}, ...]``, or with an
    aggregation strategy ``[{'entity_group', 'score', 'word', 'start', 'end'}, ...]``.

    Example:
        >>> ner = pipeline("ner", model="models/bert-base-ner")
        >>> ner("My name is Wolfgang and I live in Berlin", aggregation_strategy="simple")
        [{'entity_group': 'PER', 'score': 0.99..., 'word': 'Wolfgang', 'start': 11, 'end': 19}, ...]
    """

    task = "token-classification"
    output_names = ("logits",)

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        config = tokenizer_config(self.model.manifest)
        self.unk_id = config.get("unk_token_id")
        self.decoder = Decoder(self.tokenizer.backend, config.get("clean_up_tokenization_spaces", False))
        # Word-aware tokenizers (WordPiece's "##") tell sub-words apart exactly; others fall back on spaces.
        self.word_aware = bool(getattr(self.tokenizer.backend.model, "continuing_subword_prefix", None))

    def __call__(self, inputs: Any, **kwargs: Any) -> Any:
        if (
            kwargs.get("is_split_into_words")
            and isinstance(inputs, (list, tuple))
            and not all(isinstance(i, (list, tuple)) for i in inputs)
        ):
            inputs = [inputs]  # one list of words: a batch of one, so a list of one result (as transformers)
        return super().__call__(inputs, **kwargs)

    def set_defaults(self, **kwargs: Any) -> None:
        if kwargs.get("is_split_into_words") is not None:  # transformers' call overrides it with False, silently
            raise TypeError(
                "is_split_into_words given to pipeline(...): transformers ignores it there (each word then becomes "
                "a text of its own); pass it with each call, ner(words, is_split_into_words=True)"
            )
        super().set_defaults(**kwargs)

    def _sanitize_parameters(
        self,
        aggregation_strategy: str | None = None,
        ignore_labels: Sequence[str] | None = None,
        stride: int | None = None,
        is_split_into_words: bool = False,
        delimiter: str | None = None,
        grouped_entities: bool | None = None,
        ignore_subwords: bool | None = None,
        **kwargs: Any,
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        if kwargs:
            tokenizer_args = sorted(set(kwargs) & {"truncation", "padding", "max_length"})
            hint = (
                f" ({tokenizer_args}: transformers' token-classification refuses them too; texts are cut at the "
                "model's maximum, or read whole in overlapping windows with stride=)"
                if tokenizer_args
                else ""
            )
            raise TypeError(
                f"unexpected arguments {sorted(kwargs)}{hint}; token-classification takes aggregation_strategy, "
                "ignore_labels, stride, is_split_into_words, delimiter, grouped_entities, ignore_subwords"
            )
        if grouped_entities is not None or ignore_subwords is not None:  # transformers' deprecated pair, its rule
            aggregation_strategy = (
                "first" if grouped_entities and ignore_subwords else "simple" if grouped_entities else "none"
            )
        strategy = str(getattr(aggregation_strategy, "value", aggregation_strategy) or "none").lower()
        if strategy not in STRATEGIES:
            raise ValueError(f"aggregation_strategy={aggregation_strategy!r}; use one of {list(STRATEGIES)}")
        if stride is not None:
            # Windows hold model_max_length tokens, special ones included; the overlap must leave one new token.
            int_option(
                "stride", stride, 0, self.tokenizer.model_max_length - self.tokenizer.num_special_tokens_to_add() - 1
            )
            if strategy == "none":
                raise ValueError("stride needs an aggregation_strategy other than 'none' to merge the windows")
        if is_split_into_words:  # words are joined with the delimiter into the text start/end point into
            check_split_into_words(self.tokenizer.backend)
            delimiter = clean_text(" " if delimiter is None else delimiter, 0, "delimiter")
        ignore = ["O"] if ignore_labels is None else list(ignore_labels)
        return (
            {"stride": stride, "delimiter": delimiter if is_split_into_words else None},
            {"strategy": strategy, "ignore_labels": ignore},
        )

    def preprocess(  # type: ignore[override]  # takes its stride and words, from its _sanitize_parameters
        self, items: Sequence[Any], offset: int, stride: int | None = None, delimiter: str | None = None
    ) -> list[tuple[tuple[str, list[int] | None], list[Encoding]]]:
        if delimiter is None:  # texts
            texts: list[Any] = [clean_text(t, offset + i) for i, t in enumerate(items)]
            infos: list[tuple[str, list[int] | None]] = [(t, None) for t in texts]
        else:  # lists of words (is_split_into_words): the text is their join, each word starts where it lands
            texts = [clean_words(t, offset + i, "input") for i, t in enumerate(items)]
            infos = [(delimiter.join(words), _starts(words, len(delimiter))) for words in texts]
        encodings = self.tokenizer.encode_batch(texts, stride=stride or 0, is_pretokenized=delimiter is not None)
        return [(info, [e, *e.overflowing] if stride is not None else [e]) for info, e in zip(infos, encodings)]

    def gather(  # type: ignore[override]  # takes only the gather params its _sanitize_parameters returns
        self,
        info: tuple[str, list[int] | None],
        encodings: list[Encoding],
        rows: list[dict[str, np.ndarray]],
        strategy: str = "none",
        ignore_labels: Sequence[str] = ("O",),
    ) -> list[dict[str, Any]]:
        entities: list[dict[str, Any]] = []
        for enc, row in zip(encodings, rows):
            tokens = self._tokens(info, enc, softmax(row["logits"].astype(np.float32)), strategy)
            grouped = self._aggregate(tokens, strategy)
            entities += [e for e in grouped if e.get("entity", e.get("entity_group")) not in ignore_labels]
        return _merge_windows(entities) if len(encodings) > 1 else entities

    def _tokens(
        self, info: tuple[str, list[int] | None], enc: Encoding, scores: np.ndarray, strategy: str
    ) -> list[dict[str, Any]]:
        text, word_starts = info
        out = []
        for idx, (token_id, word, (start, end), special, word_id) in enumerate(
            zip(enc.ids, enc.tokens, enc.offsets, enc.special_tokens_mask, enc.word_ids)
        ):
            if special:
                continue
            if word_starts is not None and word_id is not None:  # offsets of pre-tokenized words are per word
                start, end = start + word_starts[word_id], end + word_starts[word_id]
            word_ref = text[start:end]
            if self.word_aware:
                is_subword = len(word) != len(word_ref)
            else:
                is_subword = start > 0 and " " not in text[start - 1 : start + 1]
            if token_id == self.unk_id:
                word, is_subword = word_ref, False
            out.append(
                {
                    "word": word,
                    "scores": scores[idx],
                    "start": start,
                    "end": end,
                    "index": idx,
                    "is_subword": is_subword,
                }
            )
        return out

    def _label(self, scores: np.ndarray) -> tuple[str, float]:
        best = int(scores.argmax())
        return self.model.labels.get(best, f"LABEL_{best}"), float(scores[best])

    def _aggregate(self, tokens: list[dict[str, Any]], strategy: str) -> list[dict[str, Any]]:
        if strategy in ("none", "simple"):
            entities = [
                {
                    "entity": label,
                    "score": score,
                    "index": t["index"],
                    "word": t["word"],
                    "start": t["start"],
                    "end": t["end"],
                }
                for t in tokens
                for label, score in [self._label(t["scores"])]
            ]
        else:
            words: list[list[dict[str, Any]]] = []
            for t in tokens:
                if words and t["is_subword"]:
                    words[-1].append(t)
                else:
                    words.append([t])
            entities = [self._word(w, strategy) for w in words]
        return entities if strategy == "none" else self._group(entities)

    def _word(self, tokens: list[dict[str, Any]], strategy: str) -> dict[str, Any]:
        if strategy == "first":
            scores = tokens[0]["scores"]
        elif strategy == "max":
            scores = max(tokens, key=lambda t: t["scores"].max())["scores"]
        else:  # average
            scores = np.nanmean(np.stack([t["scores"] for t in tokens]), axis=0)
        label, score = self._label(scores)
        return {
            "entity": label,
            "score": score,
            "word": self.decoder.tokens_to_string([t["word"] for t in tokens]),
            "start": tokens[0]["start"],
            "end": tokens[-1]["end"],
        }

    def _group(self, entities: list[dict[str, Any]]) -> list[dict[str, Any]]:
        groups: list[list[dict[str, Any]]] = []
        for e in entities:
            bi, tag = _tag(e["entity"])
            if groups and bi != "B" and tag == _tag(groups[-1][-1]["entity"])[1]:
                groups[-1].append(e)
            else:
                groups.append([e])
        return [
            {
                "entity_group": g[0]["entity"].split("-", 1)[-1],
                "score": float(np.mean(np.nanmean([e["score"] for e in g]))),
                "word": self.decoder.tokens_to_string([e["word"] for e in g]),
                "start": g[0]["start"],
                "end": g[-1]["end"],
            }
            for g in groups
        ]


def _starts(words: list[str], gap: int) -> list[int]:
    """Where each word starts in ``delimiter.join(words)``, the delimiter ``gap`` characters long."""
    starts, at = [], 0
    for word in words:
        starts.append(at)
        at += len(word) + gap
    return starts


def _tag(label: str) -> tuple[str, str]:
    if label.startswith(("B-", "I-")):
        return label[0], label[2:]
    return "I", label  # not in B-/I- form: a continuation


def _merge_windows(entities: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Of entities that overlap across windows keep the longest, then the higher-scoring (as transformers)."""
    if not entities:
        return entities
    entities = sorted(entities, key=lambda x: x["start"])
    merged, previous = [], entities[0]
    for e in entities:
        if previous["start"] <= e["start"] < previous["end"]:
            length, previous_length = e["end"] - e["start"], previous["end"] - previous["start"]
            if length > previous_length or (length == previous_length and e["score"] > previous["score"]):
                previous = e
        else:
            merged.append(previous)
            previous = e
    merged.append(previous)
    return merged
