"""Load a checkpoint safely: safetensors only unless pickles are allowed, remote code only when asked."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from onnxpipe._for_export import TokenizerConfig
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
    settings: dict[str, Any]


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


def load_checkpoint(
    source: str, task: str, allow_pickle: bool, trust_remote_code: bool, revision: str | None
) -> Checkpoint:
    import transformers
    from transformers import AutoConfig, AutoTokenizer

    expanded = Path(source).expanduser()
    local = expanded if expanded.is_dir() else None
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
    settings = settings_for(config.model_type, task)
    if task in _LABELLED:
        _check_labels(source, config)
    # The tokenizer before the weights: it is the cheaper of the two to find missing.
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **kw)  # type: ignore[no-untyped-call]
    except ValueError as e:
        raise _remote_code_error(source, e) from e
    except (OSError, TypeError) as e:  # no tokenizer files: transformers fails on a None path (TypeError)
        raise ExportError(
            f"{source} has no usable tokenizer files ({e}); the export needs tokenizer.json, or the files "
            "transformers builds it from (vocab.txt, vocab.json + merges.txt, or a SentencePiece *.model, with "
            "tokenizer_config.json). Copy them from the base model the checkpoint was fine-tuned from."
        ) from e
    if not getattr(tokenizer, "is_fast", False):
        raise ExportError(
            f"{source} has no fast (Rust) tokenizer, which the runtime needs as tokenizer.json. "
            "Convert it with transformers (AutoTokenizer.from_pretrained(..., use_fast=True).save_pretrained(DIR))."
        )
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
    except RuntimeError as e:
        if "size mismatch" not in str(e):
            raise
        detail = " ".join(line.strip() for line in str(e).splitlines() if "size mismatch" in line)
        labels = f"; config.json's id2label has {len(config.id2label)} labels" if task in _LABELLED else ""
        raise ExportError(
            f"the weights of {source} do not fit its config.json ({detail}){labels}. For a classifier, id2label "
            "and label2id must name one label per output of the head."
        ) from e
    model.eval()
    _check_finite(source, model)
    return Checkpoint(source, local, model, tokenizer, config, settings)


_LABELLED = ("text-classification", "token-classification")


def _check_labels(source: str, config: Any) -> None:
    """Labels become JSON in the manifest and text in every prediction: they must be valid Unicode."""
    for key, label in sorted(config.id2label.items()):
        try:
            str(label).encode("utf-8")
        except UnicodeEncodeError:
            raise ExportError(
                f"label {key} of {source}'s config.json is {label!r}, which is not valid text (a lone surrogate, "
                "as a broken \\ud800-style escape gives); fix id2label and label2id in config.json"
            ) from None


def _check_finite(source: str, model: Any) -> None:
    """NaN or inf weights make every output NaN and crash the quantizer: refuse them, naming the tensor."""
    import torch

    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise ExportError(
                f"{source}: weight {name} holds {bad} non-finite value(s) (NaN or inf) of {tensor.numel()}; the "
                "checkpoint is damaged or its training diverged. Export an earlier checkpoint or fix that tensor."
            )


def check_head_size(checkpoint: Checkpoint, task: str, ref: dict[str, Any]) -> None:
    """id2label must name every output of the head, or the runtime would index past the labels."""
    if task not in _LABELLED:
        return
    outputs, labels = int(ref["logits"].shape[-1]), checkpoint.config.id2label
    if sorted(int(k) for k in labels) != list(range(outputs)):
        raise ExportError(
            f"{checkpoint.source}: the classifier head has {outputs} outputs but config.json's id2label has "
            f"{len(labels)} labels ({sorted(labels)}); give id2label and label2id one label per output, "
            f"0..{outputs - 1}"
        )


def tokenizer_config(tokenizer: Any) -> TokenizerConfig:
    """What the runtime needs beyond tokenizer.json to decode and find tokens as transformers does."""
    config: dict[str, Any] = {
        "clean_up_tokenization_spaces": bool(getattr(tokenizer, "clean_up_tokenization_spaces", False))
    }
    for name in ("mask", "cls", "unk", "sep", "pad", "bos", "eos"):
        token = getattr(tokenizer, f"{name}_token", None)
        config[f"{name}_token"] = None if token is None else str(token)
        config[f"{name}_token_id"] = getattr(tokenizer, f"{name}_token_id", None)
    return cast(TokenizerConfig, config)
