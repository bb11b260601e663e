"""One batch job for both engines: read a table → rows → pipeline → output columns → atomic Parquet write.

The local engine and the Ray engine differ only in where ``BatchJob.process`` runs (in this process, or in
Ray actors); reading is cut into the same ``batch_rows``-row slices, which is also the pipeline's own chunk
size, so both engines hand the pipeline the same inputs in the same groups and write the same bytes. (Same
groups matter: int8 graphs quantize activations per batch, so a row's score depends, in the last digits, on
its batch.) pyarrow is imported here at the top, so nothing imported by ``import onnxpipe`` may import this.
"""

from __future__ import annotations

import importlib
import io
import posixpath
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

try:
    import pyarrow as pa
    import pyarrow.csv as pa_csv
    import pyarrow.fs as pa_fs
    import pyarrow.json as pa_json
    import pyarrow.parquet as pq
except ImportError as e:  # the CLI turns this into the pip line and exit 2
    raise ImportError(
        "onnxpipe batch needs pyarrow. Install it with: pip install 'onnxpipe[batch]' "
        "(or 'onnxpipe[ray]' for the Ray engine)"
    ) from e

from ._factory import pipeline
from ._inputs import clean_text
from ._manifest import load_manifest
from ._pipelines import Pipeline
from ._resolve import resolve_model
from ._tasks import canonical_task
from .errors import BatchJobError, OnnxpipeError

# The pipeline's own chunk size (Pipeline.__init__'s default): a batch of this many rows is one chunk, so the
# job's results equal ``pipe(all_rows)`` row for row.
DEFAULT_BATCH_ROWS = 2048
ON_ERROR = ("skip", "fail")
# How often the Ray engine retries a batch whose actor died (the process crashed or was killed, its node lost):
# Ray restarts the actor, as often as it takes, and resubmits the batch. Bounded, unlike Ray Data's default
# (-1, forever): a batch that kills its actor every time (a row that crashes onnxruntime, an actor over its
# memory) then fails the job after 1 + DEFAULT_RETRIES attempts instead of looping without end.
DEFAULT_RETRIES = 3
# Errors that belong to one input (a non-string, an empty question, an over-long input with truncation off).
ROW_ERRORS = (TypeError, ValueError, OnnxpipeError)


# -- input ----------------------------------------------------------------------------------------------
def _rows_per_slice(tables: Iterable[pa.Table], rows: int) -> Iterator[pa.Table]:
    """Re-cut a stream of tables into slices of exactly ``rows`` rows (the last may be shorter)."""
    pending: list[pa.Table] = []
    held = 0
    for t in tables:
        pending.append(t)
        held += t.num_rows
        while held >= rows:
            joined = pa.concat_tables(pending)
            yield joined.slice(0, rows)
            rest = joined.slice(rows)
            pending, held = [rest], rest.num_rows
    if held:
        yield pa.concat_tables(pending)


def _read_parquet(fs: pa_fs.FileSystem, path: str, rows: int) -> Iterator[pa.Table]:
    with fs.open_input_file(path) as f:
        for b in pq.ParquetFile(f).iter_batches(batch_size=rows):
            yield pa.Table.from_batches([b])


def _read_jsonl(fs: pa_fs.FileSystem, path: str, rows: int) -> Iterator[pa.Table]:
    with fs.open_input_stream(path) as f:
        if not hasattr(pa_json, "open_json"):  # pyarrow < 19: no streaming JSON reader, the file at once
            yield pa_json.read_json(f)
            return
        for b in pa_json.open_json(f):
            yield pa.Table.from_batches([b])


def _read_csv(fs: pa_fs.FileSystem, path: str, rows: int) -> Iterator[pa.Table]:
    with fs.open_input_stream(path) as f:
        for b in pa_csv.open_csv(f):
            yield pa.Table.from_batches([b])


def _read_text(fs: pa_fs.FileSystem, path: str, rows: int) -> Iterator[pa.Table]:
    # As ray.data.read_text: one row per line, column "text", empty lines dropped; read a slice at a time.
    with fs.open_input_stream(path) as raw, io.TextIOWrapper(raw, encoding="utf-8", errors="replace") as f:
        lines: list[str] = []
        for line in f:
            line = line.rstrip("\r\n")
            if line:
                lines.append(line)
            if len(lines) == rows:
                yield pa.table({"text": pa.array(lines, pa.string())})
                lines = []
        if lines:
            yield pa.table({"text": pa.array(lines, pa.string())})


# format -> (file name endings, local reader, name of the ray.data reader and its extra arguments)
FORMATS: dict[str, tuple[tuple[str, ...], Callable[..., Iterator[pa.Table]], str, dict[str, Any]]] = {
    "parquet": ((".parquet", ".pq"), _read_parquet, "read_parquet", {}),
    "jsonl": ((".jsonl", ".ndjson", ".json"), _read_jsonl, "read_json", {"lines": True}),
    "csv": ((".csv",), _read_csv, "read_csv", {}),
    "text": ((".txt", ".text"), _read_text, "read_text", {}),
}


def detect_format(path: str, given: str | None = None) -> str:
    """The input format: ``given``, or the one the file name ends with."""
    if given is not None:
        if given not in FORMATS:
            raise BatchJobError(f"input format {given!r} is not one of {sorted(FORMATS)}")
        return given
    for name, (endings, *_rest) in FORMATS.items():
        if str(path).lower().endswith(endings):
            return name
    known = ", ".join(e for endings, *_ in FORMATS.values() for e in endings)
    raise BatchJobError(
        f"cannot tell the format of {path!r} from its name (known: {known}); pass --format {'|'.join(FORMATS)}"
    )


def read_local(path: str, fmt: str, rows: int) -> Iterator[pa.Table]:
    """Slices of exactly ``rows`` rows of a local or remote (any pyarrow filesystem URI) file."""
    fs, inner = pa_fs.FileSystem.from_uri(_uri(path))
    return _rows_per_slice(FORMATS[fmt][1](fs, inner, rows), rows)


def _uri(path: Any) -> str:
    text = str(path)
    return text if "://" in text else str(Path(text).resolve())


# -- inputs per task ------------------------------------------------------------------------------------
# Tasks that read two columns, and the keys the pipeline wants them under; the defaults for --column.
PAIR_KEYS: dict[str, tuple[str, str]] = {
    "text-classification": ("text", "text_pair"),
    "question-answering": ("question", "context"),
}
DEFAULT_COLUMNS: dict[str, tuple[str, str | None]] = {"question-answering": ("question", "context")}


# -- outputs per task: results (None where the row failed) -> typed Arrow columns ------------------------
def _col(values: list[Any], type_: pa.DataType) -> pa.Array:
    return pa.array(values, type=type_)


def _ranked_columns(ranked: list[list[tuple[str, float]] | None], all_ranks: bool) -> dict[str, pa.Array]:
    cols = {
        "label": _col([r[0][0] if r else None for r in ranked], pa.string()),
        "score": _col([r[0][1] if r else None for r in ranked], pa.float64()),
    }
    if all_ranks:  # top_k given (None: every label), best first
        cols["labels"] = _col([[x[0] for x in r] if r is not None else None for r in ranked], pa.list_(pa.string()))
        cols["scores"] = _col([[x[1] for x in r] if r is not None else None for r in ranked], pa.list_(pa.float64()))
    return cols


def _classification(results: list[Any], ctx: dict[str, Any]) -> dict[str, pa.Array]:
    rows = [
        None if r is None else [(x["label"], float(x["score"])) for x in (r if isinstance(r, list) else [r])]
        for r in results
    ]
    return _ranked_columns(rows, "top_k" in ctx["kwargs"])


def _zero_shot(results: list[Any], ctx: dict[str, Any]) -> dict[str, pa.Array]:
    rows = [None if r is None else list(zip(r["labels"], map(float, r["scores"]))) for r in results]
    return _ranked_columns(rows, True)


def _embeddings(results: list[Any], ctx: dict[str, Any]) -> dict[str, pa.Array]:
    dim = ctx["hidden_size"] or next((len(r) for r in results if r is not None), 0)
    flat = np.zeros((len(results), dim), np.float32)
    for i, r in enumerate(results):
        if r is not None:
            flat[i] = r
    mask = pa.array([r is None for r in results], pa.bool_())
    return {"embedding": pa.FixedSizeListArray.from_arrays(pa.array(flat.ravel()), dim, mask=mask)}


def _hidden_states(results: list[Any], ctx: dict[str, Any]) -> dict[str, pa.Array]:
    return {"hidden_states": _col([None if r is None else r[0] for r in results], pa.list_(pa.list_(pa.float32())))}


_ENTITY_TOKENS = pa.list_(
    pa.struct(
        [
            ("entity", pa.string()),
            ("score", pa.float64()),
            ("index", pa.int64()),
            ("word", pa.string()),
            ("start", pa.int64()),
            ("end", pa.int64()),
        ]
    )
)
_ENTITY_GROUPS = pa.list_(
    pa.struct(
        [
            ("entity_group", pa.string()),
            ("score", pa.float64()),
            ("word", pa.string()),
            ("start", pa.int64()),
            ("end", pa.int64()),
        ]
    )
)


def _entities(results: list[Any], ctx: dict[str, Any]) -> dict[str, pa.Array]:
    grouped = (ctx["kwargs"].get("aggregation_strategy") or "none") != "none"
    type_ = _ENTITY_GROUPS if grouped else _ENTITY_TOKENS
    names = [f.name for f in type_.value_type]
    rows = [
        None if r is None else [{k: (float(e[k]) if k == "score" else e[k]) for k in names} for e in r] for r in results
    ]
    return {"entities": _col(rows, type_)}


_ANSWER = pa.struct([("answer", pa.string()), ("score", pa.float64()), ("start", pa.int64()), ("end", pa.int64())])


def _answers(results: list[Any], ctx: dict[str, Any]) -> dict[str, pa.Array]:
    rows = [
        None if r is None else [{**a, "score": float(a["score"])} for a in (r if isinstance(r, list) else [r])]
        for r in results
    ]
    if (ctx["kwargs"].get("top_k") or 1) > 1:  # the pipeline reads top_k=None as 1
        return {"answers": _col(rows, pa.list_(_ANSWER))}
    best = _col([r[0] if r else None for r in rows], _ANSWER)
    # flatten(), not field(): a failed row's struct is null, and only flatten carries that into each child.
    return dict(zip((f.name for f in _ANSWER), best.flatten()))


_FILL = pa.list_(
    pa.struct([("score", pa.float64()), ("token", pa.int64()), ("token_str", pa.string()), ("sequence", pa.string())])
)


def _fill_mask(results: list[Any], ctx: dict[str, Any]) -> dict[str, pa.Array]:
    rows = [None if r is None else [{**o, "score": float(o["score"])} for o in r] for r in results]
    return {"predictions": _col(rows, _FILL)}


OUTPUTS: dict[str, Callable[[list[Any], dict[str, Any]], dict[str, pa.Array]]] = {
    "text-classification": _classification,
    "zero-shot-classification": _zero_shot,
    "sentence-embeddings": _embeddings,
    "feature-extraction": _hidden_states,
    "token-classification": _entities,
    "question-answering": _answers,
    "fill-mask": _fill_mask,
}


# -- the job ----------------------------------------------------------------------------------------------
@dataclass
class BatchJob:
    """What to run on every batch: the model, the task, which columns feed it and what it writes.

    Plain data, so Ray can ship it to actors; each actor builds its own pipeline (sessions do not pickle).

    >>> job = BatchJob.create("minilm-sst2", column="sentence")
    >>> out = job.process(job.build_pipeline(), pa.table({"sentence": ["I love it", None]}))
    >>> out.column("label").to_pylist(), out.column("error").to_pylist()[1][:9]
    (['POSITIVE', None], 'TypeError')
    """

    model: str
    task: str
    column: str
    pair_column: str | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)
    on_error: str = "skip"
    prefix: str = ""
    precision: str | None = None
    batch_size: int = 32
    verify: bool = True

    @classmethod
    def create(
        cls,
        model: Any,
        task: str | None = None,
        column: str | None = None,
        pair_column: str | None = None,
        on_error: str = "skip",
        prefix: str = "",
        precision: str | None = None,
        batch_size: int = 32,
        verify: bool = True,
        **kwargs: Any,
    ) -> BatchJob:
        """Check the arguments once, on the driver, before any data moves; ``task`` defaults to the folder's."""
        folder = resolve_model(model)
        if task is None:
            task = load_manifest(folder, verify=False).task
        name = canonical_task(task)
        if on_error not in ON_ERROR:
            raise BatchJobError(f"on_error={on_error!r}; use one of {list(ON_ERROR)}")
        default_column, default_pair = DEFAULT_COLUMNS.get(name, ("text", None))
        column = column or default_column
        pair_column = pair_column or default_pair
        if pair_column is not None and name not in PAIR_KEYS:
            raise BatchJobError(f"a pair column ({pair_column!r}) is for {sorted(PAIR_KEYS)}, not {name}")
        if name == "question-answering" and pair_column is None:
            raise BatchJobError(
                "question-answering reads a question column and a context column: "
                "pass column='question', pair_column='context' (--column/--pair-column)"
            )
        return cls(
            model=str(folder),
            task=name,
            column=column,
            pair_column=pair_column,
            kwargs=dict(kwargs),
            on_error=on_error,
            prefix=prefix,
            precision=precision,
            batch_size=batch_size,
            verify=verify,
        )

    @property
    def input_columns(self) -> list[str]:
        return [self.column] + ([self.pair_column] if self.pair_column else [])

    def build_pipeline(self, threads: int | None = None) -> Pipeline:
        """The task's pipeline; its arguments are checked here, on an empty input, not on every row."""
        pipe = pipeline(
            self.task,
            model=self.model,
            precision=self.precision,
            batch_size=self.batch_size,
            threads=threads,
            verify=self.verify,
        )
        list(pipe.iter([], **self.kwargs))
        return pipe

    def check_columns(self, names: list[str]) -> None:
        """Raise BatchJobError if the input (column ``names``) lacks a column the job reads, or has one it writes.
        The Ray engine calls this on the driver: Ray passes an actor's exception on as text only."""
        missing = [c for c in self.input_columns if c not in names]
        if missing:
            raise BatchJobError(
                f"the input has no column {missing[0]!r}; its columns are {names}. "
                "Name the text column with --column (and --pair-column for pairs)"
            )
        # The names a converter writes do not depend on the values: one failed row is enough to learn them.
        writes = [*OUTPUTS[self.task]([None], {"kwargs": self.kwargs, "hidden_size": 1}), "error"]
        clash = [self.prefix + k for k in writes if self.prefix + k in names]
        if clash:
            raise BatchJobError(
                f"the output columns {clash} are already input columns; pass a prefix "
                "(--prefix pred_) or rename them in the input"
            )

    def _items(self, table: pa.Table, raw: Callable[[str], list[Any]] | None) -> tuple[list[Any], list[str | None]]:
        """The pipeline inputs of the rows, and per row the runtime's input-check error (or None)."""
        self.check_columns(table.column_names)
        values = raw or (lambda name: table.column(name).to_pylist())
        columns = {name: values(name) for name in self.input_columns}
        errors: list[str | None] = [None] * table.num_rows
        # The runtime's own check (clean_text) first, row by row: a bad row is left out of its batch instead
        # of failing it, and the batch's other rows run as one group.
        for name, col in columns.items():
            optional = name == self.pair_column and self.task == "text-classification"  # no pair: one text
            for i, v in enumerate(col):
                if errors[i] is None and not (optional and v is None):
                    try:
                        clean_text(v, i, f"column {name!r}, batch row")
                    except TypeError as e:
                        errors[i] = f"TypeError: {e}"
        first = columns[self.column]
        if self.pair_column is None:
            return first, errors
        a, b = PAIR_KEYS[self.task]
        return [
            {a: x, b: y} if y is not None or self.task != "text-classification" else {a: x}
            for x, y in zip(first, columns[self.pair_column])
        ], errors

    def _run(self, pipe: Pipeline, items: list[Any]) -> list[tuple[Any, str | None]]:
        """(result, None) or (None, error) per item. A failing group is halved until the bad rows stand alone,
        so one bad row costs about log2(rows) extra calls, not a call per row."""
        try:
            return [(r, None) for r in pipe.iter(items, **self.kwargs)]
        except ROW_ERRORS as e:
            if len(items) == 1:
                return [(None, f"{type(e).__name__}: {e}")]
        mid = len(items) // 2
        return self._run(pipe, items[:mid]) + self._run(pipe, items[mid:])

    def _columns(self, pipe: Pipeline, results: list[Any]) -> dict[str, pa.Array]:
        ctx = {"kwargs": self.kwargs, "hidden_size": pipe.model.manifest.hidden_size or 0}
        return {self.prefix + k: v for k, v in OUTPUTS[self.task](results, ctx).items()}

    def process(self, pipe: Pipeline, table: pa.Table, raw: Callable[[str], list[Any]] | None = None) -> pa.Table:
        """The input table with the task's output columns and an ``error`` column appended. ``raw(name)``, if
        given, reads a column's original values (a Ray numpy/pandas batch) instead of the Arrow table's."""
        items, errors = self._items(table, raw)
        good = [i for i, err in enumerate(errors) if err is None]
        results: list[Any] = [None] * len(items)
        for i, (result, err) in zip(good, self._run(pipe, [items[i] for i in good]) if good else []):
            results[i], errors[i] = result, err
        if self.on_error == "fail":
            bad = next((i for i, err in enumerate(errors) if err), None)
            if bad is not None:
                raise BatchJobError(
                    f"row {bad} of this batch ({self.column}={items[bad]!r:.60}): {errors[bad]}. "
                    "Pass on_error='skip' (--on-error skip) to record it in the error column"
                )
        columns = self._columns(pipe, results)
        columns[self.prefix + "error"] = pa.array(errors, pa.string())
        for name, values in columns.items():
            table = table.append_column(name, values)
        return table


# -- output -----------------------------------------------------------------------------------------------
class AtomicParquetWriter:
    """Write Parquet to a hidden temporary file beside ``path`` and move it into place only on success:
    a crash or an error leaves the previous file (or none), never a half-written one.

    >>> with AtomicParquetWriter("out.parquet") as w:
    ...     w.write(pa.table({"x": [1, 2]}))
    """

    def __init__(self, path: Any):
        self.fs, self.path = pa_fs.FileSystem.from_uri(_uri(path))
        folder, name = posixpath.split(self.path)
        self.tmp = posixpath.join(folder, f".{name}.{uuid.uuid4().hex[:8]}.partial")
        self.writer: pq.ParquetWriter | None = None
        self.rows = 0

    def write(self, table: pa.Table) -> None:
        if self.writer is None:
            self.fs.create_dir(posixpath.dirname(self.tmp), recursive=True)
            self.writer = pq.ParquetWriter(self.tmp, table.schema, filesystem=self.fs)
        elif table.schema != self.writer.schema:
            table = table.cast(self.writer.schema)  # a reader may infer e.g. int32 in one block, int64 in the next
        self.writer.write_table(table)
        self.rows += table.num_rows

    def __enter__(self) -> AtomicParquetWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None and self.writer is None:
            raise BatchJobError("the input has no rows; nothing was written")
        if self.writer is not None:
            self.writer.close()
        if exc_type is None:
            self.fs.move(self.tmp, self.path)
            return
        try:
            self.fs.delete_file(self.tmp)
        except (OSError, FileNotFoundError):
            pass


# -- engines ----------------------------------------------------------------------------------------------
def _local_engine(
    job: BatchJob, path: str, fmt: str, batch_rows: int, threads: int | None, **_: Any
) -> Iterator[pa.Table]:
    pipe = job.build_pipeline(threads)
    return (job.process(pipe, t) for t in read_local(path, fmt, batch_rows))


def _ray_engine(
    job: BatchJob, path: str, fmt: str, batch_rows: int, threads: int | None, **options: Any
) -> Iterator[pa.Table]:
    tables: Iterator[pa.Table] = importlib.import_module("onnxpipe.ray").ray_tables(
        job, path, fmt, batch_rows, **options
    )
    return tables


ENGINES: dict[str, Callable[..., Iterator[pa.Table]]] = {"local": _local_engine, "ray": _ray_engine}


def run_batch(
    model: Any,
    input: Any,
    output: Any,
    *,
    task: str | None = None,
    column: str | None = None,
    pair_column: str | None = None,
    input_format: str | None = None,
    engine: str = "local",
    actors: int = 1,
    cpus_per_actor: float = 1,
    retries: int = DEFAULT_RETRIES,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    on_error: str = "skip",
    prefix: str = "",
    threads: int | None = None,
    precision: str | None = None,
    batch_size: int = 32,
    verify: bool = True,
    progress: Any = None,
    **task_kwargs: Any,
) -> dict[str, Any]:
    """Run ``task`` over every row of ``input`` (Parquet, JSONL, CSV or text; a path or pyarrow filesystem URI)
    and write the input's columns plus the task's outputs to the Parquet file ``output``, in input order.

    ``engine="local"`` runs in this process; ``"ray"`` runs ``actors`` Ray actors of ``cpus_per_actor`` CPUs
    (on the cluster at ``RAY_ADDRESS`` if set); Ray restarts an actor that dies and retries its batch up to
    ``retries`` times (default ``DEFAULT_RETRIES``), then the job fails. Rows that fail get their error in the
    ``error`` column (``on_error="skip"``) or stop the job (``"fail"``); ``output`` appears only when the whole
    job succeeded.
    ``progress``: an object with ``tick()`` called once per row (e.g. the CLI's counter). Returns a report.

    >>> report = run_batch("minilm-sst2", "reviews.parquet", "scored.parquet", column="review")
    >>> report["rows"], report["errors"]
    (120000, 3)
    """
    if engine not in ENGINES:
        raise BatchJobError(f"engine {engine!r} is not one of {sorted(ENGINES)}")
    if on_error not in ON_ERROR:
        raise BatchJobError(f"on_error={on_error!r}; use one of {list(ON_ERROR)}")
    if batch_rows < 1 or actors < 1:
        raise BatchJobError(f"batch_rows ({batch_rows}) and actors ({actors}) must be at least 1")
    if retries < 0:
        raise BatchJobError(f"retries={retries}: how often a batch is retried after its actor died; use 0 or more")
    fmt = detect_format(str(input), input_format)
    job = BatchJob.create(
        model,
        task=task,
        column=column,
        pair_column=pair_column,
        on_error="skip",
        prefix=prefix,
        precision=precision,
        batch_size=batch_size,
        verify=verify,
        **task_kwargs,
    )
    start = time.perf_counter()
    report: dict[str, Any] = {"rows": 0, "errors": 0, "first_errors": [], "engine": engine, "output": str(output)}
    error_name = prefix + "error"
    # Workers always skip; the driver applies on_error, so both engines fail at the same row, numbered
    # by its position in the input (a worker does not know where its batch starts).
    with AtomicParquetWriter(output) as writer:
        for table in ENGINES[engine](
            job, str(input), fmt, batch_rows, threads, actors=actors, cpus_per_actor=cpus_per_actor, retries=retries
        ):
            for i, err in enumerate(table.column(error_name).to_pylist()):
                if err is None:
                    continue
                row = report["rows"] + i
                if on_error == "fail":
                    raise BatchJobError(
                        f"row {row} of {input}: {err}. Nothing was written; pass --on-error skip "
                        "to record bad rows in the error column and go on"
                    )
                report["errors"] += 1
                if len(report["first_errors"]) < 10:
                    report["first_errors"].append({"row": row, "error": err})
            writer.write(table)
            report["rows"] += table.num_rows
            if progress is not None:
                for _ in range(table.num_rows):
                    progress.tick()
    report["seconds"] = time.perf_counter() - start
    return report
