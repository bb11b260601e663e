"""Where the finished model folder goes, and what an export may replace there.

Everything that can be refused is refused before any work: an ``--out`` that is, is inside or contains the
source checkpoint or the current directory; an existing ``--out`` without ``--force``; with ``--force``
anything but an onnxpipe model folder (or an empty folder); a parent folder that cannot be written. The
folder is built in a hidden sibling and moved in by a rename that never replaces: ``renameat2`` with
``RENAME_NOREPLACE`` on Linux, elsewhere ``mkdir`` + ``rename`` (which replaces only the empty folder it has
just made, and fails if anyone wrote into it meanwhile). So whatever appears at ``--out`` while an export runs,
a user's folder or a concurrent export's result, is never overwritten: exactly one export wins, the others
raise OutputExistsError. ``--force`` replaces only the model folder that was there when the export started,
and concurrent exports swap one at a time (a lock on the parent folder), so the loser never moves the
winner's folder aside.

Killed exports: SIGINT/SIGTERM/SIGHUP remove the staging folder on the way out; what SIGKILL or a power cut
leaves (``.NAME.partial-PID-*``, ``.NAME.old-PID``) is cleaned up by the next export to that folder.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from onnxpipe.errors import ExportError, OutputExistsError

_FORCE_POLICY = "--force replaces only an onnxpipe model folder (or an empty folder), never other files"


@dataclass(frozen=True)
class Target:
    path: Path  # absolute; the parent's symlinks resolved, the last name kept (a symlink there is the output)
    replaces: tuple[int, int] | None  # (st_dev, st_ino) of the folder --force may replace; None: must stay absent


def _why(e: OSError) -> str:
    """An OSError in words, with what to do about it."""
    hint = {
        errno.ENOSPC: "the disk is full: free space there or choose an --out on another disk",
        errno.EDQUOT: "the disk quota is exhausted: free space there or choose an --out on another disk",
        errno.EACCES: "permission denied: choose an --out in a folder you can write to",
        errno.EPERM: "operation not permitted: choose an --out in a folder you can write to",
        errno.EROFS: "the filesystem is read-only: choose an --out on a writable one",
        errno.ENOTDIR: "a file is in the way where a folder must be",
    }.get(e.errno or 0, "")
    where = f" ({e.filename})" if e.filename else ""
    return f"{e.strerror or e}{where}" + (f"; {hint}" if hint else "")


@contextmanager
def file_errors(out: Path) -> Iterator[None]:
    """Turn an OSError (full disk, permissions, read-only filesystem) into one ExportError with the remedy."""
    try:
        yield
    except OSError as e:
        raise ExportError(f"the export to {out} stopped on a file error: {_why(e)}. {out} was not written") from e


def not_replaceable(path: Path) -> str | None:
    """Why ``--force`` must not replace ``path``; None when it is an onnxpipe model folder or an empty folder.

    A model folder is one whose manifest.json parses as an onnxpipe manifest and which holds no file that the
    manifest does not list (a damaged or older model folder still counts; a user's notes in it do not)."""
    if path.is_symlink():
        return "is a symbolic link; name the folder itself"
    if not path.is_dir():
        return "is a file, not a model folder"
    if not any(path.iterdir()):
        return None
    try:
        data = json.loads((path / "manifest.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        return "is not an onnxpipe model folder (it has no manifest.json)"
    except (OSError, ValueError):
        return "is not an onnxpipe model folder (its manifest.json does not parse)"
    if not (isinstance(data, dict) and "format_version" in data and isinstance(data.get("files"), dict)):
        return "is not an onnxpipe model folder (its manifest.json is not an onnxpipe manifest)"
    extra = sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if not p.is_dir() or p.is_symlink())
    extra = [rel for rel in extra if rel != "manifest.json" and rel not in data["files"]]
    if extra:
        return f"holds files its manifest does not list ({', '.join(extra[:5])}{', ...' if len(extra) > 5 else ''})"
    return None


def _inside(a: Path, b: Path) -> bool:
    return a == b or b in a.parents


def prepare(out: Any, source: Any, force: bool) -> Target:
    """Refuse an ``out`` that an export must not write, before any work; the Target to move the folder to."""
    if out is None:
        raise ExportError("no output folder given: pass --out DIR (out=DIR)")
    absolute = Path(os.path.abspath(Path(out).expanduser()))  # "." and ".." become real names
    if absolute.parent == absolute:
        raise ExportError(f"--out {out} is the filesystem root; name a new folder, e.g. --out ./model")
    path = absolute.parent.resolve() / absolute.name
    recover(path)  # first, so that a stale backup is back in place before the checks below look
    real = path.resolve()
    cwd = Path.cwd().resolve()
    if _inside(cwd, real):
        what = "the current directory" if real == cwd else f"a folder above the current directory ({cwd})"
        raise ExportError(
            f"--out {out} is {what}; an export replaces its --out as a whole. "
            f"Name a new folder instead, e.g. --out {os.path.join(str(out), 'model')}"
        )
    local = Path(str(source)).expanduser()
    if local.exists():
        src = local.resolve()
        overlaps = {"is": real == src, "is inside": _inside(real, src), "contains": _inside(src, real)}
        hits = [what for what, hit in overlaps.items() if hit]
        if hits:
            raise ExportError(
                f"--out {out} ({real}) {hits[0]} the source checkpoint {source}; the export must "
                f"not write into or replace its own input. Choose another folder, e.g. "
                f"--out {src.parent / (src.name + '-onnx')}"
            )
    if not os.path.lexists(path):
        return Target(path, None)
    if not force:
        raise OutputExistsError(f"{path} already exists; pass --force (force=True) to replace it ({_FORCE_POLICY})")
    reason = not_replaceable(path)
    if reason:
        raise OutputExistsError(f"{path} {reason}. {_FORCE_POLICY}: move it away or choose another --out")
    st = path.lstat()
    return Target(path, (st.st_dev, st.st_ino))


def check_space(folder: Path, source: Any) -> None:
    """Refuse early when the disk cannot hold even the two fp32 graphs (raw and fused) the export writes."""
    local = Path(str(source)).expanduser()
    if not local.is_dir():
        return
    weights = sum(p.stat().st_size for p in local.iterdir() if p.suffix in (".safetensors", ".bin") and p.is_file())
    free = shutil.disk_usage(folder).free
    if free < 2 * weights:
        raise ExportError(
            f"only {free / 1e6:.0f} MB are free in {folder.parent}; the export needs at least "
            f"{2 * weights / 1e6:.0f} MB (twice the checkpoint's weights). Free space there or "
            "choose an --out on another disk"
        )


# -- the rename that never replaces ------------------------------------------------------------------------
def _load_renameat2() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):  # glibc before 2.28, or another libc without it
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    return fn


_RENAMEAT2 = _load_renameat2()
_AT_FDCWD, _RENAME_NOREPLACE = -100, 1


def rename_noreplace(src: Path, dst: Path) -> None:
    """Rename ``src`` to ``dst``; FileExistsError if ``dst`` exists at that moment (checked by the kernel)."""
    if _RENAMEAT2 is not None:
        if _RENAMEAT2(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), _RENAME_NOREPLACE) == 0:
            return
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):  # else: this filesystem lacks the flag
            raise OSError(err, os.strerror(err), str(dst))
    if os.name == "nt":
        os.rename(src, dst)  # Windows' rename never replaces
        return
    # POSIX rename replaces an empty folder: claim the name with mkdir (fails if anything is there), then
    # rename onto that empty folder, which fails (ENOTEMPTY) if anyone wrote into it in between.
    os.mkdir(dst)
    try:
        os.rename(src, dst)
    except OSError as e:
        try:
            os.rmdir(dst)  # only if still empty: what someone put there stays
        except OSError:
            pass
        if e.errno in (errno.ENOTEMPTY, errno.EEXIST):
            raise FileExistsError(errno.EEXIST, "appeared during the rename", str(dst)) from e
        raise


def _move_in(tmp: Path, out: Path) -> None:
    try:
        rename_noreplace(tmp, out)
    except FileExistsError:
        raise OutputExistsError(
            f"{out} appeared while this export ran (another export or program created it); it was left as it "
            "is and this export's result was discarded. Export again with another --out, or with --force to "
            "replace it if it is a model folder"
        ) from None


def _changed(out: Path, reason: str) -> OutputExistsError:
    return OutputExistsError(
        f"{out} changed while this export ran ({reason.replace('is ', 'it is now ', 1)}); "
        f"it was left as it is and this export was discarded. {_FORCE_POLICY}"
    )


def place(tmp: Path, target: Target) -> None:
    """Move the finished folder ``tmp`` to ``target.path``; replace only the folder ``prepare`` accepted."""
    out = target.path
    if target.replaces is None:
        _move_in(tmp, out)
        return
    with _exports_to(out.parent):
        _replace(tmp, target)


def _not_the_accepted(path: Path, target: Target) -> str | None:
    """Why ``path`` is not the folder ``prepare`` accepted for replacing; None when it is."""
    st = path.lstat()
    if (st.st_dev, st.st_ino) != target.replaces:
        return "is another folder than at the start"
    return not_replaceable(path)


def _replace(tmp: Path, target: Target) -> None:
    out = target.path
    # Look before moving it aside: a folder that is not to be replaced (a concurrent export's result, a user's
    # file put into it) is refused untouched, so nobody reading it sees it vanish for a moment. The check is
    # repeated on the moved-aside folder below, for what changes between this look and the move.
    try:
        reason = _not_the_accepted(out, target)
    except FileNotFoundError:  # removed meanwhile: nothing to replace any more
        _move_in(tmp, out)
        return
    if reason:
        raise _changed(out, reason)
    backup = out.with_name(f".{out.name}.old-{os.getpid()}")
    try:
        rename_noreplace(out, backup)
    except FileNotFoundError:  # removed meanwhile: nothing to replace any more
        _move_in(tmp, out)
        return
    reason = _not_the_accepted(backup, target)
    if reason:
        try:
            rename_noreplace(backup, out)
        except OSError:  # something else is at out by now: keep what was moved aside, hidden but intact
            raise OutputExistsError(
                f"{out} changed while this export ran and something else then took its "
                f"place; what was there is kept as {backup}. This export was discarded"
            ) from None
        raise _changed(out, reason)
    try:
        _move_in(tmp, out)
    finally:  # the old model folder goes, as --force asked, even when another export took the place meanwhile
        if not_replaceable(backup) is None:
            shutil.rmtree(backup, ignore_errors=True)


@contextmanager
def _exports_to(folder: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``folder`` (the output's parent) while an export swaps its output in.

    Concurrent onnxpipe exports to one ``--out`` then check and move one after the other, so the loser never
    moves the winner's fresh folder aside, even for a moment. The lock is ``flock`` on the folder itself: no
    lock file is left behind, and the kernel drops it when a killed export's process ends. Other programs do
    not take it; the inode checks in ``_replace`` still guard against them. Without ``fcntl`` (Windows) there
    is no lock and those checks alone remain."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing drops the lock


# -- staging and recovery ------------------------------------------------------------------------------------
def _owner_alive(path: Path) -> bool:
    """Whether the export process named in a ``.NAME.partial-PID-*`` / ``.NAME.old-PID`` folder still runs."""
    try:
        pid = int(path.name.rsplit(".", 1)[-1].split("-")[1])
    except (IndexError, ValueError):
        return False
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, but another user's
        return True
    return True


def recover(out: Path) -> None:
    """Clean up after an export to ``out`` that was killed (SIGKILL, power cut) and so could not clean up.

    A stale partial folder is deleted. A stale backup means the kill came between moving the old folder
    aside and moving the new one in: the old folder is put back if nothing took its place, else deleted if it
    is a model folder (anything else stays, hidden but intact). Folders of running exports are left alone.
    """
    if not out.parent.is_dir():
        return
    for stale in sorted(out.parent.glob(f".{out.name}.partial-*")):
        if stale not in _ACTIVE and not _owner_alive(stale):
            shutil.rmtree(stale, ignore_errors=True)
    for backup in sorted(out.parent.glob(f".{out.name}.old-*")):
        if _owner_alive(backup):
            continue
        try:
            rename_noreplace(backup, out)
        except OSError:
            if not_replaceable(backup) is None:
                shutil.rmtree(backup, ignore_errors=True)


_ACTIVE: set[Path] = set()  # staging folders of exports running in this process (other threads)


def _raise_on_signal(signum: int, frame: Any) -> None:
    # 128 + signal number: the exit status a shell reports for a process the signal killed.
    raise SystemExit(128 + signum)


@contextmanager
def staging(out: Path) -> Iterator[Path]:
    """A temporary folder next to ``out`` (same filesystem, so the final rename is atomic)."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-{os.getpid()}-", dir=out.parent))
    except OSError as e:
        raise ExportError(f"cannot create the model folder {out}: {_why(e)}") from e
    tmp.chmod(0o755)  # mkdtemp makes it owner-only; the finished folder must be readable like any other
    _ACTIVE.add(tmp)
    # SIGTERM and SIGHUP kill without running finally blocks; turn them into SystemExit so cleanup runs
    # (Ctrl-C already raises KeyboardInterrupt). Only the main thread may install handlers.
    previous = {}
    for sig in (signal.SIGTERM, getattr(signal, "SIGHUP", None)):
        if sig is None:
            continue
        try:
            previous[sig] = signal.signal(sig, _raise_on_signal)
        except ValueError:  # not the main thread
            break
    try:
        yield tmp
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        shutil.rmtree(tmp, ignore_errors=True)
        _ACTIVE.discard(tmp)


def _fsync(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # folders cannot be opened on Windows; nothing to flush there
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(folder: Path, recursive: bool = True) -> None:
    """Flush every file, then every folder, to disk: a power cut after the rename must not leave empty files."""
    paths = sorted(folder.rglob("*")) if recursive else []
    for path in [p for p in paths if p.is_file()] + [p for p in paths if p.is_dir()] + [folder]:
        _fsync(path)
