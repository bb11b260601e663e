"""Per-architecture export settings, as data. Adding an architecture is one entry here plus a test row."""

from __future__ import annotations

from typing import Any

from onnxpipe._for_export import GRAPHS, TABLE, export_task_names, served_tasks
from onnxpipe.errors import ExportError, UnsupportedArchitectureError

# The tasks themselves (names, aliases, graphs and their outputs, which tasks a folder serves) are the
# runtime's task table, onnxpipe._tasks; this stage adds only what exporting needs.

# graph -> the transformers class that loads a checkpoint for it.
MODEL_CLASSES: dict[str, str] = {
    "text-classification": "AutoModelForSequenceClassification",
    "feature-extraction": "AutoModel",
    "fill-mask": "AutoModelForMaskedLM",
    "token-classification": "AutoModelForTokenClassification",
    "question-answering": "AutoModelForQuestionAnswering",
    "text-generation": "AutoModelForCausalLM",
    "text2text-generation": "AutoModelForSeq2SeqLM",
}

# Derived: export task -> {"model_class", "outputs"} (head outputs; each graph also gets last_hidden_state),
# every name --task accepts -> its graph, and the runtime tasks each graph's folder can serve.
HEADS: dict[str, dict[str, Any]] = {
    g: {"model_class": MODEL_CLASSES[g], "outputs": list(graph.outputs)} for g, graph in GRAPHS.items()
}
TASK_ALIASES: dict[str, str] = {name: g for name, g in export_task_names().items() if name != g}
SUPPORTED_TASKS: dict[str, list[str]] = {g: served_tasks(g) for g in GRAPHS}

# model_type -> settings. "fusion": onnxruntime.transformers optimizer model type (None: no fusion pass).
# "expect_fused": operators the fusion must produce (tested against the written graph). onnxruntime cannot fuse
# the attention of MPNet (relative position bias added to the scores) or DeBERTa-v2 (disentangled attention);
# in ALBERT it fuses every layer but the first (whose residual input is the embedding projection; tested).
# "positions_after_pad": position ids start at pad_token_id + 1 (RoBERTa-style), so that many fewer
# positions are usable than max_position_embeddings.
ARCHITECTURES: dict[str, dict[str, Any]] = {
    "bert": {"fusion": "bert", "expect_fused": ["Attention", "SkipLayerNormalization"]},
    "distilbert": {"fusion": "bert", "expect_fused": ["Attention", "SkipLayerNormalization"]},
    "roberta": {"fusion": "bert", "expect_fused": ["Attention", "SkipLayerNormalization"], "positions_after_pad": True},
    "xlm-roberta": {
        "fusion": "bert",
        "expect_fused": ["Attention", "SkipLayerNormalization"],
        "positions_after_pad": True,
    },
    "electra": {"fusion": "bert", "expect_fused": ["Attention", "SkipLayerNormalization"]},
    "albert": {"fusion": "bert", "expect_fused": ["Attention", "SkipLayerNormalization"]},
    "mpnet": {"fusion": "bert", "expect_fused": ["SkipLayerNormalization"], "positions_after_pad": True},
    "deberta-v2": {"fusion": "bert", "expect_fused": ["SkipLayerNormalization"]},
    # Decoder-only causal LMs (text-generation only, _decoder.py). No fusion pass: onnxruntime's encoder
    # fusions do not apply to optimum's past-key-value graph; onnxruntime's load-time fusions still run.
    "gpt2": {"fusion": None, "expect_fused": [], "decoder": True},
    "llama": {"fusion": None, "expect_fused": [], "decoder": True},
    "qwen2": {"fusion": None, "expect_fused": [], "decoder": True},
    "mistral": {"fusion": None, "expect_fused": [], "decoder": True},
    # Encoder-decoders (text2text-generation, summarization, translation only: _seq2seq.py). No fusion pass yet.
    "t5": {"fusion": None, "expect_fused": [], "seq2seq": True},
    "bart": {"fusion": None, "expect_fused": [], "seq2seq": True},
    "marian": {"fusion": None, "expect_fused": [], "seq2seq": True},
}
DECODER_TASK = "text-generation"
SEQ2SEQ_TASK = "text2text-generation"


def canonical_export_task(task: str) -> str:
    name = TASK_ALIASES.get(task, task)
    if name not in SUPPORTED_TASKS:
        raise UnsupportedArchitectureError(
            f"cannot export for task {task!r}; supported tasks: {sorted([*SUPPORTED_TASKS, *TASK_ALIASES])}"
        )
    return name


def folder_tasks(requested: str, config: Any) -> list[str]:
    """The runtime tasks a folder exported for ``requested`` serves (an NLI classifier also serves zero-shot);
    refuse a task the checkpoint's labels cannot serve."""
    graph = canonical_export_task(requested)
    labels = {int(k): v for k, v in (getattr(config, "id2label", None) or {}).items()}
    tasks = served_tasks(graph, labels)
    wanted = TABLE.get(requested)
    if wanted is not None and wanted.needs_label and requested not in tasks:
        raise ExportError(
            f"{requested} needs a model with a label starting with {wanted.needs_label!r} (an NLI model); this one "
            f"has {sorted(labels.values())}. Use an NLI checkpoint, or name its labels in config.json "
            "(id2label / label2id: contradiction, neutral, entailment)."
        )
    return tasks


def settings_for(model_type: str, task: str | None = None) -> dict[str, Any]:
    """The export settings of ``model_type``; with ``task``, also refuse a task the architecture cannot serve
    (a decoder or encoder-decoder for an encoder head, an encoder for text-generation...)."""
    settings = ARCHITECTURES.get(model_type)
    if settings is not None and task is not None:
        decoders = sorted(a for a, s in ARCHITECTURES.items() if s.get("decoder"))
        seq2seq = sorted(a for a, s in ARCHITECTURES.items() if s.get("seq2seq"))
        encoders = sorted(a for a in ARCHITECTURES if a not in decoders and a not in seq2seq)
        kind = DECODER_TASK if settings.get("decoder") else SEQ2SEQ_TASK if settings.get("seq2seq") else None
        wanted = task if task in (DECODER_TASK, SEQ2SEQ_TASK) else None
        if kind != wanted:
            raise UnsupportedArchitectureError(
                f"no export settings for model type {model_type!r} with task {task!r}: {DECODER_TASK} supports "
                f"{decoders}; {SEQ2SEQ_TASK} (and summarization, translation) supports {seq2seq}; the other "
                f"tasks support {encoders}. Export a {model_type} checkpoint with "
                f"--task {kind or 'text-classification (or another encoder task)'}."
            )
    if model_type not in ARCHITECTURES:
        raise UnsupportedArchitectureError(
            f"no export settings for model type {model_type!r}; supported: {sorted(ARCHITECTURES)}. "
            "Add an entry to onnxpipe_export/_registry.py (and a test row) to support it."
        )
    return ARCHITECTURES[model_type]
