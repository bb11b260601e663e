"""The export recipe of decoder-only causal LMs (GPT-2, Llama, Qwen2, Mistral): ``--task text-generation``.

load -> one ONNX graph with past key values (the first call takes empty past tensors, so one graph serves the
prompt and every cached step): for the Llama family a fused graph written from the weights (_decoder_graph),
else optimum's ``text-generation-with-past`` trace -> low-bit variants -> tokenizer,
config, generation_config.json and chat template -> validation through the runtime's own generation loop
against PyTorch (_decoder_validate) -> manifest -> atomic move into place (the same staging as encoders).
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

DECODER_FILES = {"fp32": "onnx/model.onnx", "int4": "onnx/model_q4.onnx", "int8": "onnx/model_quantized.onnx"}
# The CLI's and export()'s default precisions are the encoders' ("int8,fp32,fp16"); for a decoder they mean
# this default: fp32 plus the low-bit variant measured fastest on CPU (bench/generate.py).
ENCODER_DEFAULT = ("int8", "fp32", "fp16")
DECODER_DEFAULT = ("int4", "fp32")


def decoder_precisions(precisions: Any) -> list[str]:
    if isinstance(precisions, str):
        precisions = [p.strip() for p in precisions.split(",") if p.strip()]
    if tuple(precisions) == ENCODER_DEFAULT:
        return list(DECODER_DEFAULT)
    bad = [p for p in precisions if p not in DECODER_FILES]
    if bad or not precisions:
        raise ExportError(
            f"precision(s) {bad or precisions} are not made for text-generation; choose from "
            f"{sorted(DECODER_FILES)} (int4: 4-bit weight-only MatMulNBits; int8: dynamic, u8 weights)"
        )
    return list(dict.fromkeys(precisions))


def _export_onnx(model: Any, out_dir: Path) -> Path:
    import torch
    from optimum.exporters.onnx import onnx_export_from_model

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)  # type: ignore[attr-defined]  # torch.jit re-exports it without __all__; validated against PyTorch below
        warnings.filterwarnings("ignore", category=UserWarning)
        onnx_export_from_model(
            model, out_dir, task="text-generation-with-past", do_validation=False, no_post_process=True
        )
    return out_dir / "model.onnx"


def _write_graph(model: Any, tmp: Path, fp32: Path) -> dict[str, Any]:
    """Write the fp32 decoder graph to ``fp32``: the fused Llama-family graph where it applies (at 4-bit it
    decodes 1.8x faster than optimum's graph, 2.1x with its in-place cache: bench/generate.md), optimum's
    traced graph otherwise. Returns the manifest's record of which graph was written and why."""
    from ._decoder_graph import build_fused, fused_unsupported

    why_not = fused_unsupported(model.config)
    if why_not is None:
        build_fused(model, fp32)
        return {"builder": "onnxpipe-fused", "attention": "com.microsoft.GroupQueryAttention", "cache": "shared-buffer"}
    raw = _export_onnx(model, tmp / "raw")
    fp32.parent.mkdir()
    for f in raw.parent.glob("model.onnx*"):  # the graph and, past 2 GB, its external data beside it
        shutil.move(str(f), str(fp32.parent / f.name))
    shutil.rmtree(tmp / "raw")
    return {"builder": "optimum", "fused_not_used": why_not, "cache": "concat"}


def generation_block(ckpt: Any) -> dict[str, Any]:
    """The manifest's "generation" entry: what the runtime's loop and pipeline need (docs/model-folder.md)."""
    cfg, tok = ckpt.config, ckpt.tokenizer
    heads = int(getattr(cfg, "num_attention_heads", None) or cfg.n_head)
    hidden = int(getattr(cfg, "hidden_size", None) or cfg.n_embd)
    gen = ckpt.model.generation_config
    eos = gen.eos_token_id if gen.eos_token_id is not None else tok.eos_token_id
    eos_ids = [int(e) for e in (eos if isinstance(eos, list) else [eos]) if e is not None]
    pad = gen.pad_token_id if gen.pad_token_id is not None else tok.pad_token_id
    return {
        "num_layers": int(getattr(cfg, "num_hidden_layers", None) or cfg.n_layer),
        "num_attention_heads": heads,
        "num_key_value_heads": int(getattr(cfg, "num_key_value_heads", None) or heads),
        "head_dim": int(getattr(cfg, "head_dim", None) or hidden // heads),
        "vocab_size": int(cfg.vocab_size),
        "bos_token_id": None if tok.bos_token_id is None else int(tok.bos_token_id),
        "eos_token_id": eos_ids,
        # transformers' pipeline pads with eos when the tokenizer has no pad token (GPT-2)
        "pad_token_id": int(pad) if pad is not None else (eos_ids[0] if eos_ids else 0),
        "config": {
            k: v for k, v in gen.to_diff_dict().items() if not k.startswith("_") and k != "transformers_version"
        },
        "chat_template": "chat_template.jinja" if getattr(tok, "chat_template", None) else None,
    }


def export_decoder(
    source: Any,
    requested: str,
    out: Any,
    precisions: Any,
    force: bool,
    allow_pickle: bool,
    trust_remote_code: bool,
    revision: Any,
    progress: bool,
) -> Path:
    """Export a causal LM into a model folder; see the module docstring. Returns the folder."""
    from ._decoder_validate import validate_decoder
    from ._load import load_checkpoint
    from ._lowbit import quantize_8bit, quantize_nbits

    precisions = decoder_precisions(precisions)
    target = prepare(out, source, force)
    out = target.path
    with staging(out) as tmp, file_errors(out):
        check_space(tmp, source)
        ckpt = load_checkpoint(str(source), "text-generation", allow_pickle, trust_remote_code, revision)
        fp32 = tmp / DECODER_FILES["fp32"]
        graph_info = _write_graph(ckpt.model, tmp, fp32)
        variants = {"fp32": Variant(DECODER_FILES["fp32"])}
        if "int4" in precisions:
            variants["int4"] = Variant(DECODER_FILES["int4"], recipe=quantize_nbits(fp32, tmp / DECODER_FILES["int4"]))
        if "int8" in precisions:
            variants["int8"] = Variant(DECODER_FILES["int8"], recipe=quantize_8bit(fp32, tmp / DECODER_FILES["int8"]))

        cfg = ckpt.config
        max_length = int(getattr(cfg, "max_position_embeddings", None) or cfg.n_positions)
        save_tokenizer_and_configs(ckpt, tmp, max_length)
        generation = {**generation_block(ckpt), "graph": graph_info}
        if generation["chat_template"]:
            (tmp / "chat_template.jinja").write_text(ckpt.tokenizer.chat_template, encoding="utf-8")
        manifest = write_and_place(
            ckpt,
            tmp,
            target,
            task="text-generation",
            graph=fp32,
            hidden_size=int(getattr(cfg, "hidden_size", None) or cfg.n_embd),
            max_length=max_length,
            generation=generation,
            variants=variants,
            revision=revision,
            validate=partial(validate_decoder, ckpt),
            precisions=precisions,
        )
    if progress:
        print(exported_line(source, "text-generation", manifest))
    return target.path
