"""The shared pipeline loop: preprocess -> forward -> postprocess, over length-sorted batches.

Inputs are processed in chunks of ``chunk_size`` so a list of 100,000 texts never holds more than one
chunk's encodings and outputs at a time; ``iter`` streams results in input order.
"""

from __future__ import annotations

from typing import Any, Iterable, Iterator, Sequence

import numpy as np
from tokenizers import Encoding

from .._batching import plan_batches
from .._inputs import as_text_list, clean_text, int_option, truncation_flag
from .._model import _NOT_PICKLABLE, OnnxModel
from .._tokenizer import AutoTokenizer
from ..errors import InputTooLongError, NonFiniteOutputError


# Padded tokens per batch at most. Measured on minilm-sst2 int8, 2-core AVX-512 VNNI (bench/README.md): SST-2
# dev as one list ran at 385 sentences/s with 16384, 663/s with 1024 (663/s with 512), and peak RSS at batch 128
# fell from 334 to 154 MB: small batches stay in cache, and length-sorting already removes the padding. Where
# to cut below the budget is plan_batches' cost model (_batching.py).
DEFAULT_BATCH_TOKENS = 1024


class Pipeline:
    """Base of every task pipeline. Subclasses set ``task``/``output_names`` and implement
    ``_sanitize_parameters``, ``preprocess`` (optional) and ``postprocess``; only ``_forward`` runs the model."""

    task = ""
    output_names: tuple[str, ...] = ()
    # grouped = True: one input becomes several encodings (question-answering windows, one NLI pair per
    # candidate label) or its result needs its encodings (offsets). ``preprocess`` then returns one
    # ``(info, [Encoding, ...])`` per input, ``postprocess(outputs, feeds)`` one compact row per encoding, and
    # ``gather(info, encodings, rows, **params)`` turns an input's rows into its result.
    grouped = False

    def __init__(self, model: OnnxModel, tokenizer: AutoTokenizer, batch_size: int = 32,
                 max_batch_tokens: int = DEFAULT_BATCH_TOKENS, chunk_size: int = 2048):
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = int_option("batch_size", batch_size)
        self.max_batch_tokens = int_option("max_batch_tokens", max_batch_tokens)
        self.chunk_size = int_option("chunk_size", chunk_size)

    def __getstate__(self):  # pickling refused (see _NOT_PICKLABLE); nothing here ever unpickles
        raise TypeError(_NOT_PICKLABLE.format(what=f"a {type(self).__name__}", how="pipeline(...)"))

    # -- per-task hooks -------------------------------------------------------------------------------
    def _sanitize_parameters(self, **kwargs: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        """Split call kwargs into (preprocess params, postprocess params); reject unknown ones."""
        if kwargs:
            raise TypeError(f"{type(self).__name__} got unexpected arguments {sorted(kwargs)}")
        return {}, {}

    def _normalize(self, inputs: Any) -> tuple[bool, list[Any]]:
        """Return (was a single input, the list of inputs)."""
        return as_text_list(inputs, "inputs")

    def preprocess(self, items: Sequence[Any], offset: int, truncation: bool = True) -> list[Encoding]:
        texts = [clean_text(t, offset + i) for i, t in enumerate(items)]
        encodings = self.tokenizer.encode_batch(texts, truncation=truncation, bounded=True)
        if not truncation:
            self._check_lengths(encodings, offset)
        return encodings

    def postprocess(self, outputs: dict[str, np.ndarray], feeds: dict[str, np.ndarray], **params: Any) -> list[Any]:
        if not self.grouped:
            raise NotImplementedError
        # Grouped default: every output per row, cut to the row's own tokens where it has a token axis.
        lengths, width = feeds["attention_mask"].sum(axis=1), feeds["attention_mask"].shape[1]
        return [{k: (v[i, : int(n)] if v.ndim > 1 and v.shape[1] == width else v[i]) for k, v in outputs.items()}
                for i, n in enumerate(lengths)]

    def gather(self, info: Any, encodings: list[Encoding], rows: list[Any], **params: Any) -> Any:
        raise NotImplementedError

    # -- the loop ---------------------------------------------------------------------------------------
    def _check_lengths(self, encodings: Sequence[Encoding], offset: int) -> None:
        limit = self.tokenizer.model_max_length
        for i, e in enumerate(encodings):
            if len(e.ids) > limit:
                raise InputTooLongError(
                    f"input {offset + i} has {len(e.ids)} tokens; the model accepts at most {limit}. "
                    "Shorten it, or pass truncation=True to cut it to the limit."
                )

    def _forward(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = list(self.output_names)
        return dict(zip(names, self.model.run(self.model.feeds(feeds), names)))

    def iter(self, inputs: Iterable[Any], **kwargs: Any) -> Iterator[Any]:
        """Yield one result per input, in input order, holding at most one chunk in memory.

        Example:
            >>> lines = (line.rstrip("\\n") for line in open("reviews.txt"))  # any iterable, read lazily
            >>> for result in classifier.iter(lines):
            ...     print(result)
        """
        pre, post = self._sanitize_parameters(**kwargs)
        if "truncation" in pre:
            pre["truncation"] = truncation_flag(pre["truncation"])
        if isinstance(inputs, (str, dict)):  # one input, not an iterable of characters / keys
            inputs = [inputs]
        chunk: list[Any] = []
        offset = 0
        for item in inputs:
            chunk.append(item)
            if len(chunk) == self.chunk_size:
                yield from self._run_chunk(chunk, offset, pre, post)
                offset += len(chunk)
                chunk = []
        if chunk:
            yield from self._run_chunk(chunk, offset, pre, post)

    def _run_chunk(self, items: list[Any], offset: int, pre: dict, post: dict) -> list[Any]:
        prepared = self.preprocess(items, offset, **pre)
        encodings = [e for _, group in prepared for e in group] if self.grouped else prepared
        results: list[Any] = [None] * len(encodings)
        lengths = [len(e.ids) for e in encodings]
        for batch in plan_batches(lengths, self.batch_size, self.max_batch_tokens):
            feeds = self.tokenizer.pad([encodings[i] for i in batch])
            try:
                outputs = self._forward(feeds)
            except NonFiniteOutputError as e:  # name the caller's inputs, not rows of a length-sorted batch
                raise self._name_inputs(e, [batch[r] for r in e.rows], prepared, offset) from None
            rows = self.postprocess(outputs, feeds, **({} if self.grouped else post))
            for i, result in zip(batch, rows):
                results[i] = result
        if not self.grouped:
            return results
        out, start = [], 0
        for info, group in prepared:
            out.append(self.gather(info, group, results[start : start + len(group)], **post))
            start += len(group)
        return out

    def _name_inputs(self, error: NonFiniteOutputError, encoding_ids: list[int], prepared: list,
                     offset: int) -> NonFiniteOutputError:
        owner = [k for k, (_, group) in enumerate(prepared) for _ in group] if self.grouped else None
        inputs = sorted({offset + (owner[j] if owner else j) for j in encoding_ids})
        return self.model.non_finite_error(error.output, inputs, "input")

    def __call__(self, inputs: Any, **kwargs: Any) -> Any:
        single, items = self._normalize(inputs)
        results = list(self.iter(items, **kwargs))
        return results[0] if single else results

    @property
    def device(self) -> str:
        return self.model.device

    @property
    def precision(self) -> str:
        return self.model.precision

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(task={self.task!r}, model={str(self.model.manifest.folder)!r}, "
                f"device={self.device!r}, precision={self.precision!r})")
