"""Validate a decoder variant against PyTorch through the runtime's own loop (KVCache, generate_tokens).

Per prompt: the next-token logits of the prompt and of ``STEPS`` cached steps (fed PyTorch's greedy tokens)
must be within FP32_ATOL for fp32, and the greedy continuation of ``GREEDY`` tokens (no eos stop) must be
token-identical. Low-bit variants get the same figures recorded, not enforced: their quality is a choice the
bench and the manifest make visible.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from onnxpipe._for_export import AutoTokenizer, KVCache, Manifest, OnnxModel, Sampling, describe, generate_tokens
from onnxpipe.errors import ValidationError

from ._sentences import VALIDATION_SENTENCES

FP32_ATOL = 1e-4
STEPS = 4
GREEDY = 32
PROMPTS = [VALIDATION_SENTENCES[i] for i in (0, 2, 12, 15)]


def torch_greedy(model: Any, ids: list[int], n: int) -> tuple[list[int], np.ndarray]:
    """PyTorch's greedy tokens (its own cache) and the next-token logits before each of them."""
    tokens, logits = [], []
    with torch.no_grad():
        out = model(input_ids=torch.tensor([ids]), use_cache=True)
        for _ in range(n):
            row = out.logits[0, -1].float()
            logits.append(row.numpy())
            tokens.append(int(row.argmax()))
            out = model(input_ids=torch.tensor([[tokens[-1]]]), past_key_values=out.past_key_values, use_cache=True)
    return tokens, np.stack(logits)


def validate_decoder(ckpt: Any, manifest: Manifest, precision: str) -> dict[str, Any]:
    model = OnnxModel(manifest, device="cpu", precision=precision)
    graph = describe(model)
    tokenizer = AutoTokenizer.from_manifest(manifest)
    worst, agree, total, mismatches = 0.0, 0, 0, []
    for prompt in PROMPTS:
        ids = list(ckpt.tokenizer(prompt)["input_ids"])
        ours = tokenizer.backend.encode(prompt).ids
        if ours != ids:
            raise ValidationError(f"tokenizer.json gives {ours[:12]}... for {prompt!r}, transformers {ids[:12]}...")
        ref_tokens, ref_logits = torch_greedy(ckpt.model, ids, GREEDY)
        cache = KVCache(model, graph, 1, capacity=len(ids) + STEPS + 1)
        got = [cache.prefill(np.array([ids]), np.ones((1, len(ids)), dtype=np.int64))[0]]
        for t in ref_tokens[:STEPS]:
            got.append(cache.step(np.array([t]))[0])
        worst = max(worst, float(np.abs(np.stack(got) - ref_logits[: STEPS + 1]).max()))
        steps = generate_tokens(
            model,
            graph,
            np.array([ids]),
            np.ones((1, len(ids)), dtype=np.int64),
            GREEDY,
            Sampling(),
            eos_ids=[],
            pad_id=0,
        )
        tokens = [int(t[0]) for t, _ in steps]
        same = next((i for i, (a, b) in enumerate(zip(tokens, ref_tokens)) if a != b), GREEDY)
        agree, total = agree + same, total + GREEDY
        if same < GREEDY:
            mismatches.append({"prompt": prompt, "first_divergence": same})
    figures = {
        "max_abs_logits_diff": worst,
        "greedy_tokens_before_divergence": f"{agree}/{total}",
        "greedy_identical": not mismatches,
        "prompts": len(PROMPTS),
        "cached_steps_compared": STEPS,
    }
    figures["summary"] = f"logits within {worst:.1e}, greedy {agree}/{total} tokens identical"
    if precision == "fp32":
        if worst > FP32_ATOL:
            raise ValidationError(
                f"fp32 logits differ from PyTorch by {worst:.2e} (> {FP32_ATOL}) on the prompt or a "
                "cached step; the export is wrong for this architecture"
            )
        if mismatches:
            raise ValidationError(f"fp32 greedy continuation differs from PyTorch's: {mismatches}")
    return figures
