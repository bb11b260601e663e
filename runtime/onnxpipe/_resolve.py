"""Turn ``model=`` (None, a short name, or a path) into a model folder on disk.

Search order for a name: an existing path, $ONNXPIPE_HOME/<name>, the folders embedded in the installed
wheel (onnxpipe/_models), then models/ of a source checkout. Nothing is downloaded here.
"""

from __future__ import annotations

import os
from pathlib import Path

from ._manifest import MANIFEST_NAME
from .errors import ModelNotFoundError

_PACKAGE_MODELS = Path(__file__).parent / "_models"
_CHECKOUT_MODELS = Path(__file__).resolve().parents[2] / "models"


def search_dirs() -> list[Path]:
    dirs = []
    if os.environ.get("ONNXPIPE_HOME"):
        dirs.append(Path(os.environ["ONNXPIPE_HOME"]))
    dirs += [_PACKAGE_MODELS, _CHECKOUT_MODELS]
    return dirs


def find_model(name_or_path: str | os.PathLike) -> Path | None:
    """The folder for a name or path, or None when nothing local matches."""
    path = Path(name_or_path).expanduser()
    if (path / MANIFEST_NAME).is_file():
        return path
    name = str(name_or_path).replace("/", "--")
    for d in search_dirs():
        for candidate in (d / name, d / name.lower(), d / str(name_or_path).rsplit("/", 1)[-1].lower()):
            if (candidate / MANIFEST_NAME).is_file():
                return candidate
    return None


def resolve_model(name_or_path: str | os.PathLike) -> Path:
    """Like :func:`find_model`, but raise a ModelNotFoundError that says how to get the model."""
    found = find_model(name_or_path)
    if found is not None:
        return found
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        raise ModelNotFoundError(
            f"{path} has no {MANIFEST_NAME}: it is not an onnxpipe model folder. If it is a PyTorch checkpoint, "
            f"export it first: onnxpipe export {path} --task TASK --out DIR"
        )
    looked = ", ".join(str(d) for d in search_dirs())
    raise ModelNotFoundError(
        f"no model folder named {str(name_or_path)!r} (looked in: {looked}). Export one with "
        f"`onnxpipe export {name_or_path} --task TASK --out DIR` (needs pip install 'onnxpipe[export]') "
        "and pass model=DIR."
    )
