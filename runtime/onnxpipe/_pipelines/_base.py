"""The shared pipeline loop and the one protocol every task follows: preprocess -> forward -> postprocess -> gather.

A call's parameters act only per input (``preprocess``, ``gather``), never per batch (``_forward``,
``postprocess``), so a batch may mix encodings of different calls with different parameters: the loop here
batches by length within one call, and a server may batch across requests with the same hooks.

The public batching protocol, what a caller outside the pipelines (the server, a batch job) may use to run
the steps itself, is ``split_params``, ``preprocess``, ``execute_batch`` and ``gather``:

    pre, post = pipe.split_params(**kwargs)
        Validate a call's keyword arguments (TypeError/ValueError naming the bad one) and split them into
        preprocess params and gather params, both plain dicts (``truncation`` already a bool).
    pipe.preprocess(items, offset, **pre) -> [(info, [Encoding, ...]), ...]
        One entry per input, in order. ``offset`` is the index of ``items[0]`` among the caller's inputs, for
        error messages. ``info`` is whatever ``gather`` needs besides the encodings (the text, the context;
        None for most tasks); most inputs have one encoding, question-answering's long contexts and
        token-classification with ``stride`` one per window, zero-shot one per candidate label.
    feeds = pipe.tokenizer.pad(encodings)
        Any encodings of this pipeline, of any inputs and calls, padded into one batch.
    outputs = pipe._forward(feeds, lane) -> {output name: array with a leading batch axis}
        The only hook that runs the model. Raises NonFiniteOutputError whose ``rows`` are batch rows; map
        them to inputs and re-raise ``pipe.model.non_finite_error(e.output, inputs, "input")`` (as
        ``_name_inputs`` does here).
    rows = pipe.postprocess(outputs, feeds) -> [row, ...]
        One row per batch row, in batch order; row i depends on batch row i only, and on no call's
        parameters. Rows are compact (a float32 logits row, a pooled vector, outputs cut to the row's own
        tokens), so a row may wait for the other encodings of its input, in other batches.
    result = pipe.gather(info, encodings, rows, **post)
        One input's result from its ``preprocess`` entry and its rows (in the same order as its encodings).
        The default returns ``rows[0]``; every task here overrides it, as each takes gather params.

``execute_batch(encodings)`` is the loop's middle: it cuts the encodings into batches as the model's execution
says (length-sorted padded batches, or each encoding alone for dynamic int8, several at once on the model's
worker pool: _session.EXECUTIONS) and yields each batch's ``Batch`` (its indices, width and rows); the server
runs it over its queued requests (for dynamic int8, from ``model.threads`` workers of its own, each calling
it with ``on_lane=True``).

``__call__`` wraps the loop: ``_normalize(inputs)`` -> (single, items); ``iter`` runs the protocol over
chunks of ``chunk_size`` inputs (never holding more than one chunk's encodings and rows), yielding results
in input order; ``_finish(results, single, inputs, kwargs)`` shapes the return value (a bare result for a
single input; tasks whose transformers counterpart returns another shape override it).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any, NamedTuple, NoReturn

import numpy as np
from tokenizers import Encoding

from .._batching import plan_batches
from .._inputs import as_text_list, clean_text, int_option, truncation_flag
from .._manifest import Manifest
from .._model import NOT_PICKLABLE, OnnxModel
from .._session_options import SessionOptions
from .._tokenizer import AutoTokenizer
from ..errors import InputTooLongError, NonFiniteOutputError

# Padded tokens per batch at most. Measured on minilm-sst2 int8, 2-core AVX-512 VNNI (bench/README.md): SST-2
# dev as one list ran at 385 sentences/s with 16384, 663/s with 1024 (663/s with 512), and peak RSS at batch 128
# fell from 334 to 154 MB: small batches stay in cache, and length-sorting already removes the padding. Where
# to cut below the budget is plan_batches' cost model (_batching.py).
DEFAULT_BATCH_TOKENS = 1024


class Batch(NamedTuple):
    """One model call of ``Pipeline.execute_batch``: which encodings it ran, how wide they were padded, and
    ``postprocess``'s rows for them in the same order (or the exception the call raised: the caller decides
    whom it fails)."""

    indices: list[int]
    width: int
    rows: list[Any] | Exception


def _is_stream(inputs: Any) -> bool:
    """An iterable input other than the ones a call takes whole (str, dict, list, tuple, arrays)."""
    return not isinstance(inputs, (str, bytes, dict, list, tuple, np.ndarray)) and hasattr(inputs, "__iter__")


class Pipeline:
    """Base of every task pipeline. Subclasses set ``task``/``output_names`` and implement
    ``_sanitize_parameters``, ``postprocess`` and ``gather`` (``preprocess`` encodes one text per input unless
    overridden); only ``_forward`` runs the model. The protocol is in the module docstring."""

    task = ""
    output_names: tuple[str, ...] = ()

    def __init__(
        self,
        model: OnnxModel,
        tokenizer: AutoTokenizer,
        batch_size: int = 32,
        max_batch_tokens: int = DEFAULT_BATCH_TOKENS,
        chunk_size: int = 2048,
    ):
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = int_option("batch_size", batch_size)
        self.max_batch_tokens = int_option("max_batch_tokens", max_batch_tokens)
        self.chunk_size = int_option("chunk_size", chunk_size)
        # Call arguments given to pipeline(...) (transformers' construction kwargs): defaults of every call.
        self._defaults: dict[str, Any] = {}

    @classmethod
    def load_model(cls, manifest: Manifest, options: SessionOptions) -> Any:
        """What ``pipeline()`` opens for this pipeline from a folder: one session of ``manifest``'s variant;
        pipelines that run more graphs open them all here."""
        return OnnxModel(manifest, options)

    def set_defaults(self, **kwargs: Any) -> None:
        """Make ``kwargs`` the default arguments of every call, checked now (a bad one raises here): the call
        arguments transformers takes at construction, ``pipeline(task, top_k=3)``."""
        self.split_params(**{k: v for k, v in kwargs.items() if k != "batch_size"})
        self._defaults = dict(kwargs)

    def use_task(self, task: str) -> None:
        """The task name ``pipeline()`` was called with, before aliases resolve (``translation_en_to_de``);
        pipelines whose settings depend on it override this."""

    def __getstate__(self) -> NoReturn:  # pickling refused (see NOT_PICKLABLE); nothing here ever unpickles
        raise TypeError(NOT_PICKLABLE.format(what=f"a {type(self).__name__}", how="pipeline(...)"))

    # -- per-task hooks -------------------------------------------------------------------------------
    def _sanitize_parameters(self, **kwargs: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        """Split call kwargs into (preprocess params, gather params); reject unknown ones."""
        if kwargs:
            raise TypeError(f"{type(self).__name__} got unexpected arguments {sorted(kwargs)}")
        return {}, {}

    def _tokenize_options(
        self,
        truncation: Any = None,
        padding: Any = None,
        max_length: Any = None,
        tokenize_kwargs: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Preprocess params from transformers' tokenizer arguments of a call (``truncation``, ``max_length``,
        ``padding``, or them in ``tokenize_kwargs``), with the tokenizer's meaning: ``"only_first"`` /
        ``"only_second"`` cut that text of a pair; an unset truncation cuts at ``max_length`` only when not
        padding, and otherwise at the model's maximum (where transformers would fail on a longer input).
        ``padding`` is checked and has no effect: inputs are padded per length-sorted batch and masked, which
        gives the same outputs."""
        if truncation is None and padding is None and max_length is None and not tokenize_kwargs:
            return {"truncation": True}  # a call without tokenizer arguments (every batch-1 call, most calls)
        options = dict(tokenize_kwargs or {})
        unknown = sorted(set(options) - {"truncation", "padding", "max_length"})
        if unknown:
            raise TypeError(f"tokenize_kwargs {unknown} are not supported; it takes truncation, padding, max_length")
        given = {"truncation": truncation, "padding": padding, "max_length": max_length}
        twice = sorted(k for k, v in given.items() if v is not None and k in options)
        if twice:
            raise ValueError(f"{twice} given twice, as an argument and in tokenize_kwargs; pass each once")
        given.update(options)
        truncation, padding = (getattr(given[k], "value", given[k]) for k in ("truncation", "padding"))  # enums
        max_length = given["max_length"]
        if padding not in (None, True, False, "longest", "max_length", "do_not_pad"):
            raise ValueError(f"padding={padding!r}: use True/'longest', 'max_length' or False")
        pre: dict[str, Any] = {}
        if max_length is not None:
            pre["max_length"] = int_option(
                "max_length",
                max_length,
                1,
                self.tokenizer.model_max_length,
                "the exported model's maximum is the upper bound",
            )
            if truncation is None and padding not in (None, False, "do_not_pad"):
                del pre["max_length"]  # as transformers: max_length with padding pads to it and cuts nothing
        if isinstance(truncation, str) and truncation in ("longest_first", "only_first", "only_second"):
            pre["strategy"], truncation = truncation, True
        pre["truncation"] = True if truncation is None else truncation
        return pre

    def _normalize(self, inputs: Any) -> tuple[bool, list[Any]]:
        """Return (was a single input, the list of inputs)."""
        return as_text_list(inputs, "inputs")

    def preprocess(
        self,
        items: Sequence[Any],
        offset: int,
        truncation: bool = True,
        max_length: int | None = None,
        strategy: str = "longest_first",
    ) -> list[tuple[Any, list[Encoding]]]:
        texts = [clean_text(t, offset + i) for i, t in enumerate(items)]
        # strategy: transformers' truncation strategy; on one text "only_first" is "longest_first", and
        # "only_second" raises InputTooLongError for a text it would have to cut (as transformers raises)
        encodings = self.tokenizer.encode_batch(
            texts, truncation=truncation, max_length=max_length, strategy=strategy, bounded=True, offset=offset
        )
        if not truncation:
            self._check_lengths(encodings, offset)
        return [(None, [e]) for e in encodings]

    def postprocess(self, outputs: dict[str, np.ndarray], feeds: dict[str, np.ndarray]) -> list[Any]:
        # Every output per row, cut to the row's own tokens where it has a token axis.
        lengths, width = feeds["attention_mask"].sum(axis=1), feeds["attention_mask"].shape[1]
        return [
            {k: (v[i, : int(n)] if v.ndim > 1 and v.shape[1] == width else v[i]) for k, v in outputs.items()}
            for i, n in enumerate(lengths)
        ]

    def gather(self, info: Any, encodings: list[Encoding], rows: list[Any], **params: Any) -> Any:
        # A task with one encoding per input, no gather params and final rows needs nothing more.
        return rows[0]

    def _finish(self, results: list[Any], single: bool, inputs: Any, kwargs: dict[str, Any]) -> Any:
        """``__call__``'s return value from the results of ``inputs`` (called with ``kwargs``)."""
        return results[0] if single else results

    # -- the loop ---------------------------------------------------------------------------------------
    def _check_lengths(self, encodings: Sequence[Encoding], offset: int) -> None:
        limit = self.tokenizer.model_max_length
        for i, e in enumerate(encodings):
            if len(e.ids) > limit:
                raise InputTooLongError(
                    f"input {offset + i} has {len(e.ids)} tokens; the model accepts at most {limit}. "
                    "Shorten it, or pass truncation=True to cut it to the limit."
                )

    def _forward(self, feeds: dict[str, np.ndarray], lane: bool = False) -> dict[str, np.ndarray]:
        names = list(self.output_names)
        return dict(zip(names, self.model.run(self.model.feeds(feeds), names, lane)))

    # -- the public batching protocol (the module docstring) ---------------------------------------------------
    def execute_batch(
        self,
        encodings: Sequence[Encoding],
        batch_size: int | None = None,
        max_batch_tokens: int | None = None,
        on_lane: bool = False,
    ) -> Iterator[Batch]:
        """Run ``encodings`` (of any inputs and calls of this pipeline) through the model; yield one ``Batch``
        per model call, as the model's execution plans them (``batch_size`` and ``max_batch_tokens`` default
        to the pipeline's). Closing the iterator stops before the next call. ``on_lane=True``: the caller is
        one of ``pipe.model.threads`` threads running this model at once (a server's workers), and every call
        runs on the calling thread with one core's session (``OnnxModel.map_batches``); the rows are the same.

        Example:
            >>> pre, post = pipe.split_params()
            >>> prepared = pipe.preprocess(["good", "bad"], 0, **pre)
            >>> [b.indices for b in pipe.execute_batch([e for _, group in prepared for e in group])]
            [[0], [1]]

        (minilm-sst2's int8 model runs each input alone; an fp32 one gives ``[[0, 1]]``.)
        """
        if self.model.execution == "alone":
            plan: Iterable[list[int]] = ([i] for i in range(len(encodings)))
        else:
            lengths = [len(e.ids) for e in encodings]
            plan = plan_batches(lengths, batch_size or self.batch_size, max_batch_tokens or self.max_batch_tokens)

        def run(batch: list[int], lane: bool) -> Batch:
            feeds = self.tokenizer.pad([encodings[i] for i in batch])
            width = int(feeds["input_ids"].shape[1])
            try:
                return Batch(batch, width, self.postprocess(self._forward(feeds, lane), feeds))
            except Exception as e:  # handed to the caller with the batch it belongs to
                return Batch(batch, width, e)

        return self.model.map_batches(run, plan, on_lane)

    def split_params(self, **kwargs: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        """Check a call's keyword arguments (TypeError/ValueError naming the bad one) and split them into
        ``(preprocess params, gather params)``, plain dicts (``truncation`` already a bool). The pipeline's
        construction defaults are not merged in: ``iter`` does that before calling this."""
        pre, post = self._sanitize_parameters(**kwargs)
        if "truncation" in pre:
            pre["truncation"] = truncation_flag(pre["truncation"])
        return pre, post

    def iter(self, inputs: Iterable[Any], **kwargs: Any) -> Iterator[Any]:
        """Yield one result per input, in input order, holding at most one chunk in memory. Arguments are
        checked at once (before the first input is read). ``pipe(iterable)`` returns this iterator too.

        Example:
            >>> lines = (line.rstrip("\\n") for line in open("reviews.txt"))  # any iterable, read lazily
            >>> for result in classifier.iter(lines):
            ...     print(result)
        """
        pre, post, batch_size = self._call_params(kwargs)
        if isinstance(inputs, (str, dict)):  # one input, not an iterable of characters / keys
            inputs = [inputs]
        return self._iter(inputs, pre, post, batch_size)

    def _call_params(self, kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], int]:
        """(preprocess params, gather params, batch size) of a call's ``kwargs`` over the construction defaults;
        ``kwargs`` itself is left as it is."""
        if self._defaults:
            kwargs = {**self._defaults, **kwargs}
        batch_size = self.batch_size
        if "batch_size" in kwargs:  # transformers takes it per call too
            kwargs = dict(kwargs)
            batch_size = int_option("batch_size", kwargs.pop("batch_size"))
        pre, post = self.split_params(**kwargs)
        return pre, post, batch_size

    def _iter(self, inputs: Iterable[Any], pre: dict[str, Any], post: dict[str, Any], batch_size: int) -> Iterator[Any]:
        chunk: list[Any] = []
        offset = 0
        for item in inputs:
            chunk.append(item)
            if len(chunk) == self.chunk_size:
                yield from self._run_chunk(chunk, offset, pre, post, batch_size)
                offset += len(chunk)
                chunk = []
        if chunk:
            yield from self._run_chunk(chunk, offset, pre, post, batch_size)

    def _run_chunk(
        self, items: list[Any], offset: int, pre: dict[str, Any], post: dict[str, Any], batch_size: int | None = None
    ) -> list[Any]:
        prepared = self.preprocess(items, offset, **pre)
        encodings = [e for _, group in prepared for e in group]
        if len(encodings) == 1:  # batch 1: the one model call execute_batch would plan, without its machinery
            return [self.gather(prepared[0][0], encodings, self._run_one(encodings, prepared, offset), **post)]
        rows: list[Any] = [None] * len(encodings)
        non_finite: list[tuple[NonFiniteOutputError, list[int]]] = []
        for batch, _, batch_rows in self.execute_batch(encodings, batch_size):
            if isinstance(batch_rows, NonFiniteOutputError):  # finish the chunk: the error names every bad input
                non_finite.append((batch_rows, [batch[r] for r in batch_rows.rows]))
            elif isinstance(batch_rows, Exception):
                raise batch_rows
            else:
                for i, row in zip(batch, batch_rows):
                    rows[i] = row
        if non_finite:  # the caller's input indices, not rows of a length-sorted (or one-row) batch
            bad = sorted(i for _, ids in non_finite for i in ids)
            raise self._name_inputs(non_finite[0][0], bad, prepared, offset) from None
        results, start = [], 0
        for info, group in prepared:
            end = start + len(group)
            results.append(self.gather(info, group, rows[start:end], **post))
            start = end
        return results

    def _run_one(self, encodings: list[Encoding], prepared: list[tuple[Any, list[Encoding]]], offset: int) -> list[Any]:
        """``postprocess``'s rows for a lone encoding, run on the calling thread as ``execute_batch`` runs a
        plan of one (padded alone, ``lane=False``); a NonFiniteOutputError names the input, as ``_run_chunk``."""
        feeds = self.tokenizer.pad(encodings)
        try:
            outputs = self._forward(feeds)
        except NonFiniteOutputError as e:
            raise self._name_inputs(e, [0], prepared, offset) from None
        return list(self.postprocess(outputs, feeds))

    def _name_inputs(
        self,
        error: NonFiniteOutputError,
        encoding_ids: list[int],
        prepared: list[tuple[Any, list[Encoding]]],
        offset: int,
    ) -> NonFiniteOutputError:
        """``error`` naming the inputs (``offset`` + index in ``prepared``) that own the given encodings."""
        owner = [k for k, (_, group) in enumerate(prepared) for _ in group]
        inputs = sorted({offset + owner[j] for j in encoding_ids})
        return self.model.non_finite_error(error.output, inputs, "input")

    def __call__(self, inputs: Any, **kwargs: Any) -> Any:
        if _is_stream(inputs):  # a generator, a datasets column...: an iterator of results, as transformers
            return self.iter(inputs, **kwargs)
        single, items = self._normalize(inputs)
        if len(items) > self.chunk_size:
            return self._finish(list(self.iter(items, **kwargs)), single, inputs, kwargs)
        pre, post, batch_size = self._call_params(kwargs)  # one chunk: no generator in between (batch-1 latency)
        results = self._run_chunk(items, 0, pre, post, batch_size) if items else []
        return self._finish(results, single, inputs, kwargs)

    @property
    def config(self) -> Any:
        """The model's config.json, read-only (``pipe.model.config`` is the same object)."""
        return self.model.config

    @property
    def device(self) -> str:
        return self.model.device

    @property
    def precision(self) -> str:
        return self.model.precision

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(task={self.task!r}, model={str(self.model.manifest.folder)!r}, "
            f"device={self.device!r}, precision={self.precision!r})"
        )
