"""onnxpipe.ray and the batch job on a local Ray (one per session, see conftest's ``ray_session``).

Every output row is checked against the in-process pipeline on the same rows, in the same groups (a batch of
``batch_rows`` rows is one pipeline chunk, so equality is exact); ids and order must survive the actors.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

import onnxpipe  # noqa: E402
from onnxpipe.errors import BatchJobError  # noqa: E402

pytestmark = pytest.mark.ray
SST2_DEV = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "sst2" / "dev.tsv"


def _sentences(n: int) -> list[str]:
    if SST2_DEV.exists():
        lines = SST2_DEV.read_text(encoding="utf-8").splitlines()[1 : n + 1]
        return [line.split("\t", 1)[1] for line in lines]
    return [f"sentence {i}: {'good' if i % 2 else 'bad'} movie, " + "really " * (i % 7) for i in range(n)]


@pytest.fixture(scope="module")
def classifier():
    return onnxpipe.pipeline("sentiment-analysis", model="minilm-sst2")


def _expected(pipe, texts: list[str], batch_rows: int, **kwargs) -> list:
    """The in-process pipeline over the same row groups the job uses."""
    return [r for i in range(0, len(texts), batch_rows) for r in pipe(texts[i : i + batch_rows], **kwargs)]


def test_ray_engine_matches_pipeline_and_keeps_order(ray_session, classifier, tmp_path):
    from onnxpipe.ray import run_batch

    texts = _sentences(300)
    ids = [f"doc-{i:04d}" for i in range(len(texts))][::-1]  # not sorted: order must come from the input
    src = tmp_path / "in.parquet"
    pq.write_table(pa.table({"id": ids, "text": texts}), src, row_group_size=70)  # blocks != batches
    report = run_batch(
        "minilm-sst2", src, tmp_path / "ray.parquet", engine="ray", actors=2, batch_rows=64, progress=None
    )
    out = pq.read_table(tmp_path / "ray.parquet")
    assert report["rows"] == len(texts) and report["errors"] == 0
    assert out.column("id").to_pylist() == ids
    assert out.column("text").to_pylist() == texts
    want = _expected(classifier, texts, 64)
    assert out.column("label").to_pylist() == [w["label"] for w in want]
    assert out.column("score").to_pylist() == [w["score"] for w in want]
    assert out.column("error").null_count == len(texts)
    run_batch("minilm-sst2", src, tmp_path / "local.parquet", engine="local", batch_rows=64)
    assert pq.read_table(tmp_path / "local.parquet").equals(out)


def _dying_predictor(monkeypatch, tmp_path: Path, kills: int) -> Path:
    """Make the Ray engine's actors kill their own process (``os._exit``, as a segfault or the OOM killer would)
    on their first ``kills`` batches in all, counted across actors and restarts in marker files (O_EXCL: one
    actor wins each). Returns the folder where every actor start leaves a file."""
    from onnxpipe import ray as onnxpipe_ray

    starts = tmp_path / "starts"
    starts.mkdir()
    base = onnxpipe_ray._JobPredictor

    # Defined in here, so Ray's cloudpickle ships the class by value: the actors cannot import this module.
    class DyingPredictor(base):  # type: ignore[misc,valid-type]
        def __init__(self, *args, **kwargs):
            (starts / f"{os.getpid()}-{len(os.listdir(starts))}").touch()
            super().__init__(*args, **kwargs)

        def __call__(self, batch):
            for k in range(kills):
                try:
                    os.close(os.open(tmp_path / f"killed-{k}", os.O_CREAT | os.O_EXCL))
                except FileExistsError:
                    continue
                os._exit(1)
            return super().__call__(batch)

    monkeypatch.setattr(onnxpipe_ray, "_JobPredictor", DyingPredictor)
    return starts


def test_killed_actor_is_restarted_and_its_batch_retried(ray_session, classifier, monkeypatch, tmp_path):
    """An actor process dies on the job's first batch: Ray restarts it, the batch runs again, and the file is the
    one an undisturbed job writes (every row equal to the in-process pipeline, ids in input order)."""
    from onnxpipe.ray import run_batch

    starts = _dying_predictor(monkeypatch, tmp_path, kills=1)
    texts = _sentences(200)
    ids = [f"doc-{i:04d}" for i in range(len(texts))][::-1]
    src = tmp_path / "in.parquet"
    pq.write_table(pa.table({"id": ids, "text": texts}), src, row_group_size=50)
    report = run_batch("minilm-sst2", src, tmp_path / "out.parquet", engine="ray", actors=2, batch_rows=64, retries=1)
    assert (tmp_path / "killed-0").exists()  # an actor did die mid-job
    assert len(list(starts.iterdir())) >= 3  # two actors, and the one restarted after the kill
    out = pq.read_table(tmp_path / "out.parquet")
    assert report["rows"] == len(texts) and report["errors"] == 0
    assert out.column("id").to_pylist() == ids and out.column("text").to_pylist() == texts
    want = _expected(classifier, texts, 64)
    assert out.column("label").to_pylist() == [w["label"] for w in want]
    assert out.column("score").to_pylist() == [w["score"] for w in want]
    assert sorted(p.name for p in tmp_path.glob("*.parquet")) == ["in.parquet", "out.parquet"]


def test_batch_that_always_kills_its_actor_fails_the_job(ray_session, monkeypatch, tmp_path):
    """Retries are bounded (Ray Data's own default retries forever): after 1 + retries deaths the job stops with
    onnxpipe's error, and nothing is written, not even a partial file."""
    from ray.data import Dataset

    from onnxpipe.ray import _retry_options, run_batch

    # Where Ray no longer takes the retry options (2.64, it says), Ray Data retries forever: fail, do not hang.
    assert _retry_options(Dataset.map_batches, 1), "this Ray's map_batches takes no max_task_retries"
    _dying_predictor(monkeypatch, tmp_path, kills=1000)
    src = tmp_path / "in.parquet"
    pq.write_table(pa.table({"text": _sentences(20)}), src)
    with pytest.raises(BatchJobError, match=r"its Ray actor on each of 2 tries \(--retries 1\).*nothing was written"):
        run_batch("minilm-sst2", src, tmp_path / "out.parquet", engine="ray", batch_rows=64, retries=1)
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".parquet" or "partial" in p.name) == ["in.parquet"]
    with pytest.raises(BatchJobError, match=r"retries=-1.*0 or more"):
        run_batch("minilm-sst2", src, tmp_path / "out.parquet", engine="ray", retries=-1)


@pytest.mark.parametrize("batch_format", ["numpy", "pandas"])
def test_predictor_in_map_batches_all_scores(ray_session, classifier, batch_format):
    from ray.data import ActorPoolStrategy

    from onnxpipe.ray import Predictor

    texts = _sentences(40)
    rows = [{"id": i, "text": t} for i, t in enumerate(texts)]
    # One block, one batch: the pipeline sees the same group as ``classifier(texts)``, so scores match exactly
    # (int8 graphs quantize activations per batch; other groupings differ in the last digits).
    ds = ray_session.data.from_items(rows, override_num_blocks=1).map_batches(
        Predictor,
        fn_constructor_kwargs={"model": "minilm-sst2", "top_k": None},
        compute=ActorPoolStrategy(size=1),
        num_cpus=1,
        batch_size=64,
        batch_format=batch_format,
    )
    got = ds.take_all()
    want = classifier(texts, top_k=None)
    assert [r["id"] for r in got] == list(range(40))
    for g, w in zip(got, want):
        assert list(g["labels"]) == [x["label"] for x in w]
        assert list(g["scores"]) == [x["score"] for x in w]
        assert (g["label"], g["score"], g["error"]) == (w[0]["label"], w[0]["score"], None)


def test_predictor_non_string_rows_get_the_runtimes_error(ray_session, classifier):
    pd = pytest.importorskip("pandas")
    from onnxpipe.ray import Predictor

    batch = pd.DataFrame({"text": ["I love it", 42, b"bytes", "awful", float("nan")]})
    out = Predictor("minilm-sst2")(batch)
    errors = out.column("error").to_pylist()
    assert [e is None for e in errors] == [True, False, False, True, False]
    assert "int" in errors[1] and "bytes" in errors[2] and "float" in errors[4]
    want = classifier(["I love it", "awful"])
    assert [out.column("label")[i].as_py() for i in (0, 3)] == [w["label"] for w in want]
    # The mixed column has no Arrow type: it is written as text, the row's error says what the model saw.
    assert out.column("text").to_pylist()[1] == "42"


def test_predictor_threads_follow_num_cpus(ray_session):
    from onnxpipe.ray import assigned_cpus

    assert ray_session.get(ray_session.remote(num_cpus=1)(assigned_cpus).remote()) == 1
    assert ray_session.get(ray_session.remote(num_cpus=2)(assigned_cpus).remote()) == 2


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.mark.parametrize("engine", ["local", "ray"])
def test_bad_rows_skip_and_fail(ray_session, classifier, tmp_path, engine):
    from onnxpipe.ray import run_batch

    texts = _sentences(30)
    rows = [{"id": i, "text": t} for i, t in enumerate(texts)]
    rows[7]["text"] = None  # null
    del rows[19]["text"]  # missing
    src = _jsonl(tmp_path / "in.jsonl", rows)
    report = run_batch("minilm-sst2", src, tmp_path / "out.parquet", engine=engine, batch_rows=16)
    out = pq.read_table(tmp_path / "out.parquet")
    assert report["errors"] == 2 and [e["row"] for e in report["first_errors"]] == [7, 19]
    errors = out.column("error").to_pylist()
    assert [i for i, e in enumerate(errors) if e] == [7, 19] and "NoneType" in errors[7]
    assert out.column("id").to_pylist() == list(range(30))
    # A bad row is left out of its batch (rows 0-15, 16-29); the others run as one group, as the pipeline would.
    for batch in (range(0, 16), range(16, 30)):
        good = [i for i in batch if i not in (7, 19)]
        want = classifier([texts[i] for i in good])
        assert [out.column("label")[i].as_py() for i in good] == [w["label"] for w in want]
        assert [out.column("score")[i].as_py() for i in good] == [w["score"] for w in want]

    with pytest.raises(BatchJobError, match=r"row 7 .*NoneType.*--on-error skip"):
        run_batch("minilm-sst2", src, tmp_path / "fail.parquet", engine=engine, on_error="fail", batch_rows=16)
    assert not (tmp_path / "fail.parquet").exists()
    assert not list(tmp_path.glob(".*partial"))


def test_write_is_atomic(monkeypatch, tmp_path):
    from onnxpipe import _batch_job

    src = tmp_path / "in.parquet"
    pq.write_table(pa.table({"text": _sentences(50)}), src)
    out = tmp_path / "out.parquet"
    out.write_bytes(b"the previous output")
    calls = []

    def crash(self, table, *args, **kwargs):
        calls.append(table.num_rows)
        if len(calls) == 2:
            raise OSError("disk full (simulated)")
        return original(self, table, *args, **kwargs)

    original = pq.ParquetWriter.write_table
    monkeypatch.setattr(pq.ParquetWriter, "write_table", crash)
    with pytest.raises(OSError, match="disk full"):
        _batch_job.run_batch("minilm-sst2", src, out, batch_rows=20, force=True)
    assert calls == [20, 20]  # it crashed mid-file, after a batch had been written
    assert out.read_bytes() == b"the previous output"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.parquet", "out.parquet"]  # no .partial left


# The child of the test below: run a job, SIGKILL itself (no __exit__, no finally) once a batch is in the file.
_KILLED_WHILE_WRITING = """
import os, signal, sys
import pyarrow.parquet as pq
from onnxpipe._batch_job import run_batch

original = pq.ParquetWriter.write_table
def write_then_die(self, table, *args, **kwargs):
    original(self, table, *args, **kwargs)
    os.kill(os.getpid(), signal.SIGKILL)
pq.ParquetWriter.write_table = write_then_die
run_batch("minilm-sst2", sys.argv[1], sys.argv[2], batch_rows=20, force=True)
"""


def test_process_killed_while_writing_leaves_no_partial_output(tmp_path):
    """SIGKILL mid-file (what the OOM killer or a preempted node does: no cleanup runs): the output path keeps
    its previous content, and the half-written file is the hidden temporary, which Parquet readers skip."""
    import signal
    import subprocess
    import sys

    src = tmp_path / "data" / "in.parquet"
    src.parent.mkdir()
    pq.write_table(pa.table({"text": _sentences(50)}), src)
    out = tmp_path / "out" / "scored.parquet"
    out.parent.mkdir()
    previous = pa.table({"text": ["yesterday's run"], "label": ["POSITIVE"]})
    pq.write_table(previous, out)
    child = subprocess.run(
        [sys.executable, "-c", _KILLED_WHILE_WRITING, str(src), str(out)], capture_output=True, text=True, timeout=300
    )
    assert child.returncode == -signal.SIGKILL, child.stderr[-2000:]
    assert pq.read_table(out).equals(previous)
    (partial,) = [p for p in out.parent.iterdir() if p != out]
    assert partial.name.startswith(".scored.parquet.") and partial.name.endswith(".partial")
    assert partial.stat().st_size > 100  # more than the 4-byte header: it died with a batch in the file
    with pytest.raises(pa.ArrowInvalid):  # no footer: not a Parquet file
        pq.read_table(partial)
    assert pq.read_table(out.parent).equals(previous)  # a reader of the folder sees the finished file only


@pytest.mark.torch
def test_embeddings_column_on_ray(ray_session, tiny_export, tmp_path):
    from onnxpipe.ray import run_batch

    folder = tiny_export("bert", "feature-extraction")
    texts = ["hello world", "a longer sentence about nothing in particular", "", "émoji 👍"]
    src = _jsonl(tmp_path / "in.jsonl", [{"text": t} for t in texts])
    run_batch(folder, src, tmp_path / "emb.parquet", task="sentence-embeddings", engine="ray")
    col = pq.read_table(tmp_path / "emb.parquet").column("embedding")
    want = onnxpipe.pipeline("sentence-embeddings", model=folder)(texts)
    assert col.type == pa.list_(pa.float32(), want.shape[1])
    got = col.combine_chunks().flatten().to_numpy().reshape(len(texts), -1)
    assert got.dtype == np.float32 and got.shape == want.shape
    np.testing.assert_array_equal(got, want)


@pytest.mark.torch
@pytest.mark.parametrize("strategy", ["none", "simple"])
def test_entities_column(tiny_export, tmp_path, strategy):
    from onnxpipe.ray import run_batch

    folder = tiny_export("bert", "token-classification")
    texts = ["My name is Wolfgang and I live in Berlin", "hello", ""]
    src = _jsonl(tmp_path / "in.jsonl", [{"text": t} for t in texts])
    run_batch(folder, src, tmp_path / "ner.parquet", aggregation_strategy=strategy)
    got = pq.read_table(tmp_path / "ner.parquet").column("entities").to_pylist()
    want = onnxpipe.pipeline("ner", model=folder)(texts, aggregation_strategy=strategy)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert [{**e, "score": pytest.approx(float(e["score"]), abs=1e-6)} for e in w] == g


@pytest.mark.torch
def test_question_answering_columns(tiny_export, tmp_path):
    from onnxpipe.ray import run_batch

    folder = tiny_export("bert", "question-answering")
    rows = [
        {"q": "Where do I live?", "c": "My name is Wolfgang and I live in Berlin"},
        {"q": "Who?", "c": "Ada wrote the first program."},
    ]
    run_batch(folder, _jsonl(tmp_path / "in.jsonl", rows), tmp_path / "qa.parquet", column="q", pair_column="c")
    out = pq.read_table(tmp_path / "qa.parquet")
    want = onnxpipe.pipeline("question-answering", model=folder)(
        [{"question": r["q"], "context": r["c"]} for r in rows]
    )
    assert out.column("answer").to_pylist() == [w["answer"] for w in want]
    assert out.column("start").to_pylist() == [w["start"] for w in want]
    assert out.column("end").to_pylist() == [w["end"] for w in want]
    assert out.column("score").to_pylist() == pytest.approx([w["score"] for w in want], abs=1e-6)
    # A row the pipeline refuses (an empty question) gets the runtime's error; the job goes on.
    bad = _jsonl(tmp_path / "bad.jsonl", [*rows, {"q": "", "c": "empty question"}])
    run_batch(folder, bad, tmp_path / "bad.parquet", column="q", pair_column="c")
    out = pq.read_table(tmp_path / "bad.parquet")
    assert out.column("error").to_pylist()[:2] == [None, None]
    assert out.column("answer")[2].as_py() is None and "must not be empty" in out.column("error")[2].as_py()


def test_job_refuses_bad_arguments(tmp_path):
    from onnxpipe._batch_job import BatchJob, run_batch

    src = tmp_path / "in.parquet"
    pq.write_table(pa.table({"label": ["x"], "text": ["fine"]}), src)
    with pytest.raises(BatchJobError, match=r"no column 'review'.*\['label', 'text'\].*--column"):
        run_batch("minilm-sst2", src, tmp_path / "o.parquet", column="review")
    with pytest.raises(BatchJobError, match=r"\['label'\] are already input columns.*--prefix"):
        run_batch("minilm-sst2", src, tmp_path / "o.parquet")
    run_batch("minilm-sst2", src, tmp_path / "o.parquet", prefix="pred_")
    assert pq.read_table(tmp_path / "o.parquet").column_names == [
        "label",
        "text",
        "pred_label",
        "pred_score",
        "pred_error",
    ]
    with pytest.raises(BatchJobError, match=r"format of .*in\.xlsx.*--format"):
        run_batch("minilm-sst2", tmp_path / "in.xlsx", tmp_path / "o.parquet")
    with pytest.raises(BatchJobError, match=r"on_error='ignore'.*\['skip', 'fail'\]"):
        BatchJob.create("minilm-sst2", on_error="ignore")
    with pytest.raises(TypeError, match="unexpected arguments"):
        BatchJob.create("minilm-sst2", stride=3).build_pipeline()


def test_text_pair_column(classifier, tmp_path):
    from onnxpipe.ray import run_batch

    rows = [{"a": "The movie was long.", "b": "I loved every minute."}, {"a": "Terrible acting.", "b": None}]
    run_batch(
        "minilm-sst2",
        _jsonl(tmp_path / "in.jsonl", rows),
        tmp_path / "o.parquet",
        column="a",
        pair_column="b",
        top_k=None,
    )
    out = pq.read_table(tmp_path / "o.parquet")
    # A row without its pair is read as a single text, as the pipeline reads {"text": ...}.
    want = classifier([{"text": rows[0]["a"], "text_pair": rows[0]["b"]}, {"text": rows[1]["a"]}], top_k=None)
    assert out.column("scores").to_pylist() == [[x["score"] for x in w] for w in want]
    assert out.column("error").to_pylist() == [None, None]
