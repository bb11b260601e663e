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
