"""Validate an encoder-decoder variant against PyTorch through the runtime's own loop (Seq2SeqModel, greedy and
beam search): per sentence, the encoder's output must be within FP32_ATOL, and ``GREEDY`` greedy tokens and a
4-beam search must be token-identical to ``model.generate`` with the checkpoint's own generation config. Low-bit
variants get the same figures recorded, not enforced: their quality is a choice the manifest makes visible.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from onnxpipe._for_export import (
    AutoTokenizer,
    OnnxModel,
    Seq2SeqModel,
    beam_search,
    merged_config,
    resolve,
    sample_or_greedy,
)
from onnxpipe.errors import ValidationError

from ._sentences import VALIDATION_SENTENCES

FP32_ATOL = 1e-4
GREEDY = 24
BEAMS = 4
SENTENCES = [VALIDATION_SENTENCES[i] for i in (0, 2, 5, 12, 15, 16)]


def _torch_tokens(model: Any, ids: list[int], **kwargs: Any) -> list[int]:
    with torch.no_grad():
        out = model.generate(
            input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long), **kwargs
        )
    eos = model.generation_config.eos_token_id
    eos = set(eos if isinstance(eos, list) else [eos])
    tokens = []
    for t in out[0, 1:].tolist():
        tokens.append(int(t))
        if t in eos:
            break
    return tokens


def validate_seq2seq(ckpt: Any, manifest: Any, precision: str) -> dict[str, Any]:
    model = Seq2SeqModel(OnnxModel(manifest, device="cpu", precision=precision))
    tokenizer = AutoTokenizer.from_manifest(manifest)
    g = manifest.generation
    ids_of = {k: g.get(k) for k in ("eos_token_id", "pad_token_id", "decoder_start_token_id", "bos_token_id")}
    worst, same, total, mismatches = 0.0, 0, 0, []
    for sentence in SENTENCES:
        ids = list(ckpt.tokenizer(sentence)["input_ids"])
        if len(ids) > manifest.max_length:  # past the encoder's limit (the tiny test models' 128 positions)
            continue
        ours = tokenizer.backend.encode(sentence).ids
        if ours != ids:
            raise ValidationError(f"tokenizer.json gives {ours[:12]}... for {sentence!r}, transformers {ids[:12]}...")
        with torch.no_grad():
            start = torch.tensor([[g["decoder_start_token_id"]]])
            out = ckpt.model(input_ids=torch.tensor([ids]), decoder_input_ids=start, use_cache=False)
            ref = out.encoder_last_hidden_state[0].numpy()
        arr, mask = np.array([ids]), np.ones((1, len(ids)), dtype=np.int64)
        hidden = model.encode(arr, mask)
        worst = max(worst, float(np.abs(hidden[0] - ref).max()))
        for name, call in (("greedy", {"num_beams": 1}), ("beam", {"num_beams": BEAMS})):
            call = {**call, "do_sample": False, "max_new_tokens": GREEDY}
            expected = _torch_tokens(ckpt.model, ids, **call)
            s = resolve(merged_config(dict(g.get("config") or {}), None, {}, call, pipeline_defaults={}), ids_of)
            got = (
                beam_search(model, hidden, mask, s)[0][0]
                if s.num_beams > 1
                else sample_or_greedy(model, hidden, mask, s)[0]
            )
            total += 1
            if got == expected:
                same += 1
            else:
                mismatches.append({"sentence": sentence, "search": name, "expected": expected[:8], "got": got[:8]})
    figures = {
        "max_abs_encoder_diff": worst,
        "generations_identical": f"{same}/{total}",
        "sentences": len(SENTENCES),
        "searches": ["greedy", f"beam {BEAMS}"],
        "max_new_tokens": GREEDY,
    }
    figures["summary"] = f"encoder within {worst:.1e}, {same}/{total} greedy and beam generations token-identical"
    if precision == "fp32":
        if worst > FP32_ATOL:
            raise ValidationError(
                f"fp32 encoder output differs from PyTorch by {worst:.2e} (> {FP32_ATOL}); the export is wrong "
                "for this architecture"
            )
        if mismatches:
            raise ValidationError(f"fp32 generation differs from PyTorch's generate: {mismatches[:3]}")
    return figures
