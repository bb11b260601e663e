"""Load-time check that an ONNX graph is the one its manifest describes: the same inputs, the outputs the
runtime asks for, and one logit per label. It runs once per session, so a folder whose files do not belong
together fails at load with the fix, instead of at the first batch (or, worse, with plausible wrong labels).
"""

from __future__ import annotations

from typing import Any

from ._manifest import Manifest
from .errors import ManifestError


def check_graph(manifest: Manifest, session: Any, precision: str) -> None:
    """Raise ManifestError when the session's graph disagrees with ``manifest``.

    Inputs must match exactly: the runtime feeds the manifest's inputs, and a graph input it does not know
    could only be fed a guess. Every manifest output must exist; extra graph outputs are never requested, so
    they are allowed. With labels, a static last dimension of ``logits`` must be one per label index 0..n-1
    (one label on a 3-logit graph would otherwise switch to sigmoid and name LABEL_2).

    Example:
        >>> check_graph(manifest, session, "int8")  # None, or ManifestError naming the file and the fix
    """
    path = manifest.variant_path(precision)
    fix = f"The manifest and the ONNX file do not belong together; {manifest.hint()}"
    graph_inputs = sorted(i.name for i in session.get_inputs())
    if set(graph_inputs) != set(manifest.inputs):
        raise ManifestError(
            f"{path} takes the inputs {graph_inputs}, but the manifest lists {sorted(manifest.inputs)}. {fix}"
        )
    graph_outputs = {o.name: o.shape for o in session.get_outputs()}
    missing = [name for name in manifest.outputs if name not in graph_outputs]
    if missing:
        raise ManifestError(
            f"{path} has the outputs {sorted(graph_outputs)}, not {missing} that the manifest lists. {fix}"
        )
    labels = manifest.labels
    shape = graph_outputs.get("logits")
    if labels and shape and isinstance(shape[-1], int):  # a named (dynamic) dimension is checked by nothing here
        width = shape[-1]
        if sorted(labels) != list(range(width)):
            raise ManifestError(
                f"{path} gives {width} logits per row, but the manifest labels the indices "
                f"{sorted(labels)} ({labels}); they must be 0..{width - 1}, one label each. {fix}"
            )
