"""onnxpipe's export stage: a PyTorch checkpoint in, a verified model folder out.

    >>> from onnxpipe_export import export
    >>> export("../shared/checkpoints/minilm-sst2", task="text-classification", out="models/minilm-sst2")

Needs the export extra (pip install 'onnxpipe[export]'). This module imports nothing heavy until
``export`` runs, so the CLI can explain a missing extra instead of failing with a traceback.
"""

from __future__ import annotations

from typing import Any

from ._extra import require_extra
from ._recipe import export
from ._registry import ARCHITECTURES, SUPPORTED_TASKS

__all__ = ["export", "require_extra", "int8_saturation", "record_cpu_figures", "SUPPORTED_TASKS", "ARCHITECTURES"]


def int8_saturation(path: Any) -> dict[str, Any]:
    """Whether the int8 file at ``path`` can saturate on some CPU, read from its integer matmul weights (the
    gate `--int8-recipe search` applies): ``{"can_saturate": bool, ...}`` with counts and the widest s8 weight."""
    from ._int8_saturation import saturation_figures  # onnx loads only when asked

    return saturation_figures(path)


def record_cpu_figures(folder: Any, figures: Any, precision: str = "int8") -> Any:
    """Record the CPUs ``precision``'s variant of ``folder`` was checked on (``[{"cpu", "n", "flips",
    "max_abs_dp", "p99_abs_dp"}]``, each against the exporting machine) in its manifest; see _cpu_figures."""
    from ._cpu_figures import record_cpu_figures as record

    return record(folder, figures, precision)
