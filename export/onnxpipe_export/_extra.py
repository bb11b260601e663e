"""Whether the export extra is installed: checked before anything heavy is imported, so a missing package is
one typed error with the install line, not an ImportError from deep inside torch or optimum."""

from __future__ import annotations

import importlib.util

from onnxpipe.errors import ExportExtraMissingError

_EXTRA = ("torch", "transformers", "optimum.exporters.onnx", "onnx")


def require_extra() -> None:
    """Raise ExportExtraMissingError naming the missing packages and the install line."""
    missing = []
    for mod in _EXTRA:
        try:
            found = importlib.util.find_spec(mod) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            missing.append(mod.split(".")[0])
    if missing:
        raise ExportExtraMissingError(
            f"the export stage needs {', '.join(missing)}, which are not installed. "
            "Install the export extra: pip install 'onnxpipe[export]'"
        )
