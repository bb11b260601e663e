"""Turn ``model=`` (None, a short name, or a path) into a model folder on disk.

An existing path wins; otherwise a name is looked up *exactly* (``org/name`` as the folder ``org--name``) in
$ONNXPIPE_HOME, the folders embedded in the installed wheel (onnxpipe/_models), then models/ of a source
checkout. Nothing is downloaded here, and a near miss is an error rather than another model.
"""

from __future__ import annotations

import os
from pathlib import Path

from ._manifest import MANIFEST_NAME
from .errors import ModelNotFoundError

_PACKAGE_MODELS = Path(__file__).parent / "_models"


def _checkout_models(package_dir: Path) -> Path | None:
    """models/ of a source checkout (runtime/onnxpipe -> models); None for an installed wheel, whose parents
    are site-packages and lib, where a models/ folder would be someone else's."""
    return package_dir.parents[1] / "models" if package_dir.parent.name == "runtime" else None


_CHECKOUT_MODELS = _checkout_models(Path(__file__).resolve().parent)
_SHOWN_NAMES = 8  # names listed per directory in the not-found message


def search_dirs() -> list[Path]:
    """The directories a model *name* is looked up in, in order (some may not exist)."""
    dirs = []
    if os.environ.get("ONNXPIPE_HOME"):
        dirs.append(Path(os.environ["ONNXPIPE_HOME"]).expanduser())
    dirs.append(_PACKAGE_MODELS)
    if _CHECKOUT_MODELS is not None:
        dirs.append(_CHECKOUT_MODELS)
    return dirs


def folder_name(name: str) -> str | None:
    """The folder a model name is stored under, or None when ``name`` cannot be one.

    A name is one path component (``minilm-sst2``) or a hub id ``org/name``, stored as ``org--name`` (the
    Hugging Face cache's spelling). Matching is exact: no lowercasing and no fallback to the last component,
    so ``anyorg/minilm-sst2`` or ``MINILM-SST2`` never load ``minilm-sst2``. Empty components, ``.``, ``..``,
    backslashes and absolute paths are not names.
    """
    parts = name.split("/")
    if len(parts) > 2 or any(p in ("", ".", "..") or "\\" in p for p in parts) or Path(name).is_absolute():
        return None
    return "--".join(parts)


def _exact_child(directory: Path, name: str) -> Path | None:
    # Compared against the listing, not just opened, so a case-insensitive filesystem does not match
    # MINILM-SST2 to minilm-sst2.
    try:
        if name not in os.listdir(directory):
            return None
    except OSError:  # missing or unreadable search directory
        return None
    candidate = directory / name
    return candidate if (candidate / MANIFEST_NAME).is_file() else None


def find_model(name_or_path: str | os.PathLike[str]) -> Path | None:
    """The folder for a path or an exact name, or None when nothing local matches.

    Example:
        >>> find_model("minilm-sst2").name
        'minilm-sst2'
    """
    path = Path(name_or_path).expanduser()
    if (path / MANIFEST_NAME).is_file():
        return path
    name = folder_name(os.fspath(name_or_path))
    if name is None:
        return None
    for d in search_dirs():
        found = _exact_child(d, name)
        if found is not None:
            return found
    return None


def available_models(directory: Path) -> list[str]:
    """Sorted names of the model folders in ``directory`` (empty when it does not exist)."""
    try:
        return sorted(p.name for p in directory.iterdir() if (p / MANIFEST_NAME).is_file())
    except OSError:
        return []


def _looked_in() -> str:
    shown = []
    for d in search_dirs():
        if not d.is_dir():  # e.g. $ONNXPIPE_HOME not created yet: listing it would send users to a dead end
            continue
        names = available_models(d)
        more = f", ... ({len(names)} in all)" if len(names) > _SHOWN_NAMES else ""
        shown.append(f"{d} [{', '.join(names[:_SHOWN_NAMES]) + more if names else 'no models'}]")
    return "; ".join(shown) or "no model directory exists"


def resolve_model(name_or_path: str | os.PathLike[str]) -> Path:
    """Like :func:`find_model`, but raise a ModelNotFoundError that says what exists and how to export."""
    found = find_model(name_or_path)
    if found is not None:
        return found
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        raise ModelNotFoundError(
            f"{path} has no {MANIFEST_NAME}: it is not an onnxpipe model folder. If it is a PyTorch checkpoint, "
            f"export it first: onnxpipe export {path} --task TASK --out DIR"
        )
    export = (
        "Export one with `onnxpipe export SOURCE --task TASK --out DIR` (needs pip install "
        "'onnxpipe[export]') and pass model=DIR (CLI: --model DIR)"
    )
    if folder_name(os.fspath(name_or_path)) is None:
        raise ModelNotFoundError(
            f"no model folder at {str(name_or_path)!r}: the path does not exist, and it is not a model name "
            f"(a name is a folder name like 'minilm-sst2' or a hub id 'org/name', without '..' or a leading '/'). "
            f"{export}."
        )
    raise ModelNotFoundError(
        f"no model folder named {str(name_or_path)!r}: names match a folder exactly (a hub id org/name is "
        f"the folder org--name; case counts). Looked in: {_looked_in()}. Set $ONNXPIPE_HOME to add a directory. "
        f"{export}."
    )
