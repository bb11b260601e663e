"""What the emulated-CPU tier needs, installed on first use and cached in the machine's test cache (``_home``).

- QEMU user mode (Debian: qemu-user for ``qemu-x86_64``, qemu-user-static for ``qemu-aarch64-static``) and
  debootstrap. ``make test`` installs them (the Makefile's ``$(DEV)/.qemu`` step); run as root, ``ensure_qemu``
  installs them too, as that step does. Otherwise a missing one is an error that names the install step.
- An ARM64 Debian userland with Python 3.11 (``debootstrap --foreign``: it only downloads and unpacks, so no
  arm64 code runs to build it; the packages of ``--include`` are unpacked here with ``dpkg-deb -x``).
- aarch64 wheels of what the runtime imports (onnxruntime, tokenizers, numpy), from PyPI, in ``arm64/site``.

A ``.ready`` file holding the spec marks a finished build, so a changed pin rebuilds and a half-finished build is
redone, never used. Run ``python tests/emulated/provision.py`` to build everything outside pytest.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
from _export_cache import env_home  # noqa: E402  (the one reading of ONNXPIPE_TEST_CACHE)


def _home() -> tuple[Path, bool]:
    """Where the tier's pieces live, and whether there they are keyed (shared by every clone on the machine): the
    machine's test cache (``$ONNXPIPE_TEST_CACHE/envs/emulated``, default ``~/.cache/onnxpipe/test-exports``), so
    a second clone does not download and unpack the ARM64 userland again; ``ONNXPIPE_TEST_CACHE=off``:
    ``.venv-emulated/`` in the clone; ``$ONNXPIPE_EMULATED_HOME``: that folder."""
    return env_home("emulated", "ONNXPIPE_EMULATED_HOME", ROOT / ".venv-emulated")


HOME, KEYED = _home()


def _place(name: str, spec: str) -> Path:
    """The folder of a piece: keyed by its spec (and this machine's Python and platform, whose wheels
    native-pinned holds) in the machine's cache, plain in the clone."""
    if not KEYED:
        return HOME / name
    in_clone = ROOT / ".venv-emulated" / name
    with contextlib.suppress(OSError):  # a clone that built its own before the machine cache keeps it
        if (in_clone / ".ready").read_text(encoding="utf-8") == spec:
            return in_clone
    made_by = [spec, sys.version, platform.machine()]
    return HOME / f"{name}-{hashlib.sha256(json.dumps(made_by).encode()).hexdigest()[:16]}"


def _used(where: Path) -> None:
    """Mark a keyed piece used now, and delete the same piece's other keys beyond the one used before it (renamed
    aside first, so no reader sees half a folder). Call under the piece's lock."""
    if not KEYED or where.parent != HOME:
        return
    (where / ".used").touch()
    name = where.name.rsplit("-", 1)[0]

    def when(p: Path) -> float:
        return (p / ".used").stat().st_mtime if (p / ".used").exists() else 0.0

    others = [p for p in HOME.iterdir() if re.fullmatch(re.escape(name) + "-[0-9a-f]{16}", p.name) and p != where]
    for old in sorted(others, key=when, reverse=True)[1:]:
        trash = HOME / f".trash-{old.name}-{os.getpid()}"
        old.rename(trash)
        shutil.rmtree(trash, ignore_errors=True)


# The one statement of the ARM64 pin. Debian bookworm's QEMU (7.2) cannot run onnxruntime 1.28 or newer:
# their aarch64 wheels die with SIGSEGV inside `import onnxruntime` under every emulated CPU model tried
# (neoverse-n1, cortex-a72, max); 1.27.0 imports and runs. 1.27.0 is the newest release that does, so the ARM64
# side runs a different onnxruntime release than the native one: the comparisons are between CPUs *and* those two
# releases, and the results record both versions. Raise the pin when a newer QEMU runs a newer wheel.
ARM64_ORT = "onnxruntime==1.27.0"
# numpy and tokenizers as the dev environment pins them, so only the CPU (and the pin above) differs.
ARM64_WHEELS = [ARM64_ORT, "tokenizers==0.22.2", "numpy==2.4.6"]
ARM64_PYTHON = "3.11"  # Debian bookworm's python3.11; the wheels are cp311
DEBIAN_SUITE = "bookworm"
DEBIAN_MIRROR = os.environ.get("ONNXPIPE_DEBIAN_MIRROR", "http://deb.debian.org/debian")

# program -> the Debian package that ships it
QEMU_PROGRAMS = {
    "qemu-x86_64": "qemu-user",
    "qemu-aarch64-static": "qemu-user-static",
    "debootstrap": "debootstrap",
}
INSTALL_STEP = "make test (its .qemu step), or as root: apt-get update && apt-get install -y " + " ".join(
    sorted(set(QEMU_PROGRAMS.values()))
)


class ProvisionError(RuntimeError):
    """A piece of the emulated tier is missing and could not be installed; the message names the install step."""


def _run(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> None:
    with open(log, "a", encoding="utf-8") as f:
        f.write(f"$ {' '.join(cmd)}\n")
        f.flush()
        rc = subprocess.call(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
    if rc != 0:
        tail = log.read_text(encoding="utf-8", errors="replace")[-3000:]
        raise ProvisionError(f"{' '.join(cmd)} exited {rc}; log {log}:\n{tail}")


def _missing_programs() -> list[str]:
    return [p for p in QEMU_PROGRAMS if shutil.which(p) is None]


def ensure_qemu() -> dict[str, str]:
    """Paths of the QEMU programs (and debootstrap), installing the Debian packages as root where missing."""
    missing = _missing_programs()
    if missing and os.geteuid() == 0 and shutil.which("apt-get"):
        HOME.mkdir(parents=True, exist_ok=True)
        log = HOME / "apt.log"
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        with open(HOME / ".apt.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if _missing_programs():
                _run(["apt-get", "update", "-qq"], log, env)
                _run(["apt-get", "install", "-y", "-qq", *sorted({QEMU_PROGRAMS[p] for p in missing})], log, env)
        missing = _missing_programs()
    if missing:
        raise ProvisionError(f"the emulated-CPU tests need {', '.join(missing)}, not on PATH. Install: {INSTALL_STEP}")
    return {p: str(shutil.which(p)) for p in QEMU_PROGRAMS}


def arm64_spec() -> str:
    return json.dumps({"suite": DEBIAN_SUITE, "python": ARM64_PYTHON, "wheels": ARM64_WHEELS}, sort_keys=True)


def ensure_arm64() -> Path:
    """The ARM64 folder (``root/``: the userland, ``site/``: the wheels), built if missing or out of date."""
    ensure_qemu()
    spec = arm64_spec()
    where = _place("arm64", spec)
    HOME.mkdir(parents=True, exist_ok=True)
    with open(HOME / ".arm64.lock", "w") as lock:  # one builder at a time; the second waits and reuses
        fcntl.flock(lock, fcntl.LOCK_EX)
        ready = where / ".ready"
        if not (ready.is_file() and ready.read_text(encoding="utf-8") == spec):
            _build_arm64(where, spec)
        _used(where)
    return where


def _build_arm64(where: Path, spec: str) -> None:
    shutil.rmtree(where, ignore_errors=True)
    where.mkdir(parents=True)
    log = where / "build.log"
    root = where / "root"
    python = f"python{ARM64_PYTHON}"
    _run(
        [
            "debootstrap",
            "--arch=arm64",
            "--foreign",
            "--variant=minbase",
            f"--include={python},lib{python}",
            DEBIAN_SUITE,
            str(root),
            DEBIAN_MIRROR,
        ],
        log,
    )
    # --foreign unpacked only the base system; the included packages wait in the archive folder for a second
    # stage that would have to run arm64 code. Unpacking them is all a Python needs.
    archives = root / "var" / "cache" / "apt" / "archives"
    for deb in sorted(archives.glob("*.deb")):
        _run(["dpkg-deb", "-x", str(deb), str(root)], log)
        deb.unlink()
    if not (root / "usr" / "bin" / python).is_file():
        raise ProvisionError(f"debootstrap left no usr/bin/{python} in {root}; see {log}")
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-deps",
            "--target",
            str(where / "site"),
            "--platform",
            "manylinux_2_28_aarch64",
            "--platform",
            "manylinux2014_aarch64",
            "--only-binary=:all:",
            "--implementation",
            "cp",
            "--python-version",
            ARM64_PYTHON,
            *ARM64_WHEELS,
        ],
        log,
    )
    (where / ".ready").write_text(spec, encoding="utf-8")


def ensure_native_pinned() -> Path:
    """This machine's wheel of the ARM64 side's onnxruntime (``ARM64_ORT``), in a folder to put first on
    PYTHONPATH: the native run the ARM64 one is compared with, so a difference is the CPU's and not a release's
    (between 1.27 and 1.32 alone, dynamic int8 moves P(positive) by up to 0.13 on the same x86 CPU)."""
    spec = json.dumps([ARM64_ORT])
    where = _place("native-pinned", spec)
    HOME.mkdir(parents=True, exist_ok=True)
    with open(HOME / ".native-pinned.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        ready = where / ".ready"
        if not (ready.is_file() and ready.read_text(encoding="utf-8") == spec):
            shutil.rmtree(where, ignore_errors=True)
            where.mkdir(parents=True)
            cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps"]
            _run([*cmd, "--target", str(where / "site"), "--only-binary=:all:", ARM64_ORT], where / "build.log")
            ready.write_text(spec, encoding="utf-8")
        _used(where)
    return where / "site"


def arm64_python(where: Path) -> Path:
    return where / "root" / "usr" / "bin" / f"python{ARM64_PYTHON}"


if __name__ == "__main__":
    print(json.dumps(ensure_qemu(), indent=1))
    print("arm64:", ensure_arm64(), flush=True)
    print("native-pinned:", ensure_native_pinned(), flush=True)
