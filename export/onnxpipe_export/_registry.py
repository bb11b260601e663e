"""Per-architecture export settings, as data. Adding an architecture is one entry here plus a test row."""

from __future__ import annotations

from onnxpipe.errors import UnsupportedArchitectureError

# Tasks the export stage can produce, and the runtime tasks each folder then serves.
SUPPORTED_TASKS: dict[str, list[str]] = {
    # The classification graph also outputs last_hidden_state, so the same folder serves AutoModel.
    "text-classification": ["text-classification", "feature-extraction"],
    "feature-extraction": ["feature-extraction"],
}
TASK_ALIASES = {"sentiment-analysis": "text-classification", "sentence-embeddings": "feature-extraction"}

# model_type -> settings. "fusion": onnxruntime.transformers optimizer model type (None: no fusion pass).
# "expect_fused": operators the fusion must produce (tested against the written graph). onnxruntime cannot fuse
# the attention of MPNet (relative position bias added to the scores) or DeBERTa-v2 (disentangled attention);
# in ALBERT it fuses every layer but the first (whose residual input is the embedding projection; tested).
# "positions_after_pad": position ids start at pad_token_id + 1 (RoBERTa-style), so that many fewer
# positions are usable than max_position_embeddings.
ARCHITECTURES: dict[str, dict] = {
    "bert": {"fusion": "bert", "expect_fused": ["Attention", "SkipLayerNormalization"]},
    "distilbert": {"fusion": "bert", "expect_fused": ["Attention", "SkipLayerNormalization"]},
    "roberta": {"fusion": "bert", "expect_fused": ["Attention", "SkipLayerNormalization"],
                "positions_after_pad": True},
    "xlm-roberta": {"fusion": "bert", "expect_fused": ["Attention", "SkipLayerNormalization"],
                    "positions_after_pad": True},
    "electra": {"fusion": "bert", "expect_fused": ["Attention", "SkipLayerNormalization"]},
    "albert": {"fusion": "bert", "expect_fused": ["Attention", "SkipLayerNormalization"]},
    "mpnet": {"fusion": "bert", "expect_fused": ["SkipLayerNormalization"], "positions_after_pad": True},
    "deberta-v2": {"fusion": "bert", "expect_fused": ["SkipLayerNormalization"]},
}


def canonical_export_task(task: str) -> str:
    name = TASK_ALIASES.get(task, task)
    if name not in SUPPORTED_TASKS:
        raise UnsupportedArchitectureError(
            f"cannot export for task {task!r}; supported tasks: {sorted([*SUPPORTED_TASKS, *TASK_ALIASES])}"
        )
    return name


def settings_for(model_type: str) -> dict:
    if model_type not in ARCHITECTURES:
        raise UnsupportedArchitectureError(
            f"no export settings for model type {model_type!r}; supported: {sorted(ARCHITECTURES)}. "
            "Add an entry to onnxpipe_export/_registry.py (and a test row) to support it."
        )
    return ARCHITECTURES[model_type]
