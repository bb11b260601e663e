"""feature-extraction: the encoder's last hidden state per input, unpadded, as transformers returns it."""

from __future__ import annotations

from typing import Any

import numpy as np
from tokenizers import Encoding

from ._base import Pipeline


class FeatureExtractionPipeline(Pipeline):
    """Hidden states per input: nested lists of shape [1, tokens, hidden] (``return_tensors=True``: numpy).

    Example:
        >>> extractor = pipeline("feature-extraction")
        >>> np.array(extractor("Hello world")).shape
        (1, 4, 384)
    """

    task = "feature-extraction"
    output_names = ("last_hidden_state",)

    def _sanitize_parameters(
        self,
        return_tensors: bool = False,
        truncation: Any = None,
        tokenize_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        direct = sorted(set(kwargs) & {"padding", "max_length"})
        if direct:  # transformers drops them unread: honouring them would answer differently, ignoring them too
            raise TypeError(
                f"feature-extraction does not take {direct} directly (transformers ignores them there); "
                f"pass tokenize_kwargs={{{', '.join(repr(k) + ': ...' for k in direct)}}}"
            )
        if kwargs:
            raise TypeError(
                f"unexpected arguments {sorted(kwargs)}; feature-extraction takes return_tensors, truncation, "
                "tokenize_kwargs"
            )
        return (
            self._tokenize_options(truncation, tokenize_kwargs=tokenize_kwargs),
            {"return_tensors": bool(return_tensors)},
        )

    def postprocess(self, outputs: dict[str, np.ndarray], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        hidden = outputs["last_hidden_state"]
        lengths = feeds["attention_mask"].sum(axis=1)
        return [np.ascontiguousarray(hidden[i : i + 1, : int(n)], dtype=np.float32) for i, n in enumerate(lengths)]

    def gather(  # type: ignore[override]  # takes only the gather params its _sanitize_parameters returns
        self,
        info: None,
        encodings: list[Encoding],
        rows: list[np.ndarray],
        return_tensors: bool = False,
    ) -> Any:
        return rows[0] if return_tensors else rows[0].tolist()
