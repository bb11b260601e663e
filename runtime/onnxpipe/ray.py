"""onnxpipe on Ray Data (``pip install 'onnxpipe[ray]'``): a callable class for ``Dataset.map_batches``.

    >>> import ray
    >>> from ray.data import ActorPoolStrategy
    >>> from onnxpipe.ray import Predictor
    >>> ds = ray.data.read_parquet("s3://bucket/reviews/")
    >>> scored = ds.map_batches(Predictor, fn_constructor_kwargs={"model": "minilm-sst2", "column": "review"},
    ...                         compute=ActorPoolStrategy(size=4), num_cpus=2, batch_size=2048, batch_format="numpy")

Each actor builds its pipeline once (onnxruntime sessions do not pickle) with as many onnxruntime threads as
CPUs Ray gave it. Ray Data restarts a killed actor and retries its batch, by default forever
(``max_restarts=-1, max_task_retries=-1``). ``run_batch`` bounds the retries (``DEFAULT_RETRIES``), so that a
batch that kills its actor every time fails the job instead; in your own pipeline, ``max_task_retries=3`` to
``map_batches`` does the same (Ray 2.60 warns that these extra options go in Ray 2.64). The model folder must
be readable at the same path on every node. Importing this module registers the ``ray`` engine of
``run_batch`` (the batch job itself never imports it). ``import onnxpipe`` never imports this module; ray itself is
imported only when an actor or the Ray engine starts.
"""

from __future__ import annotations

import inspect
import math
import os
import warnings
from collections.abc import Iterator
from typing import Any

import pyarrow as pa

from ._batch_engines import register_engine
from ._batch_job import DEFAULT_RETRIES, FORMATS, BatchJob, as_text, run_batch
from .errors import BatchJobError

__all__ = ["Predictor", "run_batch", "assigned_cpus", "DEFAULT_RETRIES"]


def assigned_cpus() -> int | None:
    """The CPUs Ray assigned to the calling actor or task (rounded, at least 1); None outside a Ray worker.

    >>> ray.get(ray.remote(num_cpus=2)(assigned_cpus).remote())
    2
    """
    import ray

    if not ray.is_initialized():
        return None
    try:
        # Ray leaves get_assigned_resources unannotated.
        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU")  # type: ignore[no-untyped-call]
    except AssertionError:  # Ray's way of saying "the driver, not a worker": no assignment to follow
        return None
    return max(1, round(cpus)) if cpus else None


def _column(values: Any) -> pa.Array:
    try:
        return pa.array(values, from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        # Mixed Python types (a number among strings) have no Arrow type: written as text; the rows the model
        # could not read still carry their error.
        return pa.array([as_text(v) for v in values], pa.string())


def _to_arrow(batch: Any) -> tuple[pa.Table, Any]:
    """A Ray batch in any batch_format ("pyarrow", "pandas", "numpy") as an Arrow table, and a column getter
    that reads the raw values (so a bad value reaches the runtime, and its error, as it is)."""
    if isinstance(batch, pa.Table):
        # Ray Data keeps a column of mixed Python values (JSON Lines read by pandas: a number among texts) as
        # pickled objects, an Arrow extension type; written as it is, the output held pickle bytes.
        odd = [n for n, t in zip(batch.column_names, batch.schema.types) if isinstance(t, pa.ExtensionType)]
        if not odd:
            return batch, None
        values = {n: batch.column(n).to_pylist() for n in odd}
        for n in odd:
            batch = batch.set_column(batch.column_names.index(n), n, _column(values[n]))
        return batch, lambda name: values[name] if name in values else batch.column(name).to_pylist()
    if isinstance(batch, dict):  # numpy
        return pa.table({k: _column(list(v) if v.dtype == object else v) for k, v in batch.items()}), lambda name: list(
            batch[name]
        )
    return pa.table({k: _column(batch[k].tolist()) for k in batch.columns}), lambda name: batch[name].tolist()


class Predictor:
    """Runs an onnxpipe task on each Ray Data batch; returns the batch (as an Arrow table) with output columns.

    Outputs by task: text-classification ``label``/``score`` (and ``labels``/``scores`` with ``top_k``,
    ``top_k=None`` for every label), sentence-embeddings ``embedding`` (fixed-size list of float32),
    token-classification ``entities`` and fill-mask ``predictions`` (lists of structs), question-answering
    ``answer``/``score``/``start``/``end``, zero-shot ``label``/``score``/``labels``/``scores``; always ``error``
    (null, or the runtime's error for that row). ``threads`` defaults to the actor's ``num_cpus``.

    Example:
        >>> ds.map_batches(Predictor, fn_constructor_kwargs={"model": "minilm-sst2", "top_k": None},
        ...                compute=ActorPoolStrategy(size=2), num_cpus=1, batch_format="pandas")
    """

    def __init__(self, model: Any, *, threads: int | None = None, **options: Any):
        # options: BatchJob.create's (task, column, pair_column, on_error, prefix, precision, batch_size, verify)
        # and the task's call arguments (top_k, normalize, ...), checked there once
        self.job = BatchJob.create(model, **options)
        self.pipe = self.job.build_pipeline(threads or assigned_cpus())

    def __call__(self, batch: Any) -> pa.Table:
        table, raw = _to_arrow(batch)
        return self.job.process(self.pipe, table, raw)


class _JobPredictor(Predictor):
    """The engine's actors: the job was checked once on the driver, so only the pipeline is built here."""

    def __init__(self, job: BatchJob, threads: int | None = None):
        self.job = job
        self.pipe = job.build_pipeline(threads or assigned_cpus())


def _retry_options(map_batches: Any, retries: int) -> dict[str, int]:
    """The actor options that bound the retries: restart a dead actor always (as Ray Data does), retry the batch
    it held ``retries`` times. Ray Data takes them only as ``map_batches``' extra keyword arguments, which Ray
    2.60 says go in 2.64, with no named replacement for these two: where they are gone, {} (Ray Data's own
    default then applies: retry forever)."""
    kinds = {p.kind for p in inspect.signature(map_batches).parameters.values()}
    return {"max_restarts": -1, "max_task_retries": retries} if inspect.Parameter.VAR_KEYWORD in kinds else {}


def ray_tables(
    job: BatchJob,
    path: str,
    fmt: str,
    batch_rows: int,
    actors: int = 1,
    cpus_per_actor: float = 1,
    retries: int = DEFAULT_RETRIES,
) -> Iterator[pa.Table]:
    """The Ray engine of ``run_batch``: output tables in input order, each the job run on ``batch_rows`` rows.

    Blocks are re-cut to exactly ``batch_rows`` rows before inference, so every actor sees the same row groups
    as the local engine does and the two write the same output. A batch whose actor dies is retried on the
    restarted actor up to ``retries`` times; then the job fails with BatchJobError.
    """
    try:
        import ray
        from ray.data import ActorPoolStrategy, DataContext
        from ray.exceptions import RayActorError
    except ImportError as e:
        raise ImportError("the Ray engine needs Ray Data. Install it with: pip install 'onnxpipe[ray]'") from e

    # The actors hold their CPUs for the whole job; read and re-cut tasks need at least one more, or the job
    # waits forever for a CPU (seen with 2 actors on a 2-CPU Ray).
    needed = actors * cpus_per_actor + 1
    started = not ray.is_initialized()
    if started:
        common: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
        try:  # RAY_ADDRESS, else a `ray start` head on this machine
            ray.init(address=os.environ.get("RAY_ADDRESS") or "auto", **common)
        except ConnectionError:
            if os.environ.get("RAY_ADDRESS"):
                raise
            # None running: a Ray started here counts at least `needed` logical CPUs (reading is light next
            # to inference, so one logical CPU beyond the cores for it is fair).
            ray.init(num_cpus=max(os.cpu_count() or 1, math.ceil(needed)), **common)
    total = ray.cluster_resources().get("CPU", 0)  # type: ignore[no-untyped-call]  # unannotated in Ray
    if total < needed:
        if started:
            ray.shutdown()
        raise BatchJobError(
            f"{actors} actors of {cpus_per_actor} CPUs need {needed:g} CPUs with the reader, and "
            f"this Ray cluster has {total:g}. Use fewer --actors or --cpus-per-actor, or add nodes"
        )
    ctx = DataContext.get_current()
    saved = ctx.execution_options.preserve_order, ctx.enable_progress_bars
    ctx.execution_options.preserve_order, ctx.enable_progress_bars = True, False
    try:
        _, _, reader, reader_args = FORMATS[fmt]
        if "://" not in path:  # Ray's read tasks do not run in this directory
            path = os.path.abspath(path)
        ds = getattr(ray.data, reader)(path, **reader_args(job.input_columns))
        job.check_columns(ds.schema().names)  # here, not in the actors: Ray hands their errors back as text
        ds = ds.repartition(target_num_rows_per_block=batch_rows, strict=True)
        with warnings.catch_warnings():  # Ray's deprecation of the retry options: known, see _retry_options
            warnings.filterwarnings("ignore", message=r"`ray_remote_args` is deprecated")
            ds = ds.map_batches(
                _JobPredictor,
                fn_constructor_kwargs={"job": job, "threads": max(1, round(cpus_per_actor))},
                compute=ActorPoolStrategy(size=actors),
                num_cpus=cpus_per_actor,
                batch_size=batch_rows,
                batch_format="pyarrow",
                **_retry_options(ds.map_batches, retries),
            )
        try:
            yield from ds.iter_batches(batch_size=None, batch_format="pyarrow")
        except RayActorError as e:
            raise BatchJobError(
                f"a batch of {batch_rows} rows lost its Ray actor on each of {retries + 1} tries "
                f"(--retries {retries}); nothing was written. A row may crash onnxruntime or exhaust the actor's "
                "memory: find it with --engine local on that part of the input, or give actors more memory "
                "(fewer --actors)"
            ) from e
    finally:
        ctx.execution_options.preserve_order, ctx.enable_progress_bars = saved
        if started:
            ray.shutdown()


def _engine(
    job: BatchJob, path: str, fmt: str, batch_rows: int, threads: int | None, **options: Any
) -> Iterator[pa.Table]:
    # Each actor runs as many onnxruntime threads as it has CPUs (--cpus-per-actor), so ``threads`` is not used.
    return ray_tables(job, path, fmt, batch_rows, **options)


register_engine("ray", _engine)
