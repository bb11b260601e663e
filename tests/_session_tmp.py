"""One temporary folder for the whole test session, removed at its end, so the suite leaves /tmp as it found it.

Everything the suite starts writes its temporary files under ``$TMPDIR``: pytest's ``tmp_path`` folders,
headless Chromium (its ``org.chromium.Chromium.*`` folders) and chromedriver, Ray (``$TMPDIR/ray``: sessions,
sockets, logs), fastembed's and torch inductor's caches, and every ``tempfile`` call in the tests and in the
subprocesses they start. conftest points ``TMPDIR`` at a fresh ``onnxpipe-tests-*`` folder before the first test
and deletes that folder at the end of a passing session; a failing session keeps pytest's part of it for its
failed tests' files (as pytest's ``tmp_path_retention_policy = "failed"`` would) and says where, until the next
session starts and finds its owner gone. Whatever a program wrote to
/tmp itself, ignoring ``TMPDIR``, is named in the run's summary (``leftovers``: new entries with the names the
suite's programs use; on a machine shared with other runs, one may be another program's, so it is a warning).
"""

from __future__ import annotations

import fnmatch
import os
import shutil
import tempfile
import time
from pathlib import Path

# What the suite's own programs name their temporary files, were they to ignore TMPDIR: a new /tmp entry with
# one of these names is this run's (another program on the machine rarely writes these).
SUITE_PATTERNS = (
    "org.chromium.Chromium.*",
    ".org.chromium.Chromium.*",
    "scoped_dir*",  # chromedriver
    "ray",
    "pytest-of-*",
    "fastembed_cache",
    "torchinductor_*",
)

_state: dict[str, object] = {}


def start() -> Path:
    """Point TMPDIR (and Python's ``tempfile``) at a new folder under the system's temporary folder."""
    if "folder" in _state:
        return Path(str(_state["folder"]))
    system = Path(tempfile.gettempdir())
    for old in system.glob("onnxpipe-tests-*"):  # a failed session's, kept until now, if its pytest has ended
        if not _alive(old / ".pid"):
            shutil.rmtree(old, ignore_errors=True)
    _state["system"], _state["before"] = system, set(os.listdir(system))
    folder = Path(tempfile.mkdtemp(prefix="onnxpipe-tests-", dir=system))
    (folder / ".pid").write_text(str(os.getpid()))
    _state["folder"], _state["old"] = folder, os.environ.get("TMPDIR")
    os.environ["TMPDIR"] = str(folder)
    tempfile.tempdir = None  # re-read TMPDIR on the next call
    return folder


def _alive(pidfile: Path) -> bool:
    """Whether the session that wrote ``pidfile`` may still run (a folder a minute old without one: starting)."""
    try:
        pid = int(pidfile.read_text())
    except (OSError, ValueError):
        try:
            return time.time() - pidfile.parent.stat().st_mtime < 60
        except OSError:  # already gone
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def finish(passed: bool) -> str | None:
    """Restore TMPDIR and delete the session's folder (kept where the session failed); the line to print, if any."""
    if "folder" not in _state:
        return None
    folder = Path(str(_state["folder"]))
    old = _state["old"]
    if old is None:
        os.environ.pop("TMPDIR", None)
    else:
        os.environ["TMPDIR"] = str(old)
    tempfile.tempdir = None
    if passed:
        shutil.rmtree(folder, ignore_errors=True)
        return None
    for item in folder.iterdir():  # Chromium's, Ray's: nothing a failed test is read back from
        if not item.name.startswith(("pytest-of-", ".pid")):
            shutil.rmtree(item, ignore_errors=True) if item.is_dir() else item.unlink(missing_ok=True)
    return f"temporary files kept for the failed tests: {folder} (deleted by the next session)"


def leftovers() -> list[str]:
    """New entries in the system's temporary folder since ``start`` whose names the suite's programs use."""
    if "system" not in _state:
        return []
    system = Path(str(_state["system"]))
    before = _state["before"]
    assert isinstance(before, set)
    new = set(os.listdir(system)) - before
    return sorted(str(system / n) for n in new if any(fnmatch.fnmatch(n, p) for p in SUITE_PATTERNS))
