"""The export recipe of encoder-decoder models (T5, BART, Marian): ``--task text2text-generation`` (and its
aliases summarization, translation).

load -> optimum's ``text2text-generation-with-past`` trace: an encoder graph, a decoder without past (the first
step: it computes the cross-attention keys and values once per input) and one with past -> the two decoders
folded (_fold) and merged into one graph (``use_cache_branch`` picks the branch; their weights are stored once) ->
dynamic int8 (7-bit s8 weights, per channel) of each decoder *before* merging, because onnxruntime's quantizer
does not enter the merged graph's If branches -> tokenizer, config, generation config and task prefixes ->
validation through the runtime's own loop against PyTorch's ``generate`` (_seq2seq_validate) -> manifest ->
atomic move into place.

File names are Optimum's and transformers.js's (``onnx/encoder_model.onnx``, ``onnx/decoder_model_merged.onnx``
and their ``_quantized`` copies), so the folder also opens there.
"""

from __future__ import annotations

import shutil
import warnings
from functools import partial
from pathlib import Path
from typing import Any

from onnxpipe._for_export import Variant
from onnxpipe.errors import ExportError

from ._generative import exported_line, save_tokenizer_and_configs, write_and_place
from ._output import check_space, file_errors, prepare, staging

SEQ2SEQ_TASK = "text2text-generation"
FILES = {
    "fp32": ("onnx/encoder_model.onnx", "onnx/decoder_model_merged.onnx"),
    "int8": ("onnx/encoder_model_quantized.onnx", "onnx/decoder_model_merged_quantized.onnx"),
}
ENCODER_DEFAULT = ("int8", "fp32", "fp16")  # what the CLI passes when --precision is not given
DEFAULT = ("int8", "fp32")
# 7-bit s8 weights, one scale per output channel: onnxruntime runs them on its u8 x s8 kernels (VNNI's dot
# product), which no CPU saturates at 7 bits (the encoders' default recipes do the same); u8 weights ran its
# slower u8 x u8 kernels, which left the int8 encoder no faster than fp32 (bench/results/seq2seq.md). Per channel
# makes up for the bit the 7-bit range gives away.
# The int8 variant also stores the token embedding's Gather table as u8 (the quantizer writes Gather tables as u8
# whatever the weights' type; dequantized after the Gather): each graph holds its own copy of the vocabulary x
# d_model table, which in fp32 was most of the int8 folder's weights and of its memory. Other tables (T5's
# relative-position buckets, BART's learned positions) stay fp32: only tables of the vocabulary's row count are
# quantized.
INT8_SEQ2SEQ = {
    "method": "dynamic",
    "weight_type": "QInt8",
    "per_channel": True,
    "reduce_range": True,
    "op_types": ["MatMul", "Gemm", "Gather"],
}
# Generation settings the runtime's loop implements; a checkpoint whose generation config sets another one
# (a value other than transformers' default) is refused rather than decoded differently.
_SUPPORTED_CONFIG = {
    "bos_token_id",
    "eos_token_id",
    "pad_token_id",
    "decoder_start_token_id",
    "forced_bos_token_id",
    "forced_eos_token_id",
    "no_repeat_ngram_size",
    "bad_words_ids",
    "length_penalty",
    "early_stopping",
    "num_beams",
    "max_length",
    "max_new_tokens",
    "min_length",
    "min_new_tokens",
    "do_sample",
    "temperature",
    "top_k",
    "top_p",
    "repetition_penalty",
    "num_return_sequences",
}


def seq2seq_precisions(precisions: Any) -> list[str]:
    if isinstance(precisions, str):
        precisions = [p.strip() for p in precisions.split(",") if p.strip()]
    if tuple(precisions) == ENCODER_DEFAULT:
        return list(DEFAULT)
    bad = [p for p in precisions if p not in FILES]
    if bad or not precisions:
        raise ExportError(
            f"precision(s) {bad or precisions} are not made for {SEQ2SEQ_TASK}; choose from {sorted(FILES)} "
            "(int8: dynamic, 7-bit s8 weights per channel, on every MatMul and the token embedding of the encoder and "
            "both decoder branches)"
        )
    return list(dict.fromkeys(precisions))


def _trace(model: Any, out_dir: Path) -> Path:
    import torch
    from optimum.exporters.onnx import onnx_export_from_model

    # The trace turns use_cache on in every sub-model's config (T5's encoder then refuses to run in PyTorch):
    # put the checkpoint back as it was, for the validation against PyTorch that follows.
    configs = {id(m.config): (m.config, m.config.use_cache) for m in model.modules() if hasattr(m, "config")}
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)  # type: ignore[attr-defined]
            warnings.filterwarnings("ignore", category=UserWarning)
            # no_post_process: the merge is done here, after quantizing each decoder (see the module docstring).
            onnx_export_from_model(
                model, out_dir, task="text2text-generation-with-past", do_validation=False, no_post_process=True
            )
    finally:
        for config, use_cache in configs.values():
            config.use_cache = use_cache
    return out_dir


def _merge(decoder: Path, with_past: Path, out: Path) -> None:
    from optimum.onnx import merge_decoders

    # strict=False: the with-past branch has no cross-attention outputs (they are computed once, in the first
    # step); optimum gives it constant placeholders, which the runtime never reads.
    merge_decoders(str(decoder), str(with_past), save_path=str(out), strict=False)


def _write_graphs(raw: Path, tmp: Path, precisions: list[str], vocab_size: int) -> dict[str, Variant]:
    from ._fold import fold_constants
    from ._lowbit import quantize_8bit
    from ._seq2seq_attention import fuse_cached_attention

    (tmp / "onnx").mkdir()
    encoder, decoder = FILES["fp32"]
    shutil.copy(raw / "encoder_model.onnx", tmp / encoder)
    # Each decoder folded before the merge (_fold: inside the merged graph's If, onnxruntime no longer folds a
    # branch's shape arithmetic at load time), the cached step's attentions fused (_seq2seq_attention: the step
    # runs every token, the first one once per input); the int8 variant quantizes the same graphs.
    first, cached = raw / "decoder_folded.onnx", raw / "decoder_with_past_folded.onnx"
    fold_constants(raw / "decoder_model.onnx", first)
    fold_constants(raw / "decoder_with_past_model.onnx", cached)
    fused = fuse_cached_attention(cached)
    _merge(first, cached, tmp / decoder)
    variants = {"fp32": Variant(encoder, decoder=decoder, fused_operators=fused)}
    if "int8" in precisions:
        q_encoder, q_decoder = FILES["int8"]
        settings = {**INT8_SEQ2SEQ, "gather_rows": vocab_size}
        recipe = quantize_8bit(raw / "encoder_model.onnx", tmp / q_encoder, settings)
        quantize_8bit(first, raw / "decoder_q.onnx", settings)
        quantize_8bit(cached, raw / "decoder_with_past_q.onnx", settings)
        _merge(raw / "decoder_q.onnx", raw / "decoder_with_past_q.onnx", tmp / q_decoder)
        variants["int8"] = Variant(q_encoder, decoder=q_decoder, recipe=recipe, fused_operators=fused)
    return variants


def _token_ids(value: Any) -> list[int]:
    if value is None:
        return []
    return [int(v) for v in (value if isinstance(value, list) else [value])]


def generation_block(ckpt: Any, decoder_graph: Path) -> dict[str, Any]:
    """The manifest's "generation" entry of an encoder-decoder folder (models/README.md)."""
    import onnx

    cfg, tok = ckpt.config, ckpt.tokenizer
    gen = ckpt.model.generation_config
    config = {k: v for k, v in gen.to_diff_dict().items() if not k.startswith("_") and k != "transformers_version"}
    unsupported = sorted(set(config) - _SUPPORTED_CONFIG)
    if unsupported:
        raise ExportError(
            f"{ckpt.source}'s generation config sets {unsupported}, which onnxpipe's generation loop does not "
            f"implement (it implements {sorted(_SUPPORTED_CONFIG)}); remove them from generation_config.json "
            "if the model works without them"
        )
    start = gen.decoder_start_token_id if gen.decoder_start_token_id is not None else cfg.decoder_start_token_id
    if start is None:
        raise ExportError(f"{ckpt.source} names no decoder_start_token_id in its config or generation config")
    eos = _token_ids(gen.eos_token_id if gen.eos_token_id is not None else tok.eos_token_id)
    pad = gen.pad_token_id if gen.pad_token_id is not None else tok.pad_token_id
    graph = onnx.load(str(decoder_graph), load_external_data=False).graph
    heads = int(getattr(cfg, "decoder_attention_heads", None) or cfg.num_heads)
    params = {k: dict(v) for k, v in (getattr(cfg, "task_specific_params", None) or {}).items()}
    return {
        "num_layers": int(getattr(cfg, "decoder_layers", None) or cfg.num_decoder_layers),
        "num_attention_heads": heads,
        "num_key_value_heads": heads,
        "head_dim": int(getattr(cfg, "d_kv", None) or cfg.d_model // heads),
        "vocab_size": int(cfg.vocab_size),
        "bos_token_id": None if gen.bos_token_id is None else int(gen.bos_token_id),
        "eos_token_id": eos,
        "pad_token_id": int(pad) if pad is not None else (eos[0] if eos else 0),
        "decoder_start_token_id": int(start),
        "config": config,
        "chat_template": None,
        "decoder_inputs": [i.name for i in graph.input],
        "decoder_outputs": [o.name for o in graph.output],
        "task_params": params,
        "prefix": getattr(cfg, "prefix", None),
    }


def _max_length(ckpt: Any) -> int:
    """The longest input the encoder takes: its learned positions (BART, Marian), else (T5's relative
    positions have no limit) the length its tokenizer was trained for."""
    tok_max = getattr(ckpt.tokenizer, "model_max_length", None) or 10**9
    positions = getattr(ckpt.config, "max_position_embeddings", None)
    if positions is None:
        return int(min(tok_max, 10**6))
    return int(min(tok_max, positions))


def export_seq2seq(
    source: Any,
    requested: str,
    out: Any,
    precisions: Any,
    force: bool,
    allow_pickle: bool,
    trust_remote_code: bool,
    revision: str | None,
    progress: bool,
) -> Path:
    """Export an encoder-decoder checkpoint into a model folder; see the module docstring. Returns the folder."""
    from ._load import load_checkpoint
    from ._seq2seq_validate import validate_seq2seq

    precisions = seq2seq_precisions(precisions)
    target = prepare(out, source, force)
    out = target.path
    with staging(out) as tmp, file_errors(out):
        check_space(tmp, source)
        ckpt = load_checkpoint(str(source), SEQ2SEQ_TASK, allow_pickle, trust_remote_code, revision)
        raw = _trace(ckpt.model, tmp / "raw")
        variants = _write_graphs(raw, tmp, precisions, int(ckpt.config.vocab_size))
        shutil.rmtree(raw)
        max_length = _max_length(ckpt)
        save_tokenizer_and_configs(ckpt, tmp, max_length)
        generation = generation_block(ckpt, tmp / FILES["fp32"][1])
        manifest = write_and_place(
            ckpt,
            tmp,
            target,
            task=SEQ2SEQ_TASK,
            graph=tmp / FILES["fp32"][0],
            hidden_size=int(ckpt.config.d_model),
            max_length=max_length,
            generation=generation,
            variants=variants,
            revision=revision,
            validate=partial(validate_seq2seq, ckpt),
            precisions=precisions,
        )
    if progress:
        print(exported_line(source, requested, manifest))
    return Path(out)
