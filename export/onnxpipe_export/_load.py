"""Load a checkpoint safely: safetensors only unless pickles are allowed, remote code only when asked."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from onnxpipe.errors import ExportError, UnsafeCheckpointError

from ._registry import HEADS, settings_for

_PICKLED = ("pytorch_model.bin", "pytorch_model.bin.index.json", "model.pt", "tf_model.h5")


@dataclass
class Checkpoint:
    source: str
    local: Path | None
    model: Any
    tokenizer: Any
    config: Any
    settings: dict


def _check_local_weights(path: Path, allow_pickle: bool) -> None:
    if any(path.glob("*.safetensors")):
        return
    pickled = [p.name for p in path.iterdir() if p.name in _PICKLED or p.suffix in (".bin", ".pt", ".pth")]
    if pickled and not allow_pickle:
        raise UnsafeCheckpointError(
            f"{path} has only pickled weights ({', '.join(pickled)}); unpickling runs arbitrary code. "
            "If you trust the checkpoint, pass --allow-pickle (allow_pickle=True), or convert it to safetensors."
        )
    if not pickled:
        raise ExportError(f"{path} holds no model weights (*.safetensors). Is it a Hugging Face checkpoint folder?")


def _remote_code_error(source: str, e: ValueError, what: str = "cannot load") -> ExportError:
    if "trust_remote_code" in str(e):
        return UnsafeCheckpointError(
            f"{source} needs custom code from its repository to load; pass --trust-remote-code "
            "(trust_remote_code=True) only if you trust it."
        )
    return ExportError(f"{what} {source}: {e}")


def load_checkpoint(source: str, task: str, allow_pickle: bool, trust_remote_code: bool,
                    revision: str | None) -> Checkpoint:
    import transformers
    from transformers import AutoConfig, AutoTokenizer

    local = Path(source).expanduser()
    local = local if local.is_dir() else None
    if local is not None:
        _check_local_weights(local, allow_pickle)
    kw = {"revision": revision, "trust_remote_code": trust_remote_code}
    try:
        config = AutoConfig.from_pretrained(source, **kw)
    except ValueError as e:
        raise _remote_code_error(source, e, "cannot read the config of") from e
    except OSError as e:
        raise ExportError(
            f"cannot load {source!r}: {e}. It is neither a local checkpoint folder nor a hub id that could be "
            "fetched. Offline, hub ids work only from the local Hugging Face cache (set HF_HUB_OFFLINE=1 and "
            "download it on a connected machine first), or pass the path of a checkpoint folder."
        ) from e
    custom = getattr(config, "auto_map", None) or {}
    if custom and not trust_remote_code:
        # transformers would quietly use its built-in classes for a known model_type and ignore this code; the
        # export (and its validation, which runs the same classes) would then describe another model.
        raise UnsafeCheckpointError(
            f"{source} ships its own model code ({', '.join(f'{k} -> {v}' for k, v in sorted(custom.items()))}). "
            "Pass --trust-remote-code (trust_remote_code=True) to run it, only if you trust the checkpoint."
        )
    settings = settings_for(config.model_type)
    cls = getattr(transformers, HEADS[task]["model_class"])
    try:
        model = cls.from_pretrained(source, use_safetensors=None if allow_pickle else True, **kw)
    except OSError as e:
        if not allow_pickle and "safetensors" in str(e).lower():
            raise UnsafeCheckpointError(
                f"{source} has no safetensors weights; pass --allow-pickle to load pickled weights if you trust it."
            ) from e
        raise ExportError(f"cannot load the weights of {source}: {e}") from e
    except ValueError as e:
        raise _remote_code_error(source, e) from e
    model.eval()
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **kw)
    except ValueError as e:
        raise _remote_code_error(source, e) from e
    if not getattr(tokenizer, "is_fast", False):
        raise ExportError(
            f"{source} has no fast (Rust) tokenizer, which the runtime needs as tokenizer.json. "
            "Convert it with transformers (AutoTokenizer.from_pretrained(..., use_fast=True).save_pretrained(DIR))."
        )
    return Checkpoint(source, local, model, tokenizer, config, settings)


def tokenizer_config(tokenizer) -> dict:
    """What the runtime needs beyond tokenizer.json to decode and find tokens as transformers does."""
    config = {"clean_up_tokenization_spaces": bool(getattr(tokenizer, "clean_up_tokenization_spaces", False))}
    for name in ("mask", "cls", "unk", "sep"):
        token = getattr(tokenizer, f"{name}_token", None)
        config[f"{name}_token"] = None if token is None else str(token)
        config[f"{name}_token_id"] = getattr(tokenizer, f"{name}_token_id", None)
    return config
