"""Per-architecture export settings, as data. Adding an architecture is one entry here plus a test row."""

from __future__ import annotations

from onnxpipe.errors import ExportError, UnsupportedArchitectureError

# Tasks the export stage can produce, and the runtime tasks each folder then serves.
SUPPORTED_TASKS: dict[str, list[str]] = {
    # The classification graph also outputs last_hidden_state, so the same folder serves AutoModel.
    "text-classification": ["text-classification", "feature-extraction"],
    "feature-extraction": ["feature-extraction"],
    # Every head graph also outputs last_hidden_state (see _onnx.py), so these folders serve AutoModel too.
    "fill-mask": ["fill-mask", "feature-extraction"],
    "token-classification": ["token-classification", "feature-extraction"],
    "question-answering": ["question-answering", "feature-extraction"],
}
TASK_ALIASES = {"sentiment-analysis": "text-classification", "sentence-embeddings": "feature-extraction",
                "ner": "token-classification",
                # zero-shot runs an NLI text-classification graph; see folder_tasks for when a folder serves it.
                "zero-shot-classification": "text-classification"}

# export task -> the transformers class that loads the checkpoint, and the head outputs of the graph (each
# graph also gets last_hidden_state).
HEADS: dict[str, dict] = {
    "text-classification": {"model_class": "AutoModelForSequenceClassification", "outputs": ["logits"]},
    "feature-extraction": {"model_class": "AutoModel", "outputs": []},
    "fill-mask": {"model_class": "AutoModelForMaskedLM", "outputs": ["logits"]},
    "token-classification": {"model_class": "AutoModelForTokenClassification", "outputs": ["logits"]},
    "question-answering": {"model_class": "AutoModelForQuestionAnswering", "outputs": ["start_logits", "end_logits"]},
}

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


def folder_tasks(requested: str, config) -> list[str]:
    """The runtime tasks a folder exported for ``requested`` serves; an NLI classifier also serves zero-shot."""
    task = canonical_export_task(requested)
    tasks = list(SUPPORTED_TASKS[task])
    if task == "text-classification":
        labels = {int(k): v for k, v in (getattr(config, "id2label", None) or {}).items()}
        if any(str(v).lower().startswith("entail") for v in labels.values()):
            tasks.append("zero-shot-classification")
        elif requested == "zero-shot-classification":
            raise ExportError(
                f"zero-shot-classification needs an NLI model with an 'entailment' label; this one has "
                f"{sorted(labels.values())}. Use an NLI checkpoint, or name its labels in config.json "
                "(id2label / label2id: contradiction, neutral, entailment)."
            )
    return tasks


def settings_for(model_type: str) -> dict:
    if model_type not in ARCHITECTURES:
        raise UnsupportedArchitectureError(
            f"no export settings for model type {model_type!r}; supported: {sorted(ARCHITECTURES)}. "
            "Add an entry to onnxpipe_export/_registry.py (and a test row) to support it."
        )
    return ARCHITECTURES[model_type]
