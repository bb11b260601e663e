"""One batch job for both engines: read a table → rows → pipeline → output columns → atomic Parquet write.

The local engine and the Ray engine differ only in where ``BatchJob.process`` runs (in this process, or in
Ray actors); reading is cut into the same ``batch_rows``-row slices, which is also the pipeline's own chunk
size, so both engines hand the pipeline the same inputs in the same groups and write the same bytes. (Same
groups matter: int8 graphs quantize activations per batch, so a row's score depends, in the last digits, on
its batch.) pyarrow is imported here at the top, so nothing imported by ``import onnxpipe`` may import this.
"""

from __future__ import annotations

import errno
import io
import json
import os
import posixpath
import re
import socket
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

try:
    import pyarrow as pa
    import pyarrow.csv as pa_csv
    import pyarrow.fs as pa_fs
    import pyarrow.parquet as pq
except ImportError as e:  # the CLI turns this into the pip line and exit 2
    raise ImportError(
        "onnxpipe batch needs pyarrow. Install it with: pip install 'onnxpipe[batch]' "
        "(or 'onnxpipe[ray]' for the Ray engine)"
    ) from e

from ._batch_engines import get_engine, register_engine
from ._factory import build_pipeline
from ._inputs import clean_text
from ._manifest import load_manifest
from ._pipelines import Pipeline
from ._resolve import resolve_model
from ._session_options import SessionOptions
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
            joined = _concat(pending)
            yield joined.slice(0, rows)
            rest = joined.slice(rows)
            pending, held = [rest], rest.num_rows
    if held:
        yield _concat(pending)


def _concat(tables: list[pa.Table]) -> pa.Table:
    # Blocks may differ in columns (a hidden raw column in some) and in types inferred from all-null values.
    return pa.concat_tables(tables, promote_options="default")


def _read_parquet(fs: pa_fs.FileSystem, path: str, rows: int, columns: list[str]) -> Iterator[pa.Table]:
    with fs.open_input_file(path) as f:
        for b in pq.ParquetFile(f).iter_batches(batch_size=rows):
            yield pa.Table.from_batches([b])


# A hidden column per input column, beside it while the rows move from the reader to BatchJob.process: the
# JSON text of a value that is not a string (a number where the text should be), so that the row gets the
# runtime's own TypeError for that value while the column itself stays a string column (Arrow columns have one
# type; pyarrow's JSON reader fails the whole file on the mix). process removes it.
_RAW = "\x00onnxpipe raw {}"


def _with_raw(table: pa.Table, name: str) -> list[Any]:
    """Column ``name``'s values as the file held them (see _RAW)."""
    values: list[Any] = table.column(name).to_pylist()
    if _RAW.format(name) in table.column_names:
        for i, text in enumerate(table.column(_RAW.format(name)).to_pylist()):
            if text is not None:
                values[i] = json.loads(text)
    return values


def as_text(value: Any) -> str | None:
    """How a value that is not text is kept in a text column: its JSON text (``5``, ``["x"]``, ``true``), or
    ``str()`` when JSON cannot say it; a str as it is, None as null. Both engines write the same."""
    if value is None or isinstance(value, str):
        return value
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        return str(value)


def _arrow_column(values: list[Any]) -> pa.Array:
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # mixed types in a column nobody reads: kept, as text
        return pa.array([as_text(v) for v in values], pa.string())


def _jsonl_table(records: list[dict[str, Any]], columns: list[str]) -> pa.Table:
    names = list(dict.fromkeys(k for r in records for k in r))
    data: dict[str, pa.Array] = {}
    for name in names:
        values = [r.get(name) for r in records]
        if name not in columns:
            data[name] = _arrow_column(values)
            continue
        odd = [not (v is None or isinstance(v, str)) for v in values]
        data[name] = pa.array([as_text(v) for v in values], pa.string())
        if any(odd):
            data[_RAW.format(name)] = pa.array(
                [json.dumps(v, ensure_ascii=False) if o else None for v, o in zip(values, odd)], pa.string()
            )
    return pa.table(data)


def _read_jsonl(fs: pa_fs.FileSystem, path: str, rows: int, columns: list[str]) -> Iterator[pa.Table]:
    # Read here, not by pyarrow's JSON reader: that one fails the whole file when one row's text is a number
    # (a column "changed from string to number"); the policy is an error for that row and the job goes on.
    with fs.open_input_stream(path) as raw, io.TextIOWrapper(raw, encoding="utf-8", errors="replace") as f:
        records: list[dict[str, Any]] = []
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue  # JSON Lines: a blank line is no record
            try:
                record = json.loads(line)
            except ValueError as e:
                raise BatchJobError(f"line {number} of {path} is not valid JSON ({e}); fix or remove it") from None
            if not isinstance(record, dict):
                raise BatchJobError(
                    f"line {number} of {path} is a JSON {type(record).__name__}, not an object; "
                    'JSON Lines input holds one object per line, e.g. {"text": "..."}'
                )
            records.append(record)
            if len(records) == rows:
                yield _jsonl_table(records, columns)
                records = []
        if records:
            yield _jsonl_table(records, columns)


def csv_options(delimiter: str, columns: list[str]) -> dict[str, Any]:
    """pyarrow.csv options (also Ray's arrow_csv_args): the text columns are strings whatever they look like
    (``10`` is the text "10", not a number, in every row), and an empty line is a row (its text ""), so row N
    of the output is line N of the input's records."""
    return {
        # TSV has no quoting: a field that starts with " is text, not the start of a quoted field.
        "parse_options": pa_csv.ParseOptions(
            delimiter=delimiter, quote_char=False if delimiter == "\t" else '"', ignore_empty_lines=False
        ),
        "convert_options": pa_csv.ConvertOptions(column_types={c: pa.string() for c in columns}),
    }


def _read_delimited(delimiter: str) -> Callable[..., Iterator[pa.Table]]:
    def read(fs: pa_fs.FileSystem, path: str, rows: int, columns: list[str]) -> Iterator[pa.Table]:
        with fs.open_input_stream(path) as f:
            for b in pa_csv.open_csv(f, **csv_options(delimiter, columns)):
                yield pa.Table.from_batches([b])

    return read


def _read_text(fs: pa_fs.FileSystem, path: str, rows: int, columns: list[str]) -> Iterator[pa.Table]:
    # One row per line, column "text", read a slice at a time. An empty line is a row (its text ""), as in
    # predict and CSV, so row N is line N; the Ray engine reads with drop_empty_lines=False to match.
    with fs.open_input_stream(path) as raw, io.TextIOWrapper(raw, encoding="utf-8", errors="replace") as f:
        lines: list[str] = []
        for line in f:
            lines.append(line.rstrip("\r\n"))
            if len(lines) == rows:
                yield pa.table({"text": pa.array(lines, pa.string())})
                lines = []
        if lines:
            yield pa.table({"text": pa.array(lines, pa.string())})


# format -> (file name endings, local reader, name of the ray.data reader and its extra arguments given the
# input columns)
FORMATS: dict[
    str, tuple[tuple[str, ...], Callable[..., Iterator[pa.Table]], str, Callable[[list[str]], dict[str, Any]]]
] = {
    "parquet": ((".parquet", ".pq"), _read_parquet, "read_parquet", lambda columns: {}),
    "jsonl": ((".jsonl", ".ndjson", ".json"), _read_jsonl, "read_json", lambda columns: {"lines": True}),
    "csv": ((".csv",), _read_delimited(","), "read_csv", lambda columns: csv_options(",", columns)),
    "tsv": (
        (".tsv", ".tab"),
        _read_delimited("\t"),
        "read_csv",
        lambda columns: {**csv_options("\t", columns), "file_extensions": None},
    ),
    "text": ((".txt", ".text"), _read_text, "read_text", lambda columns: {"drop_empty_lines": False}),
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


def read_local(path: str, fmt: str, rows: int, columns: list[str] | None = None) -> Iterator[pa.Table]:
    """Slices of exactly ``rows`` rows of a local or remote (any pyarrow filesystem URI) file; ``columns``, the
    text columns, are read as strings."""
    fs, inner = pa_fs.FileSystem.from_uri(_uri(path))
    return _rows_per_slice(FORMATS[fmt][1](fs, inner, rows, list(columns or [])), rows)


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


def _generated(key: str) -> Callable[[list[Any], dict[str, Any]], dict[str, pa.Array]]:
    """Encoder-decoder tasks: the first (best) sequence's text, one string per row."""

    def columns(results: list[Any], ctx: dict[str, Any]) -> dict[str, pa.Array]:
        return {key: _col([None if not r else r[0].get(key) for r in results], pa.string())}

    return columns


OUTPUTS: dict[str, Callable[[list[Any], dict[str, Any]], dict[str, pa.Array]]] = {
    "summarization": _generated("summary_text"),
    "translation": _generated("translation_text"),
    "text2text-generation": _generated("generated_text"),
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
    batch_size: int = 32
    # How each worker loads the model; its threads are each engine's (the local cores, an actor's CPUs).
    options: SessionOptions = SessionOptions()

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
            batch_size=batch_size,
            options=SessionOptions(precision=precision, verify=verify),
        )

    @property
    def input_columns(self) -> list[str]:
        return [self.column] + ([self.pair_column] if self.pair_column else [])

    def build_pipeline(self, threads: int | None = None) -> Pipeline:
        """The task's pipeline; its arguments are checked here, on an empty input, not on every row."""
        pipe = build_pipeline(self.task, self.model, replace(self.options, threads=threads), batch_size=self.batch_size)
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
        values = raw or (lambda name: _with_raw(table, name))
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
        table = table.drop_columns([n for n in table.column_names if n.startswith(_RAW.format(""))])
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
OUTPUT_ENDINGS = (".parquet", ".pq")
FORCE_HINT = "pass --force (force=True) to replace it"


def _is_local(path: Any) -> bool:
    return "://" not in str(path) or str(path).startswith("file://")


def _local(path: Any) -> str:
    text = str(path)
    return text[len("file://") :] if text.startswith("file://") else text


def _check_ending(output: Any) -> None:
    name = posixpath.basename(str(output).rstrip("/"))
    if not name.lower().endswith(OUTPUT_ENDINGS) or name.lower() in OUTPUT_ENDINGS:
        raise BatchJobError(
            f"--output {output}: batch writes Parquet, and the name ends otherwise; name it e.g. "
            f"{posixpath.splitext(name)[0] or 'scored'}.parquet (endings: {', '.join(OUTPUT_ENDINGS)})"
        )


def check_output(output: Any, input: Any, force: bool) -> None:
    """Refuse, before any work, an ``output`` the job must not write: one that is the input (also through a
    symbolic or hard link), a folder, a file that exists without ``force``, or a name that is not Parquet's."""
    if _is_local(output):
        out = Path(_local(output)).expanduser()
        try:
            st = out.stat()  # follows a symbolic link: what would be replaced is the file it points to
        except FileNotFoundError:
            _check_ending(output)
            if os.path.lexists(out) and not force:  # a link to nothing: still something a move would replace
                raise BatchJobError(f"{output} already exists (a link to nothing); {FORCE_HINT}") from None
            return
        except OSError as e:
            raise BatchJobError(f"--output {output} cannot be examined ({e.strerror or e})") from e
        if out.is_dir():
            raise BatchJobError(f"--output {output} is a folder; name a file in it, e.g. {out / 'scored.parquet'}")
        if _is_local(input):
            try:
                src = os.stat(Path(_local(input)).expanduser())
            except OSError:
                src = None
            if src is not None and (src.st_dev, src.st_ino) == (st.st_dev, st.st_ino):
                raise BatchJobError(
                    f"--output {output} is the input file {input} (the same file, maybe through a link); "
                    "the job must not replace its own input. Choose another --output"
                )
        _check_ending(output)
        if not force:
            raise BatchJobError(f"{output} already exists; {FORCE_HINT}")
        return
    fs, inner = pa_fs.FileSystem.from_uri(str(output))
    info = fs.get_file_info(inner)
    if info.type == pa_fs.FileType.Directory:
        raise BatchJobError(
            f"--output {output} is a folder; name a file in it, e.g. {str(output).rstrip('/')}/scored.parquet"
        )
    if str(output) == str(input):
        raise BatchJobError(f"--output {output} is the input; the job must not replace its own input")
    _check_ending(output)
    if info.type != pa_fs.FileType.NotFound and not force:
        raise BatchJobError(f"{output} already exists; {FORCE_HINT}")


def _partial_name(name: str) -> str:
    # Who wrote it (process and machine) is in the name, so a later job to the same output can tell a dead
    # job's leftover from a running job's file.
    return f".{name}.{os.getpid()}@{_host()}.{uuid.uuid4().hex[:8]}.partial"


def _host() -> str:
    return socket.gethostname()[:32]  # the name stays under the filesystem's 255 bytes


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_stale_partials(path: str) -> list[str]:
    """Delete what killed jobs (SIGKILL, a power cut) left beside the local file ``path``: the temporary files
    named for ``path`` by a process of this machine that is gone. Returns the names deleted."""
    folder, name = os.path.split(path)
    pattern = re.compile(rf"\.{re.escape(name)}\.(\d+)@(.+)\.[0-9a-f]{{8}}\.partial")
    removed: list[str] = []
    try:
        entries = os.listdir(folder or ".")
    except OSError:
        return removed
    host = _host()
    for entry in entries:
        m = pattern.fullmatch(entry)
        if m and m.group(2) == host and not _alive(int(m.group(1))):
            try:
                os.unlink(os.path.join(folder, entry))
                removed.append(entry)
            except OSError:
                pass
    return removed


class AtomicParquetWriter:
    """Write Parquet to a hidden temporary file beside ``path`` and move it into place only on success:
    a crash or an error leaves the previous file (or none), never a half-written one. Without ``force`` a
    file that appeared at ``path`` meanwhile is not replaced (local files: the move is a hard link, which
    never replaces); the result then stays in the temporary file, and the error names it.

    >>> with AtomicParquetWriter("out.parquet") as w:
    ...     w.write(pa.table({"x": [1, 2]}))
    """

    def __init__(self, path: Any, force: bool = True):
        self.fs, self.path = pa_fs.FileSystem.from_uri(_uri(path))
        self.force = force
        self.local = isinstance(self.fs, pa_fs.LocalFileSystem)
        folder, name = posixpath.split(self.path)
        if self.local:
            remove_stale_partials(self.path)
        self.tmp = posixpath.join(folder, _partial_name(name))
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

    def _finish(self) -> None:
        if self.force or not self.local:
            self.fs.move(self.tmp, self.path)
            return
        try:
            os.link(self.tmp, self.path)  # fails if anything is at path now: nothing is replaced
        except FileExistsError:
            raise BatchJobError(
                f"{self.path} appeared while the job ran and was left as it is; the result is in {self.tmp}: "
                f"move it where you want it, or rerun with --force"
            ) from None
        except OSError as e:
            if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
                raise
            if os.path.lexists(self.path):  # no hard links on this filesystem: check, then move
                raise BatchJobError(
                    f"{self.path} appeared while the job ran and was left as it is; the result is in {self.tmp}"
                ) from None
            self.fs.move(self.tmp, self.path)
            return
        os.unlink(self.tmp)

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
            self._finish()
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
    return (job.process(pipe, t) for t in read_local(path, fmt, batch_rows, job.input_columns))


register_engine("local", _local_engine)


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
    force: bool = False,
    **task_kwargs: Any,
) -> dict[str, Any]:
    """Run ``task`` over every row of ``input`` (Parquet, JSONL, CSV or text; a path or pyarrow filesystem URI)
    and write the input's columns plus the task's outputs to the Parquet file ``output``, in input order.

    ``engine="local"`` runs in this process; ``"ray"`` (registered by importing ``onnxpipe.ray``, which exports
    this function too) runs ``actors`` Ray actors of ``cpus_per_actor`` CPUs
    (on the cluster at ``RAY_ADDRESS`` if set); Ray restarts an actor that dies and retries its batch up to
    ``retries`` times (default ``DEFAULT_RETRIES``), then the job fails. Rows that fail get their error in the
    ``error`` column (``on_error="skip"``) or stop the job (``"fail"``); ``output`` appears only when the whole
    job succeeded. An existing ``output`` is replaced only with ``force=True``; never the input itself.
    ``progress``: an object with ``tick()`` called once per row (e.g. the CLI's counter). Returns a report.

    >>> report = run_batch("minilm-sst2", "reviews.parquet", "scored.parquet", column="review")
    >>> report["rows"], report["errors"]
    (120000, 3)
    """
    run_engine = get_engine(engine)
    if on_error not in ON_ERROR:
        raise BatchJobError(f"on_error={on_error!r}; use one of {list(ON_ERROR)}")
    if batch_rows < 1 or actors < 1:
        raise BatchJobError(f"batch_rows ({batch_rows}) and actors ({actors}) must be at least 1")
    if retries < 0:
        raise BatchJobError(f"retries={retries}: how often a batch is retried after its actor died; use 0 or more")
    fmt = detect_format(str(input), input_format)
    check_output(output, input, force)
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
    with AtomicParquetWriter(output, force=force) as writer:
        for table in run_engine(
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
