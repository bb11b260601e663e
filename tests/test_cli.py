"""The ``onnxpipe`` command, tested in-process: ``_cli.main(argv)`` with captured output and a fake stdin.

``predict`` is checked over every input source (arguments, --input FILE, stdin via ``-`` and ``--input -``)
against the Python pipeline on the same texts; ``info`` and ``export`` against the folder they describe
or write.
"""

from __future__ import annotations

import io
import json
import tracemalloc

import pytest

import onnxpipe
from onnxpipe._cli import main
from onnxpipe._cli_io import keep_chars, read_lines

TEXTS = [
    "I've been waiting for a HuggingFace course my whole life.",
    "I hate this so much!",
    "Great phone 👍 but the battery dies fast",
    "naïve café — Zürich",
]


def _predict_argv(source: str, tmp_path, monkeypatch, texts=TEXTS) -> list[str]:
    """argv (after 'predict') feeding ``texts`` through ``source``."""
    if source == "args":
        return list(texts)
    if source == "file":
        path = tmp_path / "in.txt"
        path.write_text("\n".join(texts) + "\n", encoding="utf-8")
        return ["--input", str(path)]
    monkeypatch.setattr("sys.stdin", io.StringIO("\n".join(texts) + "\n"))
    return ["-"] if source == "stdin-dash" else ["--input", "-"]


def _json_lines(out: str) -> list:
    return [json.loads(line) for line in out.splitlines()]


@pytest.mark.parametrize("source", ["args", "file", "stdin-dash", "stdin-input"])
def test_predict_default_model(source, tmp_path, monkeypatch, capsys):
    argv = _predict_argv(source, tmp_path, monkeypatch)
    assert main(["predict", *argv]) == 0
    got = _json_lines(capsys.readouterr().out)
    want = onnxpipe.pipeline("sentiment-analysis")(TEXTS)
    assert len(got) == len(TEXTS)
    assert [g["label"] for g in got] == [w["label"] for w in want]
    assert got[0]["label"] == "POSITIVE" and got[1]["label"] == "NEGATIVE"
    for g, w in zip(got, want):
        assert g["score"] == pytest.approx(w["score"], abs=1e-6)


@pytest.mark.parametrize("top_k,expected_len", [(0, 2), (1, 1)])
def test_predict_top_k(top_k, expected_len, capsys):
    assert main(["predict", "--top-k", str(top_k), *TEXTS[:2]]) == 0
    got = _json_lines(capsys.readouterr().out)
    assert [len(g) for g in got] == [expected_len] * 2
    assert got[0][0]["label"] == "POSITIVE"
    if top_k == 0:
        assert {r["label"] for r in got[1]} == {"NEGATIVE", "POSITIVE"}
        assert sum(r["score"] for r in got[1]) == pytest.approx(1.0, abs=1e-5)


def test_predict_keeps_empty_lines_from_stdin(monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO("good\n\nbad\n"))
    assert main(["predict", "-"]) == 0
    assert len(_json_lines(capsys.readouterr().out)) == 3  # one line out per line in, empty ones included


def test_predict_without_input_fails(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["predict"])
    assert exc.value.code != 0
    assert "no input" in str(exc.value.code)


def test_predict_unknown_model_exits_2(tmp_path, capsys):
    assert main(["predict", "--model", str(tmp_path / "nope"), "hello"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "nope" in err and "onnxpipe export" in err


def test_info_summarises_the_manifest(capsys):
    assert main(["info", "minilm-sst2"]) == 0
    out = capsys.readouterr().out
    assert "text-classification" in out and "NEGATIVE" in out and "POSITIVE" in out
    assert "onnx/model_quantized.onnx" in out and "MB" in out and "label_agreement" in out
    assert main(["info", "minilm-sst2", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    # the embedded folder was written as 1.0; this runtime (1.1: variants.*.ort, vocab_pruning) reads every 1.x
    assert data["format_version"].split(".")[0] == onnxpipe.FORMAT_VERSION.split(".")[0]
    assert data["labels"] == {"0": "NEGATIVE", "1": "POSITIVE"}


def test_info_shows_the_int8_recipe_search_the_embedded_model_was_chosen_by(capsys):
    assert main(["info", "minilm-sst2"]) == 0
    out = capsys.readouterr().out
    from onnxpipe._manifest import load_manifest
    from onnxpipe._resolve import resolve_model

    found = load_manifest(resolve_model("minilm-sst2")).variants["int8"]
    search, recipe = found.recipe_search, found.recipe
    assert search is not None and recipe is not None
    chosen_lines = [line for line in out.splitlines() if line.strip().startswith("* ")]
    assert len(chosen_lines) == 1 and chosen_lines[0].split()[1] == search["chosen"] == recipe["name"]
    # the shipped search tried the candidates its data.candidates_tried lists (a full search is slow on 2 cores)
    assert sum(name in out for name in search["candidates"]) == len(search["candidates"]) >= 3
    measured = {n: r for n, r in search["candidates"].items() if "skipped" not in r}
    failing = [n for n, r in measured.items() if not r["gates_met"]]
    assert failing  # the previous default's full-range weights can saturate: measured, shown, never chosen
    assert all(any(line.strip().startswith(f"x {n} ") for line in out.splitlines()) for n in failing)
    # static candidates without --calibration-data: listed with the reason, not measured
    skipped = [line for line in out.splitlines() if "skipped: static calibration needs --calibration-data" in line]
    assert len(skipped) == len(search["candidates"]) - len(measured)


def test_info_on_a_folder_without_manifest_exits_2(tmp_path, capsys):
    assert main(["info", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "manifest.json" in err and "onnxpipe export" in err


def test_export_without_the_extra_says_how_to_install(monkeypatch, tmp_path, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a))
    assert main(["export", "some/model", "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert "pip install 'onnxpipe[export]'" in err and "torch" in err and "Traceback" not in err
    assert not (tmp_path / "m").exists()


@pytest.mark.torch
def test_export_then_refuse_existing_folder(tiny_checkpoint, tmp_path, capsys):
    ckpt = tiny_checkpoint("bert", "feature-extraction")
    out = tmp_path / "exported"
    argv = ["export", str(ckpt), "--task", "feature-extraction", "--out", str(out), "--precision", "int8", "--quiet"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out}" in printed and "feature-extraction" in printed
    # after the path, the folder's summary: the very text `onnxpipe info` prints for it
    assert main(["info", str(out)]) == 0
    assert printed == f"wrote {out}\n" + capsys.readouterr().out
    manifest = json.loads((out / "manifest.json").read_text())
    assert set(manifest["variants"]) == {"int8"}  # fp32 was only the intermediate...
    assert not (out / "onnx" / "model.onnx").exists()
    assert manifest["intermediate_validation"]["fp32"]["max_abs_diff_hidden"] <= 1e-4  # ...its figures remain
    before = (out / "manifest.json").read_bytes()

    assert main(argv) == 2  # exists, no --force
    err = capsys.readouterr().err
    assert str(out) in err and "already exists" in err and "--force" in err
    assert (out / "manifest.json").read_bytes() == before  # untouched
    assert not list(tmp_path.glob(".exported.*"))  # no partial folder left behind

    assert main([*argv, "--force"]) == 0
    capsys.readouterr()
    # the exported folder then serves predict, with the task read from its manifest
    assert main(["predict", "--model", str(out), "hello world"]) == 0
    (row,) = _json_lines(capsys.readouterr().out)
    assert len(row) == 1 and len(row[0][0]) == 32  # [1, tokens, hidden] nested list


@pytest.mark.torch
def test_predict_on_a_tiny_classifier_matches_python(tiny_export, capsys):
    folder = tiny_export("roberta", "text-classification")
    assert main(["predict", "--model", str(folder), "--precision", "fp32", "--top-k", "0", *TEXTS]) == 0
    got = _json_lines(capsys.readouterr().out)
    want = onnxpipe.pipeline("text-classification", model=folder, precision="fp32")(TEXTS, top_k=None)
    assert [[r["label"] for r in g] for g in got] == [[r["label"] for r in w] for w in want]
    assert {r["label"] for r in got[0]} == {"NEGATIVE", "NEUTRAL", "POSITIVE"}


# -- how lines are read: the same rules for --input FILE and stdin (tests/test_cli_streams.py runs real streams) --


@pytest.mark.parametrize(
    "data,keep,lines",
    [
        (b"a\rb\nc\r\nd", 100, ["a\rb", "c", "d"]),  # a bare \r stays inside its line; \r\n ends one
        (b"\n\n", 100, ["", ""]),
        (b"x\r", 100, ["x"]),
        (b"a\r\r\n", 100, ["a\r"]),  # one trailing \r is dropped, not all
        (b"\xffz\n\xc3\n", 100, ["\ufffdz", "\ufffd"]),  # invalid UTF-8 becomes U+FFFD
        (b"", 100, []),
        (b"abcdef\nxy\n", 3, ["abc", "xy"]),  # an overlong line keeps its start and still counts once
        ("é😀€a\n".encode(), 2, ["é😀"]),
        (b"a" * 300_000 + b"\r\nb\n", 10, ["a" * 10, "b"]),  # longer than a read piece
        (b"a" * 65_535 + b"\r\nb", 10**6, ["a" * 65_535, "b"]),  # \r and \n in different pieces
        (b"a" * 65_535 + "é".encode() + b"\n", 10**6, ["a" * 65_535 + "é"]),  # a character across two pieces
        (b"a" * 65_536 + b"\xc3", 10**6, ["a" * 65_536 + "\ufffd"]),  # a cut character at the end of the input
    ],
)
def test_read_lines(data, keep, lines):
    assert list(read_lines(io.BufferedReader(io.BytesIO(data)), keep)) == lines


def test_keep_chars_covers_the_model_maximum():
    assert keep_chars(512) == 1 << 20 and keep_chars(100_000) == 6_400_000


@pytest.mark.parametrize("source", ["file", "stdin"])
def test_an_overlong_line_is_cut_without_changing_its_answer(source, tmp_path, monkeypatch, capsys):
    """A 24 MiB line: read in pieces, only its start kept (Python-level peak far below the line's size), and
    its answer equals the pipeline's on the whole text; the next line is still the next input."""
    huge = "what a wonderful film, " * (24 * 2**20 // 23)
    data = (huge + "\nterrible\n").encode()
    if source == "file":
        (tmp_path / "in.txt").write_bytes(data)
        argv = ["--input", str(tmp_path / "in.txt")]
    else:
        monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BufferedReader(io.BytesIO(data)), encoding="utf-8"))
        argv = ["-"]
    del data
    tracemalloc.start()
    try:
        assert main(["predict", *argv]) == 0
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    got = _json_lines(capsys.readouterr().out)
    want = onnxpipe.pipeline("sentiment-analysis")([huge, "terrible"])
    assert [g["label"] for g in got] == [w["label"] for w in want]
    assert [g["score"] for g in got] == pytest.approx([w["score"] for w in want], abs=1e-6)
    assert peak < len(huge) // 3, f"peak {peak / 2**20:.1f} MiB for a {len(huge) / 2**20:.0f} MiB line"


def test_a_non_finite_result_is_an_error_not_invalid_json(monkeypatch, capsys):
    class NaNPipeline:  # stands for a model whose outputs overflow: the CLI must not print NaN as JSON
        def iter(self, inputs, **kwargs):
            yield [{"label": "POSITIVE", "score": 0.9}]
            yield [{"label": "NEGATIVE", "score": float("nan")}]

    monkeypatch.setattr("onnxpipe._factory.build_pipeline", lambda *a, **k: NaNPipeline())
    assert main(["predict", "fine", "broken"]) == 2
    captured = capsys.readouterr()
    assert _json_lines(captured.out) == [[{"label": "POSITIVE", "score": 0.9}]]  # what came before stays
    assert captured.err.startswith("error: the result for input 1 holds a non-finite number")
    assert captured.err.count("\n") == 1 and "NaN" not in captured.out


# -- --version -------------------------------------------------------------------------------------------------
def _version_output(capsys) -> str:
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    return capsys.readouterr().out


def test_version_comes_from_the_installed_package(monkeypatch, capsys):
    from importlib.metadata import version

    assert _version_output(capsys) == f"onnxpipe {version('onnxpipe')}\n"
    # The metadata, not a copy typed into the code: a different installed version shows.
    monkeypatch.setattr("onnxpipe._cli.version", lambda name: {"onnxpipe": "9.8.7"}[name])
    assert _version_output(capsys) == "onnxpipe 9.8.7\n"


def test_version_without_package_metadata_is_the_modules_own(monkeypatch, capsys):
    from importlib.metadata import PackageNotFoundError

    def missing(name):
        raise PackageNotFoundError(name)

    monkeypatch.setattr("onnxpipe._cli.version", missing)
    assert _version_output(capsys) == f"onnxpipe {onnxpipe.__version__}\n"


def test_the_modules_version_is_the_projects():
    # The fallback above must not go stale: __version__ and pyproject.toml say the same.
    import re
    from pathlib import Path

    pyproject = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text(encoding="utf-8")
    declared = re.search(r'^version = "([^"]+)"', pyproject, re.MULTILINE)
    assert declared is not None and declared.group(1) == onnxpipe.__version__


@pytest.mark.parametrize(
    "command",
    [
        ["predict", "x"],
        ["bench", "m"],
        ["batch", "m", "--input", "a.csv", "--output", "b.parquet"],
        ["serve", "m"],
        ["generate", "--model", "m", "hi"],
    ],
    ids=lambda c: c[0],
)
def test_every_command_takes_every_precision_a_folder_can_have(command):
    """One list of precisions (the manifest's) for every command: serve and bench refused int4, which decoder
    folders have, and generate refused int8-exact."""
    from onnxpipe._cli import build_parser
    from onnxpipe._manifest import PRECISIONS

    parser = build_parser()
    for precision in PRECISIONS:
        assert parser.parse_args([*command, "--precision", precision]).precision == precision
