"""The machine-level cache behind conftest's checkpoint and export fixtures (tests/_export_cache.py), and the
session's own TMPDIR (tests/_session_tmp.py). No torch: the cached "builds" here are copies of the committed
model folder, so the cache's own rules are tested, not an export."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

import _export_cache as cache

ROOT = Path(__file__).resolve().parents[1]
FOLDER = ROOT / "models" / "minilm-sst2"


@pytest.fixture
def fresh(tmp_path, monkeypatch):
    """An empty cache under tmp_path, and a build that counts its calls."""
    monkeypatch.setenv("ONNXPIPE_TEST_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(cache, "_pruned", set())
    monkeypatch.setattr(cache, "STATS", cache.Counter())
    calls: list[Path] = []

    def build(out: Path) -> Path:
        calls.append(out)
        shutil.copytree(FOLDER, out)
        return out

    return tmp_path, build, calls


def _tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_second_request_is_a_verified_copy_not_a_build(fresh):
    tmp, build, calls = fresh
    first = cache.folder("export", {"source": "a"}, tmp / "one" / "m", build)
    second = cache.folder("export", {"source": "a"}, tmp / "two" / "m", build)
    assert len(calls) == 1 and cache.STATS == {"miss": 1, "hit": 1}
    assert second != first and _tree(second) == _tree(first) == _tree(FOLDER)
    (second / "config.json").write_text("{}")  # a test changing its copy...
    third = cache.folder("export", {"source": "a"}, tmp / "three" / "m", build)
    assert _tree(third) == _tree(FOLDER) and len(calls) == 1  # ...changes neither the cache nor the next copy


def test_other_arguments_are_another_entry(fresh):
    tmp, build, calls = fresh
    cache.folder("export", {"source": "a"}, tmp / "one" / "m", build)
    cache.folder("export", {"source": "b"}, tmp / "two" / "m", build)
    assert len(calls) == 2 and cache.STATS == {"miss": 2}


@pytest.mark.parametrize("damage", ["modify", "add", "remove-manifest"])
def test_a_damaged_entry_is_rebuilt(fresh, damage):
    tmp, build, calls = fresh
    cache.folder("export", {"source": "a"}, tmp / "one" / "m", build)
    (payload,) = (tmp / "cache").glob("*/export-*/payload")
    if damage == "modify":
        target = next(p for p in payload.rglob("*.onnx"))
        target.write_bytes(target.read_bytes()[:-1] + b"\0")
    elif damage == "add":
        (payload / "onnx" / "extra.data").write_bytes(b"x")
    else:
        (payload / "manifest.json").write_text((payload / "manifest.json").read_text().replace('"', "'", 1))
    again = cache.folder("export", {"source": "a"}, tmp / "two" / "m", build)
    assert len(calls) == 2 and cache.STATS == {"miss": 2, "rejected": 1}
    assert _tree(again) == _tree(FOLDER)


def test_off_builds_every_time(fresh, monkeypatch):
    tmp, build, calls = fresh
    monkeypatch.setenv("ONNXPIPE_TEST_CACHE", "off")
    for n in range(2):
        cache.folder("export", {"source": "a"}, tmp / str(n) / "m", build)
    assert len(calls) == 2 and not (tmp / "cache").exists()


def test_only_the_most_recently_used_groups_are_kept(fresh, monkeypatch):
    tmp, build, calls = fresh
    groups = []
    for n in range(cache.KEEP + 2):
        key = f"{n:032x}"
        monkeypatch.setattr(cache, "code_key", lambda key=key: key)
        monkeypatch.setattr(cache, "_pruned", set())
        cache.folder("checkpoint", {"n": n}, tmp / str(n), build)
        groups.append(tmp / "cache" / key)
        os.utime(groups[-1] / ".used", (n * 1000, n * 1000))  # in order of use, whatever the clock's resolution
    (tmp / "cache" / "envs").mkdir()  # not a group: never pruned
    monkeypatch.setattr(cache, "_pruned", set())
    cache.folder("checkpoint", {"n": 0}, tmp / "again", build)
    assert sorted(p.name for p in (tmp / "cache").iterdir() if not p.name.startswith(".")) == sorted(
        [g.name for g in groups[-cache.KEEP :]] + ["envs"]
    )


def test_the_key_covers_the_code_and_the_libraries():
    covered = [p.relative_to(ROOT).as_posix() for p in cache.CODE]
    assert covered == ["export", "runtime", "tests/_tiny.py", "tests/_folders.py", "tests/_export_cache.py"]
    assert set(cache.PACKAGES) >= {"torch", "transformers", "optimum-onnx", "onnx", "onnxruntime", "tokenizers"}


def test_the_session_writes_its_temporary_files_in_its_own_folder(tmp_path):
    session = Path(tempfile.gettempdir())
    assert session.name.startswith("onnxpipe-tests-") and (session / ".pid").read_text() == str(os.getpid())
    assert os.environ["TMPDIR"] == str(session) and session in tmp_path.parents


def test_a_build_that_cannot_be_stored_is_still_returned(fresh, monkeypatch):
    tmp, build, calls = fresh

    def full_disk(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cache, "_write_entry", full_disk)
    out = cache.folder("export", {"source": "a"}, tmp / "one" / "m", build)
    assert _tree(out) == _tree(FOLDER) and cache.STATS == {"miss": 1, "unstored": 1}
    assert "1 of them not stored" in cache.summary()
