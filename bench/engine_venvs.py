"""Venvs of their own for the engines whose users install them apart: OpenVINO through optimum-intel (with NNCF)
and CTranslate2. Each is built on first use, from the pins below, under ``bench/.venvs/NAME`` (git-ignored),
and rebuilt when its pins change; a worker for such an engine runs on that venv's Python.

Kept apart from the bench venv on purpose: optimum-intel pins its own optimum (2.3) and pulls NNCF's tree
(scikit-learn, scipy, torchvision), which must not move the versions the other engines are measured with.
torch is pinned as the repository's export extra pins it (``torch==2.13.0``; where the package index offers
the CPU build, that is what installs), and the build fails if a CUDA torch came along.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
VENVS_DIR = HERE / ".venvs"
TRANSFORMERS = "transformers==4.57.6"  # the dev venv's: same tokenizer code as the other engines
VENVS: dict[str, tuple[str, ...]] = {
    # optimum-intel 2.2.0 needs transformers >=4.51,<5.6 and torch >=2.1; datasets carries NNCF's calibration set.
    "openvino": (
        "openvino==2026.4.1",
        "optimum-intel==2.2.0",
        "nncf==3.4.0",
        "torch==2.13.0",
        TRANSFORMERS,
        "datasets==5.0.1",
        "psutil",
    ),
    # torch and transformers only for the converter (prepare step); the worker needs ctranslate2 and numpy.
    "ctranslate2": ("ctranslate2==4.8.5", "torch==2.13.0", TRANSFORMERS, "safetensors", "psutil"),
}
# Removed after the install: PyPI's torchvision 0.28.0 does not load beside the CPU torch build (its C ops fail to
# register, "operator torchvision::nms does not exist"), which breaks transformers' AutoProcessor import and with
# it optimum.intel; optimum-intel lists torchvision for vision models only, none of which run here.
REMOVE_AFTER: dict[str, tuple[str, ...]] = {"openvino": ("torchvision",)}
PINS_FILE = "PINS.txt"  # written last: a venv without it (or with other pins) is (re)built


class VenvError(Exception):
    """The engine's venv could not be built; the message says why and what to run."""


def python(name: str, root: Path = VENVS_DIR, build: bool = True) -> Path:
    """The Python of engine venv ``name``, built first if missing or out of date (``build=False``: raise instead)."""
    if name not in VENVS:
        raise VenvError(f"unknown engine venv {name!r}; valid: {', '.join(VENVS)}")
    venv = root / name
    exe = venv / "bin" / "python"
    pins = "\n".join(VENVS[name]) + "\n"
    marker = venv / PINS_FILE
    if exe.is_file() and marker.is_file() and marker.read_text() == pins:
        return exe
    if not build:
        raise VenvError(
            f"the {name} venv is not built ({venv}); a run without --smoke builds it, or: "
            f"python bench/engine_venvs.py {name}"
        )
    print(f"building the {name} venv in {venv} (once; pins: {' '.join(VENVS[name])})", flush=True)
    steps = [
        [sys.executable, "-m", "venv", "--clear", str(venv)],
        [str(exe), "-m", "pip", "install", "-q", "-U", "pip"],
        [str(exe), "-m", "pip", "install", "-q", *VENVS[name]],
        *([[str(exe), "-m", "pip", "uninstall", "-q", "-y", *REMOVE_AFTER[name]]] if name in REMOVE_AFTER else []),
        [str(exe), "-c", "import torch; assert 'cuda' not in torch.__version__, torch.__version__"],
    ]
    for cmd in steps:
        run = subprocess.run(cmd, capture_output=True, text=True)
        if run.returncode != 0:
            tail = (run.stderr or run.stdout).strip().splitlines()[-3:]
            raise VenvError(f"building the {name} venv failed at `{' '.join(cmd[2:5])}`: {' '.join(tail)[:400]}")
    marker.write_text(pins)
    return exe


if __name__ == "__main__":
    for n in sys.argv[1:] or list(VENVS):
        print(python(n))
