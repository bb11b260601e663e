"""fill-mask: the likeliest tokens for each mask token, scored and decoded as transformers does.

The masked-LM graph returns tokens x vocabulary logits, so a batch holds at most ``_MAX_BATCH_TOKENS`` tokens
(a 50k vocabulary then needs ~400 MB of logits); only the mask positions' probabilities are kept per input.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import numpy as np
from tokenizers import Encoding

from ._base import Pipeline
from ._text import Decoder, softmax, tokenizer_config

_MAX_BATCH_TOKENS = 2048


class FillMaskPipeline(Pipeline):
    """Top-k replacements per mask token: ``[{'score', 'token', 'token_str', 'sequence'}, ...]``.

    Example:
        >>> unmasker = pipeline("fill-mask", model="models/distilroberta-base")
        >>> unmasker("Paris is the <mask> of France.", top_k=2)
        [{'score': 0.7..., 'token': 812, 'token_str': ' capital', 'sequence': 'Paris is the capital of France.'}, ...]
    """

    task = "fill-mask"
    output_names = ("logits",)

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.max_batch_tokens = min(self.max_batch_tokens, _MAX_BATCH_TOKENS)
        config = tokenizer_config(self.model.manifest, "mask_token_id")
        self.mask_token, self.mask_id = config.get("mask_token"), int(cast(int, config["mask_token_id"]))
        self.pad_id = self.tokenizer.pad_token_id
        self.decoder = Decoder(self.tokenizer.backend, config.get("clean_up_tokenization_spaces", False))

    def _finish(self, results: list[Any], single: bool, inputs: Any, kwargs: dict[str, Any]) -> Any:
        if isinstance(inputs, list) and len(inputs) == 1:  # as transformers: a list of one gives a bare result
            return results[0]
        return super()._finish(results, single, inputs, kwargs)

    def _sanitize_parameters(
        self,
        top_k: int | None = None,
        targets: str | list[str] | None = None,
        truncation: Any = None,
        tokenizer_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        if kwargs:
            raise TypeError(
                f"unexpected arguments {sorted(kwargs)}; fill-mask takes top_k, targets, tokenizer_kwargs, truncation"
            )
        if top_k is not None and (not isinstance(top_k, int) or top_k < 1):
            raise ValueError(f"top_k={top_k!r}; use a positive int (default 5)")
        target_ids = None if targets is None else self._target_ids([targets] if isinstance(targets, str) else targets)
        # transformers' tokenizer_kwargs; unlike the other tasks nothing is cut unless asked (a cut may drop the mask)
        pre = self._tokenize_options(truncation, tokenize_kwargs=tokenizer_kwargs)
        if truncation is None and "truncation" not in (tokenizer_kwargs or {}) and "max_length" not in pre:
            pre["truncation"] = False
        return pre, {"top_k": 5 if top_k is None else top_k, "target_ids": target_ids}

    def _target_ids(self, targets: list[str]) -> np.ndarray:
        # As transformers: a target outside the vocabulary becomes the first token it encodes to.
        vocab = self.tokenizer.backend.get_vocab()
        ids = [vocab.get(t) for t in targets]
        ids = [
            i if i is not None else (self.tokenizer.backend.encode(t, add_special_tokens=False).ids or [None])[0]
            for t, i in zip(targets, ids)
        ]
        ids = list(set(i for i in ids if i is not None))  # transformers' order, so ties rank the same
        if not ids:
            raise ValueError(f"targets={targets!r}: none of them encodes to a token; pass words of the vocabulary")
        return np.array(ids)

    def preprocess(
        self,
        items: Sequence[Any],
        offset: int,
        truncation: bool = False,
        max_length: int | None = None,
        strategy: str = "longest_first",
    ) -> list[tuple[None, list[Encoding]]]:
        # the base's encoding (truncation off by default here, as transformers' fill-mask), then the mask check
        prepared = super().preprocess(items, offset, truncation, max_length, strategy)
        for i, (_, (e,)) in enumerate(prepared):
            if self.mask_id not in e.ids:
                raise ValueError(
                    f"input {offset + i} has no mask token {self.mask_token!r} (after truncation, "
                    f"if any); put {self.mask_token} where the word to predict goes"
                )
        return prepared

    def postprocess(self, outputs: dict[str, np.ndarray], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        logits, ids = outputs["logits"], feeds["input_ids"]
        return [softmax(logits[i, ids[i] == self.mask_id].astype(np.float32)) for i in range(len(ids))]

    def gather(  # type: ignore[override]  # takes only the gather params its _sanitize_parameters returns
        self,
        info: None,
        encodings: list[Encoding],
        rows: list[np.ndarray],
        top_k: int = 5,
        target_ids: np.ndarray | None = None,
    ) -> list[Any]:
        ids, probs = np.array(encodings[0].ids), rows[0]
        if target_ids is not None:
            probs, top_k = probs[:, target_ids], min(top_k, len(target_ids))
        single = len(probs) == 1
        result = []
        for position, row in zip(np.flatnonzero(ids == self.mask_id), probs):
            options = []
            for p in np.argsort(-row, kind="stable")[:top_k]:
                token = int(target_ids[p] if target_ids is not None else p)
                filled = ids.copy()
                filled[position] = token
                sequence = self.decoder.decode(filled[filled != self.pad_id], skip_special_tokens=single)
                options.append(
                    {
                        "score": float(row[p]),
                        "token": token,
                        "token_str": self.decoder.decode([token]),
                        "sequence": sequence,
                    }
                )
            result.append(options)
        return result[0] if single else result
