"""A random-weight transformers checkpoint from a config, for the benches whose timing needs no trained weights."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def save_random(folder: Path, auto_class: str, arch: str, config: dict[str, Any], seed: int, tokenizer: Any) -> Path:
    """Write ``transformers.<auto_class>`` of ``arch`` with ``config``, its weights drawn after
    ``torch.manual_seed(seed)`` (the same bytes on every run), its generation config and ``tokenizer`` to
    ``folder``."""
    import torch
    import transformers

    built = transformers.AutoConfig.for_model(arch, **config)
    torch.manual_seed(seed)
    model = getattr(transformers, auto_class).from_config(built).eval()
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    model.generation_config.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
