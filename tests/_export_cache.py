"""A machine-level cache of the folders the suite's fixtures build: tiny checkpoints, their exports and the
real-weight session exports, so a second run (or a second clone) on the same machine copies them instead of
building them again.

Where: ``$ONNXPIPE_TEST_CACHE``, default ``~/.cache/onnxpipe/test-exports``; ``ONNXPIPE_TEST_CACHE=off`` turns it
off. An entry's key is a sha256 over everything that makes the folder:

- every file under ``export/`` and ``runtime/`` (the code that writes and validates a folder), ``tests/_tiny.py``,
  ``tests/_folders.py`` and this module;
- the installed python, torch, transformers, optimum-onnx, onnx, onnxruntime, tokenizers and numpy versions, and
  the CPU (model name and ISA flags: the validation figures an export records are measured on it);
- the fixture's arguments, and each input folder or file by its name and the sha256 of its bytes (the checkpoint
  an export reads, the STS-B file of the quality gate).

A folder is built in a temporary directory beside its entry and renamed into place (a reader never sees half an
entry; two runs that build the same entry at once: the first rename wins), and the entry's files are checked
against their recorded sha256s on every read (an export also through the runtime's ``load_manifest(verify=True)``);
a damaged entry is deleted and rebuilt. The test gets a copy in its own temporary folder, so a test that changes
its folder cannot change the cache. Entries are grouped by the code-and-versions part of the key; only the
``KEEP`` most recently used groups are kept, so the cache cannot grow without bound.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import os
import platform
import re
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# The code whose every byte is in the key. Folders: every file under them, except bytecode and build metadata.
CODE = [ROOT / "export", ROOT / "runtime", ROOT / "tests" / "_tiny.py", ROOT / "tests" / "_folders.py", Path(__file__)]
PACKAGES = ("torch", "transformers", "optimum-onnx", "onnx", "onnxruntime", "tokenizers", "numpy")
KEEP = 3  # code-and-versions groups kept: this checkout's and the two used most recently before it
ENTRY = "entry.json"  # beside payload/: the key's inputs and every payload file's sha256 and size

# "hit", "miss", "rejected" (an entry that failed verification), "unstored" (a miss not stored), "off"
STATS: Counter[str] = Counter()


def location() -> Path | None:
    """The cache folder, or None where ``ONNXPIPE_TEST_CACHE=off``."""
    value = os.environ.get("ONNXPIPE_TEST_CACHE", "")
    if value.strip().lower() == "off":
        return None
    return Path(value).expanduser() if value else Path.home() / ".cache" / "onnxpipe" / "test-exports"


def env_home(kind: str, override: str, in_clone: Path) -> tuple[Path, bool]:
    """Where a family of test environments (``kind``: "interop", "emulated") lives, and whether there it is
    keyed (shared by every clone on the machine): ``$override`` when set; the clone's own ``in_clone`` where
    ``ONNXPIPE_TEST_CACHE=off``; else ``envs/<kind>`` in the machine's test cache."""
    if os.environ.get(override):
        return Path(os.environ[override]), False
    cache = location()
    if cache is None:
        return in_clone, False
    return cache / "envs" / kind, True


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _files(folder: Path) -> list[Path]:
    skip = ("__pycache__", ".egg-info", ".mypy_cache", ".pytest_cache")
    return sorted(p for p in folder.rglob("*") if p.is_file() and not any(s in part for part in p.parts for s in skip))


def _cpu() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor() or platform.machine()
    wanted = [ln.split(":", 1)[1].strip() for ln in lines if ln.split(":")[0].strip() in ("model name", "flags")]
    return platform.machine() + " " + " | ".join(dict.fromkeys(wanted))


@functools.cache
def code_key() -> str:
    """sha256 over the code and library versions that produce every cached folder (see the module docstring)."""
    h = hashlib.sha256()
    for item in CODE:
        for path in _files(item) if item.is_dir() else [item]:
            h.update(path.relative_to(ROOT).as_posix().encode() + b"\0" + _sha256(path).encode() + b"\n")
    versions = {"python": sys.version}
    for pkg in PACKAGES:
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = "not installed"
    h.update(json.dumps({"versions": versions, "cpu": _cpu()}, sort_keys=True).encode())
    return h.hexdigest()


def fingerprint(path: Path) -> dict[str, Any]:
    """An input folder or file as the key sees it: its name (an export records its source folder's name) and
    the sha256 of every file's bytes."""
    path = Path(path)
    if path.is_file():
        return {"name": path.name, "sha256": _sha256(path)}
    return {"name": path.name, "files": {p.relative_to(path).as_posix(): _sha256(p) for p in _files(path)}}


@contextlib.contextmanager
def _locked(lock: Path) -> Iterator[None]:
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def _remove(path: Path) -> None:
    """Delete ``path`` so that no reader sees it half-deleted: renamed aside first, then removed."""
    trash = path.with_name(f".trash-{path.name}-{os.getpid()}-{time.monotonic_ns()}")
    with contextlib.suppress(FileNotFoundError):
        path.rename(trash)
        shutil.rmtree(trash, ignore_errors=True)


_pruned: set[Path] = set()


def _group(root: Path) -> Path:
    """This checkout's group of entries, marked used now; the groups beyond the KEEP most recent are deleted."""
    group = root / code_key()[:32]
    if root not in _pruned:
        with _locked(root / ".prune.lock"):
            group.mkdir(parents=True, exist_ok=True)
            (group / ".used").touch()
            # a group is named by its key (other folders beside them, such as the consumer environments, are not)
            groups = [g for g in root.iterdir() if g.is_dir() and re.fullmatch("[0-9a-f]{32}", g.name)]
            groups.sort(key=lambda g: (g / ".used").stat().st_mtime if (g / ".used").exists() else 0, reverse=True)
            for old in groups[KEEP:]:
                if old != group:
                    _remove(old)
            for trash in root.glob(".trash-*"):  # left by a run killed while deleting
                shutil.rmtree(trash, ignore_errors=True)
        _pruned.add(root)
    return group


def _write_entry(built: Path, entry: Path, inputs: dict[str, Any]) -> None:
    """Copy ``built`` into the cache as ``entry``: into a temporary folder beside it, then one rename."""
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{entry.name}-", dir=entry.parent))
    try:
        shutil.copytree(built, tmp / "payload", symlinks=True)
        files = {p.relative_to(tmp / "payload").as_posix(): [_sha256(p), p.stat().st_size] for p in _files(tmp)}
        (tmp / ENTRY).write_text(json.dumps({"inputs": inputs, "files": files}, indent=2, sort_keys=True) + "\n")
        try:
            tmp.rename(entry)
        except OSError:  # another run renamed the same entry into place first: theirs stands
            pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _read_entry(entry: Path, dest: Path, is_export: bool) -> bool:
    """Copy the entry's payload to ``dest`` and check the copy against the entry's sha256s; False (and ``dest``
    removed) where the entry is missing, incomplete or damaged."""
    try:
        recorded = json.loads((entry / ENTRY).read_text())["files"]
        shutil.copytree(entry / "payload", dest, symlinks=True, dirs_exist_ok=True)
    except (OSError, ValueError, KeyError):
        shutil.rmtree(dest, ignore_errors=True)
        return False
    found = {p.relative_to(dest).as_posix(): p for p in _files(dest)}
    ok = sorted(found) == sorted(recorded)
    if ok and is_export:
        # the runtime's own check (every file the manifest lists, its size and sha256; no unlisted file), and
        # the manifest itself against the entry
        from onnxpipe._manifest import load_manifest
        from onnxpipe.errors import OnnxpipeError

        try:
            manifest = load_manifest(dest, verify=True)
        except OnnxpipeError:
            ok = False
        else:
            unchecked = set(recorded) - set(manifest.files)
            ok = all(_sha256(found[rel]) == recorded[rel][0] for rel in unchecked)
    elif ok:
        ok = all(
            found[rel].stat().st_size == size and _sha256(found[rel]) == sha for rel, (sha, size) in recorded.items()
        )
    if not ok:
        shutil.rmtree(dest, ignore_errors=True)
    return ok


def folder(kind: str, inputs: dict[str, Any], dest: Path, build: Callable[[Path], Path]) -> Path:
    """The folder ``build(dest)`` makes, at ``dest`` (which must not exist): copied from the cache where an entry
    of the same key is there, else built and stored. ``inputs`` (JSON, with ``fingerprint`` for paths) are
    the fixture's arguments; ``kind`` is "export" (a model folder) or a name for any other folder."""
    root = location()
    if root is None:
        STATS["off"] += 1
        return build(dest)
    group = _group(root)
    digest = hashlib.sha256(json.dumps({"kind": kind, **inputs}, sort_keys=True).encode()).hexdigest()
    entry = group / f"{kind}-{digest[:32]}"
    is_export = kind == "export"
    # one builder per entry: a second run asking for it at the same time waits, then reads it
    with _locked(group / f".{entry.name}.lock"):
        if entry.is_dir():
            if _read_entry(entry, dest, is_export):
                STATS["hit"] += 1
                with contextlib.suppress(OSError):  # the group pruned meanwhile by a run of other code
                    (group / ".used").touch()
                return dest
            STATS["rejected"] += 1
            _remove(entry)
        STATS["miss"] += 1
        out = build(dest)
        try:
            _write_entry(out, entry, inputs)
        except OSError as e:  # storing is best effort (a full disk, the group pruned meanwhile): the build stands
            STATS["unstored"] += 1
            print(f"test cache: could not store {entry}: {e}", file=sys.stderr)
        return out


def summary() -> str:
    """One line for the end of the run."""
    root = location()
    if root is None:
        return f"test cache: off (ONNXPIPE_TEST_CACHE=off), {STATS['off']} folders built"
    rejected = f", {STATS['rejected']} damaged entries rebuilt" if STATS["rejected"] else ""
    unstored = f", {STATS['unstored']} of them not stored" if STATS["unstored"] else ""
    return f"test cache: {STATS['hit']} hits, {STATS['miss']} misses (built and stored{unstored}){rejected}; {root}"
