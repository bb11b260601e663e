"""``onnxpipe batch``, in-process (``_cli.main``): Parquet / JSONL / CSV / text in, Parquet out, on both engines.

The Ray runs share conftest's session Ray; the command must then use it and leave it running.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

import onnxpipe  # noqa: E402
from onnxpipe._cli import main  # noqa: E402

TEXTS = [
    "I've been waiting for a HuggingFace course my whole life.",
    "I hate this so much!",
    "Great phone 👍 but the battery dies fast",
    "naïve café — Zürich",
    "",
    "meh",
    "the plot is thin , but the actors carry it",
    "worst two hours of my life",
]


@pytest.fixture(scope="module")
def classifier():
    return onnxpipe.pipeline("sentiment-analysis", model="minilm-sst2")


def _write(path: Path, fmt: str, rows: list[dict]) -> Path:
    if fmt == "parquet":
        pq.write_table(pa.table({k: [r.get(k) for r in rows] for k in rows[0]}), path, row_group_size=3)
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    elif fmt == "csv":
        import pyarrow.csv as pa_csv

        pa_csv.write_csv(pa.table({k: [r.get(k) for r in rows] for k in rows[0]}), path)
    else:
        path.write_text("".join(r["text"] + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.mark.ray
def test_same_command_local_and_ray_write_the_same_file(ray_session, classifier, tmp_path, capsys):
    texts = TEXTS * 20
    src = _write(tmp_path / "in.parquet", "parquet", [{"id": i, "text": t} for i, t in enumerate(texts)])
    common = ["batch", "minilm-sst2", "--input", str(src), "--batch-rows", "64"]
    assert main([*common, "--output", str(tmp_path / "local.parquet")]) == 0
    assert f"wrote {len(texts)} rows (0 with an error)" in capsys.readouterr().err
    assert main([*common, "--output", str(tmp_path / "ray.parquet"), "--engine", "ray", "--actors", "2"]) == 0
    assert "engine ray" in capsys.readouterr().err
    local, ray_out = pq.read_table(tmp_path / "local.parquet"), pq.read_table(tmp_path / "ray.parquet")
    assert local.equals(ray_out)
    assert local.column("id").to_pylist() == list(range(len(texts)))
    want = [r for i in range(0, len(texts), 64) for r in classifier(texts[i : i + 64])]
    assert local.column("label").to_pylist() == [w["label"] for w in want]
    assert local.column("score").to_pylist() == [w["score"] for w in want]
    assert ray_session.is_initialized()  # the command used the session's Ray and left it running
    # An actor's error (here: no such column) comes back as onnxpipe's one-line error, not Ray's traceback.
    assert main([*common, "--output", str(tmp_path / "x.parquet"), "--engine", "ray", "--column", "review"]) == 2
    assert capsys.readouterr().err.startswith("error: the input has no column 'review'")


@pytest.mark.parametrize("fmt,suffix", [("jsonl", "jsonl"), ("csv", "csv"), ("text", "txt"), ("parquet", "pq")])
def test_formats_end_to_end(fmt, suffix, classifier, tmp_path, capsys):
    src = _write(tmp_path / f"in.{suffix}", fmt, [{"text": t} for t in TEXTS if t])
    out = tmp_path / "out" / "scored.parquet"  # a folder that does not exist yet
    assert main(["batch", "minilm-sst2", "--input", str(src), "--output", str(out), "--top-k", "0"]) == 0
    table = pq.read_table(out)
    want = classifier([t for t in TEXTS if t], top_k=None)
    assert table.column("text").to_pylist() == [t for t in TEXTS if t]
    assert table.column("labels").to_pylist() == [[x["label"] for x in w] for w in want]
    assert table.column("scores").to_pylist() == [[x["score"] for x in w] for w in want]
    assert sorted(p.name for p in out.parent.iterdir()) == ["scored.parquet"]


def test_bad_rows_skip_then_fail(classifier, tmp_path, capsys):
    rows = [{"id": 0, "text": "fine"}, {"id": 1, "text": None}, {"id": 2}, {"id": 3, "text": "awful"}]
    src = _write(tmp_path / "in.jsonl", "jsonl", rows)
    out = tmp_path / "out.parquet"
    assert main(["batch", "minilm-sst2", "--input", str(src), "--output", str(out)]) == 0
    err = capsys.readouterr().err
    assert "row 1: TypeError" in err and "row 2: TypeError" in err and "(2 with an error)" in err
    table = pq.read_table(out)
    assert table.column("label").to_pylist() == [
        classifier("fine")[0]["label"],
        None,
        None,
        classifier("awful")[0]["label"],
    ]
    out.unlink()
    assert main(["batch", "minilm-sst2", "--input", str(src), "--output", str(out), "--on-error", "fail"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: row 1 of ") and "NoneType" in err and "--on-error skip" in err
    assert list(tmp_path.iterdir()) == [src]


def test_bad_arguments_exit_2(tmp_path, capsys):
    src = _write(tmp_path / "in.jsonl", "jsonl", [{"review": "fine"}])
    assert main(["batch", "minilm-sst2", "--input", str(src), "--output", str(tmp_path / "o.parquet")]) == 2
    assert "no column 'text'" in capsys.readouterr().err
    assert (
        main(
            [
                "batch",
                "minilm-sst2",
                "--input",
                str(src),
                "--output",
                str(tmp_path / "o.parquet"),
                "--column",
                "review",
                "--aggregation-strategy",
                "simple",
            ]
        )
        == 2
    )
    assert "--aggregation-strategy is for token-classification" in capsys.readouterr().err


def test_retries_option(tmp_path, capsys):
    from onnxpipe._batch_job import DEFAULT_RETRIES

    with pytest.raises(SystemExit):
        main(["batch", "--help"])
    assert f"(default {DEFAULT_RETRIES})" in " ".join(capsys.readouterr().out.split())  # help told the truth
    src = _write(tmp_path / "in.jsonl", "jsonl", [{"text": "fine"}])
    argv = ["batch", "minilm-sst2", "--input", str(src), "--output", str(tmp_path / "o.parquet"), "--retries", "-1"]
    assert main(argv) == 2
    assert "retries=-1" in capsys.readouterr().err and not (tmp_path / "o.parquet").exists()


@pytest.mark.parametrize(
    "engine,missing,extra", [("local", "pyarrow", "onnxpipe[batch]"), ("ray", "ray.data", "onnxpipe[ray]")]
)
def test_without_the_extra_prints_the_pip_line(engine, missing, extra, monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, missing, None)  # makes `import <missing>` raise ImportError
    argv = ["batch", "minilm-sst2", "--input", "x.parquet", "--output", str(tmp_path / "o.parquet"), "--engine", engine]
    assert main(argv) == 2
    assert f"pip install '{extra}'" in capsys.readouterr().err


def test_engines_register_themselves_and_the_job_never_imports_one(tmp_path):
    # In a fresh interpreter: the batch job knows only its own local engine until onnxpipe.ray is imported,
    # and asking for the Ray engine before that says how to get it instead of importing it behind the scenes.
    import subprocess

    code = (
        "import sys\n"
        "from onnxpipe import _batch_engines, _batch_job\n"
        "from onnxpipe.errors import BatchJobError\n"
        "assert 'onnxpipe.ray' not in sys.modules\n"
        "assert sorted(_batch_engines.ENGINES) == ['local'], _batch_engines.ENGINES\n"
        "for name in ('ray', 'spark'):\n"
        "    try:\n"
        "        _batch_job.run_batch('minilm-sst2', 'in.parquet', 'out.parquet', engine=name)\n"
        "    except BatchJobError as e:\n"
        "        print(e)\n"
        "import onnxpipe.ray\n"
        "assert sorted(_batch_engines.ENGINES) == ['local', 'ray'], _batch_engines.ENGINES\n"
    )
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert child.returncode == 0, child.stderr
    ray_error, other_error = child.stdout.splitlines()
    assert "engine 'ray' is not one of ['local']" in ray_error and "import onnxpipe.ray first" in ray_error
    assert "pip install 'onnxpipe[ray]'" in ray_error
    assert other_error == "engine 'spark' is not one of ['local']"


# -- what the job may write: never its input, a folder, or an existing file without --force ------------------
def _no_work(*args, **kwargs):
    raise AssertionError("the output should have been refused before the model was loaded")


def _same(tmp: Path, src: Path) -> Path:
    return src


def _symlink(tmp: Path, src: Path) -> Path:
    (tmp / "link.parquet").symlink_to(src)
    return tmp / "link.parquet"


def _hardlink(tmp: Path, src: Path) -> Path:
    import os

    os.link(src, tmp / "hard.parquet")
    return tmp / "hard.parquet"


def _precious(tmp: Path, src: Path) -> Path:
    (tmp / "precious.parquet").write_bytes(b"precious")
    return tmp / "precious.parquet"


def _folder(tmp: Path, src: Path) -> Path:
    (tmp / "out.parquet").mkdir()
    (tmp / "out.parquet" / "keep.txt").write_text("mine")
    return tmp / "out.parquet"


def _plain_folder(tmp: Path, src: Path) -> Path:
    (tmp / "results").mkdir()
    return tmp / "results"


def _csv_name(tmp: Path, src: Path) -> Path:
    return tmp / "scored.csv"


@pytest.mark.parametrize(
    "make,force,message",
    [
        (_same, False, "is the input file"),
        (_same, True, "is the input file"),
        (_symlink, True, "is the input file"),
        (_hardlink, True, "is the input file"),
        (_precious, False, "already exists; pass --force"),
        (_folder, False, "is a folder"),
        (_folder, True, "is a folder"),
        (_plain_folder, True, "is a folder"),
        (_csv_name, False, "batch writes Parquet"),
        (_csv_name, True, "batch writes Parquet"),
    ],
)
def test_output_refused_before_any_work(make, force, message, tmp_path, capsys, monkeypatch):
    from onnxpipe import _batch_job

    monkeypatch.setattr(_batch_job, "build_pipeline", _no_work)
    src = _write(tmp_path / "in.parquet", "parquet", [{"text": t} for t in TEXTS[:3]])
    out = make(tmp_path, src)
    before = {p: (p.read_bytes() if p.is_file() else None) for p in tmp_path.rglob("*")}
    argv = ["batch", "minilm-sst2", "--input", str(src), "--output", str(out)] + (["--force"] if force else [])
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert {p: (p.read_bytes() if p.is_file() else None) for p in tmp_path.rglob("*")} == before  # nothing left


def test_force_replaces_an_existing_output(classifier, tmp_path, capsys):
    src = _write(tmp_path / "in.jsonl", "jsonl", [{"text": "fine"}])
    out = tmp_path / "out.parquet"
    out.write_bytes(b"yesterday's result")
    assert main(["batch", "minilm-sst2", "--input", str(src), "--output", str(out), "--force"]) == 0
    assert pq.read_table(out).column("label").to_pylist() == [classifier("fine")[0]["label"]]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl", "out.parquet"]


# -- text columns are text: numbers in a CSV, a number in JSON, empty CSV lines, TSV ----------------------------
@pytest.mark.parametrize(
    "name,content,argv,texts,errors",
    [
        ("digits.csv", "text\n10\n42\n7\n", [], ["10", "42", "7"], [None] * 3),
        ("pair.csv", "text,pair\nhello,1\nworld,2\n", ["--pair-column", "pair"], ["hello", "world"], [None] * 2),
        ("empty-line.csv", "text,id\nhello,1\n\nworld,3\n", [], ["hello", "", "world"], [None] * 3),
        ("number.jsonl", '{"text": "a"}\n{"text": 5}\n{"text": "b"}\n', [], ["a", "5", "b"], [None, "int", None]),
        ("first-number.jsonl", '{"text": 5.5}\n{"text": "b"}\n', [], ["5.5", "b"], ["float", None]),
        ("list.jsonl", '{"text": ["x"]}\n{"text": "b"}\n', [], ['["x"]', "b"], ["list", None]),
        ("tabs.tsv", 'id\ttext\n1\t"quoted" start\n2\tplain\n', [], ['"quoted" start', "plain"], [None] * 2),
        ("tabs.txt", "id\ttext\n1\tone\n2\ttwo\n", ["--format", "tsv"], ["one", "two"], [None] * 2),
        ("lines.txt", "good\n\n   \nbad\n", [], ["good", "", "   ", "bad"], [None] * 4),
    ],
)
def test_text_columns_are_read_as_text(name, content, argv, texts, errors, classifier, tmp_path, capsys):
    src = tmp_path / name
    src.write_text(content, encoding="utf-8")
    out = tmp_path / "out.parquet"
    assert main(["batch", "minilm-sst2", "--input", str(src), "--output", str(out), *argv]) == 0
    table = pq.read_table(out)
    assert table.column("text").to_pylist() == texts
    got = table.column("error").to_pylist()
    assert [e if e is None else e.split(" (")[0].rsplit(" ", 1)[-1] for e in got] == errors, got
    assert all(e is None or e.startswith("TypeError: column 'text'") for e in got)
    if name == "empty-line.csv":
        assert table.column("id").to_pylist() == [1, None, 3]  # row numbers kept
    good = [t for t, e in zip(texts, errors) if e is None]
    pairs = "--pair-column" in argv
    want = classifier([{"text": t, "text_pair": p} for t, p in zip(good, ["1", "2"])] if pairs else good)
    assert [x for x, e in zip(table.column("label").to_pylist(), errors) if e is None] == [w["label"] for w in want]


def test_csv_text_column_turning_from_numbers_to_text_late(tmp_path):
    """pyarrow infers a CSV column's type from its first block: numbers for 600k rows, then a word, used to fail
    the whole file after the work was done."""
    from onnxpipe._batch_job import read_local

    src = tmp_path / "late.csv"
    src.write_text("text\n" + "1\n" * 600_000 + "hello\n", encoding="utf-8")
    tables = list(read_local(str(src), "csv", 100_000, ["text"]))
    assert sum(t.num_rows for t in tables) == 600_001
    assert all(t.schema.field("text").type == pa.string() for t in tables)
    assert tables[-1].column("text").to_pylist()[-1] == "hello"


SST2_DEV = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "sst2" / "dev.tsv"


@pytest.mark.skipif(not SST2_DEV.is_file(), reason="../shared/data/sst2/dev.tsv is not here")
def test_the_projects_own_tsv(classifier, tmp_path, capsys):
    out = tmp_path / "dev.parquet"
    argv = ["batch", "minilm-sst2", "--input", str(SST2_DEV), "--output", str(out), "--column", "content"]
    assert main([*argv, "--prefix", "pred_"]) == 0
    table = pq.read_table(out)
    lines = SST2_DEV.read_text(encoding="utf-8").splitlines()[1:]
    assert table.num_rows == len(lines) == 872
    assert table.column("content").to_pylist() == [line.split("\t", 1)[1] for line in lines]
    assert table.column("pred_error").null_count == table.num_rows
    gold = table.column("label").to_pylist()
    hits = sum(
        p == ("POSITIVE" if g == 1 else "NEGATIVE") for p, g in zip(table.column("pred_label").to_pylist(), gold)
    )
    assert hits / len(gold) > 0.85  # the model's 0.897 dev accuracy (its manifest): every row read, in its place


# -- signals: SIGTERM and SIGHUP clean up as Ctrl-C does; a rerun removes a dead job's temporary file ----------
_SIGNAL_AFTER_FIRST_WRITE = """
import os, signal, sys
import pyarrow.parquet as pq
from onnxpipe._cli import main

original = pq.ParquetWriter.write_table
def write_then_signal(self, table, *args, **kwargs):
    original(self, table, *args, **kwargs)
    os.kill(os.getpid(), getattr(signal, sys.argv[3]))
pq.ParquetWriter.write_table = write_then_signal
sys.exit(main(["batch", "minilm-sst2", "--input", sys.argv[1], "--output", sys.argv[2], "--batch-rows", "2"]))
"""


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGHUP"])
def test_signal_leaves_no_partial(sig, tmp_path):
    import os
    import signal
    import subprocess

    src = _write(tmp_path / "in.jsonl", "jsonl", [{"text": t} for t in TEXTS])
    out = tmp_path / "out.parquet"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    child = subprocess.run(
        [sys.executable, "-c", _SIGNAL_AFTER_FIRST_WRITE, str(src), str(out), sig],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert child.returncode == 128 + getattr(signal, sig), child.stderr[-2000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"]


def test_rerun_removes_its_own_stale_partials(tmp_path, capsys):
    import os
    import subprocess

    from onnxpipe._batch_job import _host

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    host = _host()  # the machine's name as the temporary files carry it
    src = _write(tmp_path / "in.jsonl", "jsonl", [{"text": "fine"}])
    stale = tmp_path / f".out.parquet.{dead_pid}@{host}.0123abcd.partial"
    running = tmp_path / f".out.parquet.{os.getpid()}@{host}.4567abcd.partial"  # a live job's: kept
    elsewhere = tmp_path / f".out.parquet.{dead_pid}@another-{host}.89abcdef.partial"  # another machine's: kept
    other = tmp_path / f".other.parquet.{dead_pid}@{host}.0123abcd.partial"  # another output's: kept
    for p in (stale, running, elsewhere, other):
        p.write_bytes(b"PAR1")
    assert main(["batch", "minilm-sst2", "--input", str(src), "--output", str(tmp_path / "out.parquet")]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["in.jsonl", "out.parquet", running.name, elsewhere.name, other.name]
    )


@pytest.mark.ray
def test_ray_reads_text_columns_as_the_local_engine_does(ray_session, tmp_path, capsys):
    cases = [
        ("digits.csv", "text,id\n10,1\n\n7,3\n"),
        ("tabs.tsv", 'id\ttext\n1\t"quoted" start\n'),
        ("lines.txt", "good\n\n   \nbad\n"),
    ]
    for name, content in cases:
        src = tmp_path / name
        src.write_text(content, encoding="utf-8")
        outs = [tmp_path / f"{name}.{engine}.parquet" for engine in ("local", "ray")]
        for out, engine in zip(outs, ("local", "ray")):
            assert main(["batch", "minilm-sst2", "--input", str(src), "--output", str(out), "--engine", engine]) == 0
        assert pq.read_table(outs[1]).equals(pq.read_table(outs[0])), name
        assert pq.read_table(outs[0]).column("error").null_count == pq.read_table(outs[0]).num_rows


@pytest.mark.ray
def test_ray_writes_mixed_json_values_as_the_local_engine_does(ray_session, tmp_path, monkeypatch):
    """Ray Data reads such JSON Lines with pandas and kept the mixed column as pickled objects: the output file's
    text column held pickle bytes. Also: a relative --input, which Ray's read tasks resolved elsewhere."""
    monkeypatch.chdir(tmp_path)
    lines = ['{"text": "a"}', '{"text": 5}', '{"text": ["x"]}', '{"text": "10"}', '{"text": true}']
    Path("mixed.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    for engine in ("local", "ray"):
        argv = ["batch", "minilm-sst2", "--input", "mixed.jsonl", "--output", f"{engine}.parquet", "--engine", engine]
        assert main(argv) == 0
    local, ray_out = pq.read_table("local.parquet"), pq.read_table("ray.parquet")
    assert local.column("text").to_pylist() == ["a", "5", '["x"]', "10", "true"]
    assert ray_out.equals(local), (ray_out.to_pylist(), local.to_pylist())
