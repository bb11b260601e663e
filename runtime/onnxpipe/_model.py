"""AutoModel classes: one ONNX session of a model folder, called with tokenizer output like a PyTorch model."""

from __future__ import annotations

import os
import threading
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from functools import cached_property
from typing import Any, NoReturn, TypeVar

import numpy as np

from ._config import Config
from ._contract import check_graph
from ._manifest import Manifest, load_manifest
from ._resolve import resolve_model
from ._session import choose, choose_execution, create_session
from ._session_options import SessionOptions
from .errors import InferenceError, NonFiniteOutputError, TaskMismatchError

_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
}
# Above this many values, min/max (no temporary) replace isfinite().all() (a bool copy of the output: 62 MB
# for a fill-mask batch of 2048 tokens x 30k vocabulary); below it isfinite is the faster of the two.
_SMALL = 1 << 16


def _finite(x: np.ndarray) -> bool:
    """No NaN and no inf in ``x``: a few microseconds on logits, ~0.6 ms on a 32 x 128 x 384 hidden state."""
    if x.dtype.kind != "f" or x.size == 0:
        return True
    if x.size <= _SMALL:
        return bool(np.isfinite(x).all())
    return bool(np.isfinite(x.min()) and np.isfinite(x.max()))  # NaN propagates through both


NOT_PICKLABLE = (
    "{what} cannot be pickled: it holds an onnxruntime session (native memory and threads), which cannot be "
    "sent to another process. Build one per process instead: pass the model name or folder path, and call "
    "{how} in each worker (e.g. multiprocessing.Pool(initializer=...) storing it in a global; with Ray, inside "
    "the actor's __init__). Threads can share one."
)


_Model = TypeVar("_Model", bound="OnnxModel")
_T = TypeVar("_T")
_R = TypeVar("_R")


class ModelOutput(dict[str, np.ndarray]):
    """Model outputs by name (``out.logits``, ``out["last_hidden_state"]``) or position (``out[0]``), as
    numpy arrays; ``to_tuple()`` as transformers' ModelOutput."""

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, (int, slice)):
            return self.to_tuple()[key]
        return super().__getitem__(key)

    def to_tuple(self) -> tuple[np.ndarray, ...]:
        return tuple(self.values())

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"this output has {list(self)}, not {name!r}") from None


class OnnxModel:
    """One loaded variant of a model folder. ``run`` is the only code that calls onnxruntime."""

    output_name: str | tuple[str, ...] | None = None  # what __call__ returns; None: every graph output
    graph: str | None = None  # the head the folder must be exported for (several heads output "logits")

    def __init__(self, manifest: Manifest, options: SessionOptions | None = None, **settings: Any):
        """Load ``manifest``'s variant as ``options`` say; ``settings`` (``device=``, ``precision=``... the
        fields of SessionOptions) change single ones: ``OnnxModel(manifest, precision="fp32")``."""
        options = replace(options or SessionOptions(), **settings)
        wanted = (self.output_name,) if isinstance(self.output_name, str) else self.output_name or ()
        if any(name not in manifest.outputs for name in wanted) or (
            self.graph is not None and self.graph not in manifest.tasks
        ):
            raise TaskMismatchError(
                f"{manifest.folder} (task {manifest.task!r}) has outputs {manifest.outputs}, not "
                f"{self.output_name!r}{f' of a {self.graph} head' if self.graph else ''}. "
                f"Use a folder exported for that head, or the class for its task."
            )
        self._output_names = list(wanted) or manifest.outputs
        self.manifest = manifest
        self.options = options
        self.choice = choose(manifest, options.device, options.precision, options.format)
        self.profile = options.profile
        self.session = create_session(manifest, self.choice, options.threads, options.profile)
        self.threads = int(self.session.get_session_options().intra_op_num_threads)
        check_graph(manifest, self.session, self.choice.precision)  # inputs, outputs and labels, once at load
        self._graph_inputs = [i.name for i in self.session.get_inputs()]
        # "alone" or "batched": how pipelines run several inputs (_session.EXECUTIONS says why).
        self.execution = choose_execution(manifest, self.choice, options.execution)
        # For "alone" with several inputs: a 1-thread session run from `threads` workers (one core each), made
        # on first use, so single-input callers pay neither its memory nor its threads.
        self._lane_session: Any = None
        self._pool: ThreadPoolExecutor | None = None
        self._pool_pid = 0
        self._lane_lock = threading.Lock()

    @classmethod
    def from_pretrained(
        cls: type[_Model],
        name_or_path: str | os.PathLike[str],
        device: str = "cpu",
        precision: str | None = None,
        threads: int | None = None,
        verify: bool = True,
        execution: str = "auto",
        profile: str = "default",
        format: str = "onnx",
    ) -> _Model:
        """Load a model folder by path or name; ``device`` is "cpu", "cuda" or "auto"; ``profile`` "default" or
        "low-power" (one thread, no spinning); ``format`` "onnx" or "ort" (the variant's ORT-format
        copy, from ``onnxpipe export --ort``); ``execution``: how pipelines run several inputs, "alone" (each
        its own batch of one, the default for dynamic int8, whose answers otherwise depend on the batch),
        "batched" or "auto".

        Example:
            >>> AutoModelForSequenceClassification.from_pretrained("minilm-sst2", profile="low-power").precision
            'int8'
        """
        options = SessionOptions(
            device=device,
            precision=precision,
            threads=threads,
            verify=verify,
            profile=profile,
            format=format,
            execution=execution,
        )
        return cls(load_manifest(resolve_model(name_or_path), verify=options.verify), options)

    @property
    def device(self) -> str:
        return self.choice.device

    @property
    def precision(self) -> str:
        return self.choice.precision

    @property
    def format(self) -> str:
        return self.choice.format

    @property
    def labels(self) -> dict[int, str]:
        return self.manifest.labels

    @cached_property
    def config(self) -> Config:
        """The checkpoint's config.json (``config.id2label``, ``config.hidden_size``), read-only."""
        return Config.from_folder(self.manifest.folder, self.manifest.labels)

    def feeds(self, inputs: dict[str, Any]) -> dict[str, np.ndarray]:
        ids = np.asarray(inputs["input_ids"], dtype=np.int64)
        if ids.ndim == 1:
            ids = ids[None, :]
        out = {"input_ids": ids}
        for name in self._graph_inputs:
            if name == "input_ids":
                continue
            if inputs.get(name) is not None:
                out[name] = np.asarray(inputs[name], dtype=np.int64).reshape(ids.shape)
            elif name == "attention_mask":
                out[name] = np.ones_like(ids)
            elif name == "token_type_ids":
                out[name] = np.zeros_like(ids)
            else:
                raise ValueError(f"the graph needs input {name!r}; got {sorted(inputs)}")
        return out

    def run(self, feeds: dict[str, np.ndarray], output_names: list[str], lane: bool = False) -> list[np.ndarray]:
        """Run the session on ``feeds``. ``lane=True`` (only inside ``map_batches``' workers) runs the
        1-thread session those workers share; both sessions give identical results."""
        ids = feeds["input_ids"]
        if ids.size == 0:  # never reaches onnxruntime: the int8 kernels divide by the row count (SIGFPE)
            return self._empty(ids, output_names)
        session = self._lane_session if lane else self.session
        try:
            outputs: list[np.ndarray] = session.run(output_names, feeds)
        except Exception as e:
            shapes = {k: v.shape for k, v in feeds.items()}
            raise InferenceError(
                f"onnxruntime failed on {self.manifest.folder} ({self.precision}, {self.device}) "
                f"with inputs {shapes}: {e}"
            ) from e
        for name, out in zip(output_names, outputs):
            if not _finite(out):
                bad = ~np.isfinite(out.reshape(len(out), -1)).all(axis=1)
                raise self.non_finite_error(name, np.flatnonzero(bad).tolist())
        return outputs

    def map_batches(self, fn: Callable[[_T, bool], _R], items: Iterable[_T], on_lane: bool = False) -> Iterator[_R]:
        """``fn(item, lane)`` for every item, yielding the results in order. With "alone" execution, several
        items and more than one thread, the calls run on a pool of ``threads`` workers with ``lane=True``
        (``fn`` passes it to ``run``), at most two per worker in flight so memory stays bounded; otherwise one
        after another on the calling thread with ``lane=False``. onnxruntime releases the GIL while it runs.

        ``on_lane=True``: the caller is itself one of ``threads`` threads sharing this model (a server's
        workers), so every call runs on the calling thread, on the 1-thread session (``lane=True``) where there
        is one: the pool's hand-offs would only add to each call, and the main session's threads would
        oversubscribe the cores."""
        items = list(items)
        if on_lane:
            lane = self.threads > 1
            if lane and self._lane_session is None:
                self._make_lane_session()
            for item in items:
                yield fn(item, lane)
            return
        if self.execution != "alone" or self.threads == 1 or len(items) < 2:
            for item in items:
                yield fn(item, False)
            return
        pool = self._lanes()
        pending: deque[Future[_R]] = deque()
        try:
            for item in items:
                if len(pending) >= 2 * self.threads:
                    yield pending.popleft().result()
                pending.append(pool.submit(fn, item, True))
            while pending:
                yield pending.popleft().result()
        finally:  # an error or an abandoned generator: no orphan work keeps running
            for f in pending:
                f.cancel()

    def warm_up(self) -> None:
        """Build now what the first calls would build on the way: each session's first run and, for "alone"
        execution on several threads, the lane pool and its 1-thread session (~100 ms for MiniLM on 2 cores).
        ``onnxpipe serve`` calls it at start, so the first burst of requests does not pay for them.

        Example:
            >>> model = AutoModelForSequenceClassification.from_pretrained("minilm-sst2"); model.warm_up()
        """
        if set(self._graph_inputs) - {"input_ids", "attention_mask", "token_type_ids"}:
            return  # a decoder: its feeds carry the cache, and the generation loop builds its own
        feeds = self.feeds({"input_ids": np.zeros((1, 8), dtype=np.int64)})
        self.run(feeds, self._output_names)
        for _ in self.map_batches(lambda _, lane: self.run(feeds, self._output_names, lane), range(2 * self.threads)):
            pass

    def _make_lane_session(self) -> None:
        with self._lane_lock:
            if self._lane_session is None:
                self._lane_session = create_session(self.manifest, self.choice, 1, self.profile)

    def _lanes(self) -> ThreadPoolExecutor:
        self._make_lane_session()
        with self._lane_lock:
            # A forked child inherits the pool object but not its threads: work queued there would wait forever.
            if self._pool is None or self._pool_pid != os.getpid():
                self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="onnxpipe-lane")
                self._pool_pid = os.getpid()
                weakref.finalize(self, self._pool.shutdown, wait=False)
            return self._pool

    def run_bound(self, binding: Any, shape: tuple[int, ...]) -> list[Any]:
        """Run with an IO binding (the generation loop's cache stays in onnxruntime's OrtValues); return the
        bound outputs as OrtValues. ``shape`` is the input_ids shape, for the error message."""
        try:
            self.session.run_with_iobinding(binding)
        except Exception as e:
            raise InferenceError(
                f"onnxruntime failed on {self.manifest.folder} ({self.precision}, {self.device}) "
                f"with input_ids of shape {shape}: {e}"
            ) from e
        return list(binding.get_outputs())

    def non_finite_error(self, output: str, rows: list[int], what: str = "batch row") -> NonFiniteOutputError:
        """The error for NaN/inf in ``output`` at ``rows`` (batch rows here; pipelines name their inputs)."""
        where = f"{what} {rows[0]}" if len(rows) == 1 else f"{what}s {rows[:10]}{' ...' if len(rows) > 10 else ''}"
        error = NonFiniteOutputError(
            f"{self.manifest.folder} ({self.precision}, {self.device}) computed NaN or inf in output {output!r} for "
            f"{where}; its predictions would be meaningless. The model file (or its weights) is broken, or this "
            f"precision overflows on that input: try another precision (the folder has "
            f"{sorted(self.manifest.variants)}), or re-export and validate the folder"
        )
        error.output, error.rows = output, rows
        return error

    def _empty(self, ids: np.ndarray, output_names: list[str]) -> list[np.ndarray]:
        """Outputs of zero rows, shaped as the graph declares them (symbolic sequence axes: the input's width)."""
        if ids.ndim != 2 or len(ids):
            raise ValueError(
                f"input_ids has shape {ids.shape}: every row needs at least one token (the tokenizer "
                "adds its special tokens even to an empty text); pass the tokenizer's output"
            )
        meta = {o.name: o for o in self.session.get_outputs()}
        fallback = {"logits": len(self.labels), "last_hidden_state": self.manifest.hidden_size or 0}
        out = []
        for name in output_names:
            shape = [0]
            for axis, dim in enumerate(meta[name].shape[1:], start=1):
                if isinstance(dim, int):
                    shape.append(dim)
                elif axis == 1 and len(meta[name].shape) > 2:  # (batch, sequence, ...)
                    shape.append(ids.shape[1])
                else:
                    shape.append(fallback.get(name, 0))
            out.append(np.zeros(shape, dtype=_DTYPES.get(meta[name].type, np.float32)))
        return out

    def __call__(
        self, input_ids: Any = None, attention_mask: Any = None, token_type_ids: Any = None, **kwargs: Any
    ) -> ModelOutput:
        if input_ids is None:
            raise TypeError("input_ids is required (pass the tokenizer's output: model(**inputs))")
        if kwargs:
            raise TypeError(f"unexpected inputs {sorted(kwargs)}; this model takes {self._graph_inputs}")
        feeds = self.feeds({"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids})
        names = self._output_names
        return ModelOutput(zip(names, self.run(feeds, names)))

    def __getstate__(self) -> NoReturn:  # pickling refused (see NOT_PICKLABLE); nothing here ever unpickles
        name = type(self).__name__
        raise TypeError(NOT_PICKLABLE.format(what=f"a {name}", how=f"{name}.from_pretrained(...)"))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.manifest.folder}, device={self.device!r}, precision={self.precision!r})"


class AutoModel(OnnxModel):
    """The encoder: ``model(**inputs).last_hidden_state`` has shape (batch, sequence, hidden).

    Example:
        >>> model = AutoModel.from_pretrained("minilm-sst2")
        >>> model(**tokenizer(["hi"], return_tensors="np")).last_hidden_state.shape
        (1, 3, 384)
    """

    output_name = "last_hidden_state"


class AutoModelForSequenceClassification(OnnxModel):
    """Encoder plus classification head: ``model(**inputs).logits`` has shape (batch, num_labels).

    Example:
        >>> model = AutoModelForSequenceClassification.from_pretrained("minilm-sst2")
        >>> model.labels
        {0: 'NEGATIVE', 1: 'POSITIVE'}
    """

    output_name = "logits"


class AutoModelForTokenClassification(OnnxModel):
    """Encoder plus token-classification head: ``model(**inputs).logits`` is (batch, sequence, num_labels)."""

    output_name = "logits"
    graph = "token-classification"


class AutoModelForMaskedLM(OnnxModel):
    """Encoder plus language-model head: ``model(**inputs).logits`` is (batch, sequence, vocabulary)."""

    output_name = "logits"
    graph = "fill-mask"


class AutoModelForQuestionAnswering(OnnxModel):
    """Encoder plus span head: ``model(**inputs)`` has ``start_logits`` and ``end_logits`` (batch, sequence)."""

    output_name = ("start_logits", "end_logits")
    graph = "question-answering"
