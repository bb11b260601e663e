"""onnxpipe's export stage: a PyTorch checkpoint in, a verified model folder out.

    >>> from onnxpipe_export import export
    >>> export("../shared/checkpoints/minilm-sst2", task="text-classification", out="models/minilm-sst2")

Needs the export extra (pip install 'onnxpipe[export]'). This module imports nothing heavy until
``export`` runs, so the CLI can explain a missing extra instead of failing with a traceback.
"""

from __future__ import annotations

import importlib.util

from onnxpipe.errors import ExportExtraMissingError

__all__ = ["export", "require_extra", "SUPPORTED_TASKS", "ARCHITECTURES"]

from ._registry import ARCHITECTURES, SUPPORTED_TASKS  # noqa: E402  (plain data, no heavy imports)

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


def export(
    source,
    task="text-classification",
    out=None,
    precisions=("int8", "fp32", "fp16"),
    force=False,
    allow_pickle=False,
    trust_remote_code=False,
    revision=None,
    progress=True,
    validation_data=None,
    int8_recipe="default",
    ort=False,
    calibration_data=None,
    prune_vocab=None,
):
    """Export ``source`` (a checkpoint folder or hub id) for ``task`` into the model folder ``out``.

    Steps: load -> ONNX fp32 (optimum-onnx) -> graph fusion -> INT8 / fp16 variants -> validation against
    PyTorch -> tokenizer and manifest -> atomic move into place. Returns the folder's path.
    ``validation_data``: a labelled TSV (``label<TAB>text`` after a header) whose accuracy and label
    agreement per variant are recorded in the manifest (text-classification only).
    ``int8_recipe``: "default" (per-channel QInt8 on the fused graph), a candidate name from
    ``INT8_CANDIDATES``, or "search": quantize every candidate, score it on ``validation_data``, time it on
    this machine, keep the fastest within the quality gates and record all candidates' figures in the manifest.
    ``ort``: also write each variant (but fp16) in onnxruntime's ORT format (``onnx/<name>.ort``, checked to
    compute the same) and ``required_operators.config``, what a minimal onnxruntime build needs.
    ``calibration_data``: sentences (labelled TSV like ``validation_data``, or one per line) that static int8
    recipes calibrate activation ranges on; never the validation set. Without it the search skips them.
    ``prune_vocab``: a corpus file (one text per line, or a TSV with a header); only the tokens it needs stay in
    the embedding matrix and tokenizer.json, and the manifest's ``vocab_pruning`` records what was cut.

    >>> export("../shared/checkpoints/minilm-sst2", out="models/minilm-sst2", precisions="int8",
    ...        validation_data="../shared/data/sst2/dev.tsv", int8_recipe="search")  # doctest: +SKIP
    """
    require_extra()
    from ._recipe import run_export

    return run_export(
        source,
        task=task,
        out=out,
        precisions=precisions,
        force=force,
        allow_pickle=allow_pickle,
        trust_remote_code=trust_remote_code,
        revision=revision,
        progress=progress,
        validation_data=validation_data,
        int8_recipe=int8_recipe,
        ort=ort,
        calibration_data=calibration_data,
        prune_vocab=prune_vocab,
    )
