"""What an export may replace at --out, with real files next to it: never the source checkpoint, never a
folder that is not an onnxpipe model folder, never what appears at --out while the export runs; and of
concurrent exports to one --out exactly one wins.

Uses the tiny random checkpoints of tests/_tiny.py (conftest fixtures); needs the export extra.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from onnxpipe import errors
from onnxpipe._cli import main as cli_main

pytestmark = pytest.mark.torch


def _export(source, out, **kwargs):
    from onnxpipe_export import export

    return export(source, task="text-classification", out=out, precisions="int8", progress=False, **kwargs)


def _tree(root: Path) -> dict[str, bytes | str]:
    """Every file, folder and link under ``root`` with its content: the bytes a faulty export would lose."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        out[rel] = ("-> " + os.readlink(p)) if p.is_symlink() else "dir" if p.is_dir() else p.read_bytes()
    return out


@pytest.fixture
def ckpt(tiny_checkpoint, tmp_path) -> Path:
    return Path(shutil.copytree(tiny_checkpoint("bert", "text-classification"), tmp_path / "ckpt"))


@pytest.fixture
def model_folder(tiny_export, tmp_path) -> Path:
    """A copy of a real exported model folder at tmp_path/model."""
    return Path(shutil.copytree(tiny_export("bert", "text-classification"), tmp_path / "model"))


@pytest.fixture
def no_load(monkeypatch):
    """Fail the test if the export gets as far as loading the checkpoint: refusals must come first."""
    import onnxpipe_export._load as load

    def loaded(*args, **kwargs):
        raise AssertionError("the checkpoint was loaded: the refusal came after the long work started")

    monkeypatch.setattr(load, "load_checkpoint", loaded)


def _one_error_line(capsys, argv: list[str]) -> str:
    rc = cli_main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


# -- refused up front, nothing touched -------------------------------------------------------------------------
def _symlink_to_ckpt(tmp_path):
    (tmp_path / "link").symlink_to(tmp_path / "ckpt")
    return tmp_path / "link"


def _with_user_file(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "thesis.tex").write_text("three years of work")
    return tmp_path / "data"


def _model_plus_notes(tmp_path):
    (tmp_path / "model" / "notes.txt").write_text("mine")
    return tmp_path / "model"


def _a_file(tmp_path):
    (tmp_path / "report.pdf").write_bytes(b"%PDF")
    return tmp_path / "report.pdf"


def _not_a_manifest(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "manifest.json").write_text('{"name": "my shopping list"}')
    return tmp_path / "data"


def _link_to_model(tmp_path):
    (tmp_path / "link").symlink_to(tmp_path / "model")
    return tmp_path / "link"


REFUSED = [
    # (case, --out given the tmp_path, force, message)
    ("out is the source", lambda t: t / "ckpt", True, r"is the source checkpoint"),
    ("out contains the source", lambda t: t, True, r"contains the source checkpoint"),
    ("out is inside the source", lambda t: t / "ckpt" / "onnx", False, r"is inside the source checkpoint"),
    ("out is a link to the source", _symlink_to_ckpt, True, r"is the source checkpoint"),
    ("out holds a user's files", _with_user_file, True, r"is not an onnxpipe model folder \(it has no manifest"),
    ("a model folder with a user's file", _model_plus_notes, True, r"holds files its manifest does not list \(notes"),
    ("out is a file", _a_file, True, r"is a file, not a model folder"),
    ("a manifest.json that is not ours", _not_a_manifest, True, r"is not an onnxpipe manifest"),
    ("out is a link to a model folder", _link_to_model, True, r"is a symbolic link"),
    ("out exists, no --force", lambda t: t / "model", False, r"already exists; pass --force"),
]


@pytest.mark.parametrize("case,make_out,force,match", REFUSED, ids=[c[0] for c in REFUSED])
def test_refused_before_any_work_and_nothing_is_touched(
    ckpt, model_folder, tmp_path, no_load, capsys, case, make_out, force, match
):
    (tmp_path / "unrelated.txt").write_text("next to the checkpoint")
    out = make_out(tmp_path)
    before = _tree(tmp_path)
    with pytest.raises(errors.ExportError, match=match):
        _export(ckpt, out, force=force)
    line = _one_error_line(capsys, ["export", str(ckpt), "--out", str(out), "--quiet"] + ["--force"] * force)
    assert re.search(match, line)
    assert _tree(tmp_path) == before  # not one file changed, and no staging folder left


@pytest.mark.parametrize("out,force", [(".", False), (".", True), ("..", True)])
def test_out_naming_the_current_directory_is_refused_up_front(ckpt, tmp_path, monkeypatch, no_load, capsys, out, force):
    work = tmp_path / "work" / "here"
    work.mkdir(parents=True)
    (work / "script.py").write_text("print('mine')")
    monkeypatch.chdir(work)
    before = _tree(tmp_path)
    match = "is the current directory" if out == "." else "is a folder above the current directory"
    with pytest.raises(errors.ExportError, match=match):
        _export(ckpt, out, force=force)
    assert match in _one_error_line(capsys, ["export", str(ckpt), "--out", out, "--quiet"] + ["--force"] * force)
    assert _tree(tmp_path) == before


def test_force_replaces_an_empty_folder_and_a_model_folder(ckpt, model_folder, tmp_path):
    (tmp_path / "empty").mkdir()
    for out in (tmp_path / "empty", model_folder):
        old = json.loads((out / "manifest.json").read_text()) if (out / "manifest.json").exists() else None
        _export(ckpt, out, force=True)
        new = json.loads((out / "manifest.json").read_text())
        assert new["provenance"]["source"] == ckpt.name and new != old  # the folder's name, never its path
        assert sorted(p.name for p in tmp_path.glob(f".{out.name}.*")) == []


# -- something appears at --out while the export runs -----------------------------------------------------------
def _user_folder(out: Path) -> None:
    out.mkdir()
    (out / "notes.txt").write_text("written while the export ran")


def _empty_folder(out: Path) -> None:
    out.mkdir()


def _replaced_by_user_folder(out: Path) -> None:
    shutil.rmtree(out)
    _user_folder(out)


def _user_file_into_model(out: Path) -> None:
    (out / "notes.txt").write_text("written while the export ran")


def _replaced_by_other_model(out: Path) -> None:
    other = out.with_name("other")
    shutil.copytree(out, other)
    shutil.rmtree(out)
    other.rename(out)


MIDWAY = [
    # (case, --force with a model folder at --out from the start, what happens midway, message)
    ("a user's folder appears", False, _user_folder, r"appeared while this export ran"),
    ("an empty folder appears", False, _empty_folder, r"appeared while this export ran"),
    ("the model folder is replaced by a user's", True, _replaced_by_user_folder, r"changed while this export ran"),
    ("a user's file goes into the model folder", True, _user_file_into_model, r"changed while this export ran"),
    ("another export replaced the model folder", True, _replaced_by_other_model, r"changed while this export ran"),
]


@pytest.mark.parametrize("renameat2", [True, False], ids=["renameat2", "mkdir+rename"])
@pytest.mark.parametrize("case,force,midway,match", MIDWAY, ids=[c[0] for c in MIDWAY])
def test_what_appears_at_out_during_the_export_is_never_replaced(
    ckpt, model_folder, tmp_path, monkeypatch, case, force, midway, match, renameat2
):
    import onnxpipe_export._output as output
    import onnxpipe_export._recipe as recipe

    if not renameat2:
        monkeypatch.setattr(output, "_RENAMEAT2", None)
    elif output._RENAMEAT2 is None:
        pytest.skip("no renameat2 here")
    out = model_folder if force else tmp_path / "new"
    real = recipe._write_tokenizer

    def write_tokenizer_and_meddle(*args, **kwargs):
        midway(out)
        return real(*args, **kwargs)

    monkeypatch.setattr(recipe, "_write_tokenizer", write_tokenizer_and_meddle)
    moved = []  # what was at --out must not even be moved aside for a moment: someone may be reading it
    rename = output.rename_noreplace
    monkeypatch.setattr(output, "rename_noreplace", lambda src, dst: (moved.append(src), rename(src, dst)))
    with pytest.raises(errors.OutputExistsError, match=match):
        _export(ckpt, out, force=force)
    assert out not in moved
    after = _tree(out)
    monkeypatch.undo()
    midway_alone = tmp_path / "reference"  # the same meddling without an export: what must be there now
    shutil.copytree(model_folder, midway_alone / "model") if force else midway_alone.mkdir()
    midway(midway_alone / ("model" if force else "new"))
    assert after == _tree(midway_alone / ("model" if force else "new"))
    assert sorted(p.name for p in tmp_path.glob(f".{out.name}.*")) == []


# -- two exports at once -------------------------------------------------------------------------------------------
# Each child is a real CLI export that says when it reaches its final move and waits there for the parent's go,
# which comes once both have said so: an event each way, no poll (a deadline only against a hung child).
_CHILD = textwrap.dedent("""
    import sys
    import onnxpipe_export._output as output
    import onnxpipe_export._recipe as recipe
    from onnxpipe._cli import main

    ckpt, out, mode = sys.argv[1:4]
    if mode == "mkdir+rename":
        output._RENAMEAT2 = None
    real = recipe.place

    def place_when_both_are_ready(tmp, target):
        print("ready", flush=True)
        if sys.stdin.readline() != "go\\n":
            sys.exit("the test never said go")
        real(tmp, target)

    recipe.place = place_when_both_are_ready
    sys.exit(main(["export", ckpt, "--out", out, "--precision", "int8", "--quiet", *sys.argv[4:]]))
""")
HUNG_S = 1800


def _reached_final_move(proc: subprocess.Popen) -> bool:
    """Block until the child says it reached its final move (True) or exits without saying so (False)."""
    while line := proc.stdout.readline():
        if line == "ready\n":
            return True
    return False


@pytest.mark.parametrize("mode,force", [("renameat2", False), ("mkdir+rename", False), ("renameat2", True)])
def test_of_two_concurrent_exports_to_one_out_exactly_one_wins(ckpt, model_folder, tmp_path, mode, force):
    out = model_folder if force else tmp_path / "new"
    # stderr to files: a pipe nobody reads while the test waits for "ready" could fill and stall a child
    errs = [tmp_path / f"stderr-{i}.txt" for i in range(2)]
    procs = []
    for err in errs:
        with open(err, "w") as err_file:
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-c", _CHILD, str(ckpt), str(out), mode, *(["--force"] if force else [])],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=err_file,
                    text=True,
                )
            )
    results = []
    try:
        ready = [_reached_final_move(proc) for proc in procs]
        for proc in procs:
            if proc.poll() is None:
                proc.stdin.write("go\n")
                proc.stdin.flush()
        for proc, err in zip(procs, errs):
            stdout, _ = proc.communicate(timeout=HUNG_S)
            results.append((proc.returncode, stdout, err.read_text()))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert ready == [True, True], results  # both reached the final move
    assert sorted(rc for rc, _, _ in results) == [0, 2], results
    ((_, won, _),) = [r for r in results if r[0] == 0]
    ((_, _, lost),) = [r for r in results if r[0] == 2]
    assert f"wrote {out}" in won
    assert re.search(r"error: .*(appeared|changed) while this export ran", lost) and "Traceback" not in lost
    from onnxpipe import pipeline

    assert pipeline("sentiment-analysis", model=out)("the winner is complete")[0]["label"]
    assert sorted(p.name for p in tmp_path.glob(f".{out.name}.*")) == []
