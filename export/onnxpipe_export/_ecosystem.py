"""The files other consumers of a model folder read: transformers.js, Optimum, fastembed, sentence-transformers.

The runtime needs only manifest.json, tokenizer.json and the ONNX files; the rest of the ecosystem loads a folder
the way transformers saves one, and fails without these:

- ``tokenizer_config.json`` (transformers.js: "this.tokenizer is not a function"; fastembed: "Could not find
  tokenizer_config.json"), with ``model_max_length`` = the manifest's ``max_length``: transformers.js, Optimum
  and fastembed truncate at ``model_max_length`` and do not read the truncation in tokenizer.json;
- ``special_tokens_map.json`` (pad token for batching in transformers.js and fastembed);
- for a sentence-transformers source, ``modules.json``, ``sentence_bert_config.json``, the pooling config and
  the Normalize module, so sentence-transformers' ONNX backend builds Transformer + Pooling + Normalize
  rather than Transformer + mean Pooling (unnormalised vectors).

``config.json`` (with ``id2label`` / ``label2id``) is written by ``config.save_pretrained`` in the recipe.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from onnxpipe.errors import ExportError

# Keys of a saved tokenizer_config.json that are call-time arguments some checkpoints carry by accident (the
# minilm-sst2 one has "max_length": 128 from a tokenizer(..., max_length=128) call saved with it). Consumers may
# read them as settings; the folder's truncation is model_max_length alone.
_CALL_TIME_KEYS = ("max_length", "stride", "truncation_strategy", "pad_to_multiple_of")
ST_FILES = ("modules.json", "sentence_bert_config.json")


def source_file(ckpt: Any, name: str) -> Path | None:
    """``name`` from the checkpoint (local folder, or the hub repository); None when it has no such file."""
    if ckpt.local is not None:
        path = ckpt.local / name
        return path if path.is_file() else None
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    try:
        return Path(hf_hub_download(ckpt.source, name, revision=getattr(ckpt.config, "_commit_hash", None)))
    except EntryNotFoundError:
        return None
    except Exception as e:  # network, auth, offline without the file in the cache
        raise ExportError(f"cannot fetch {name} of {ckpt.source}: {e}. Export from a local folder instead.") from e


def sentence_transformers_modules(ckpt: Any) -> list[dict[str, Any]] | None:
    path = source_file(ckpt, "modules.json")
    if path is None:
        return None
    bad = ExportError(
        f"{path} is not a sentence-transformers modules.json (a list of {{type, path}} objects); fix or delete it"
    )
    try:
        modules = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise bad from e
    if not (isinstance(modules, list) and all(isinstance(m, dict) and "type" in m for m in modules)):
        raise bad
    return modules


def max_seq_length(ckpt: Any) -> int | None:
    """sentence-transformers' truncation (sentence_bert_config.json ``max_seq_length``), when the source has one."""
    path = source_file(ckpt, "sentence_bert_config.json")
    if path is None:
        return None
    value = json.loads(path.read_text(encoding="utf-8")).get("max_seq_length")
    if value is None:
        return None
    if not isinstance(value, int) or value < 2:
        raise ExportError(f"{path}: max_seq_length {value!r} is not an integer >= 2; fix the file or remove the key")
    return value


def write_tokenizer_files(ckpt: Any, folder: Path, max_length: int) -> None:
    """tokenizer_config.json and special_tokens_map.json (see the module docstring); every task's folder."""
    # save_pretrained writes the checkpoint's own settings in the layout every consumer reads; only its
    # tokenizer_config.json and special_tokens_map.json are kept (tokenizer.json is the recipe's, with truncation).
    with tempfile.TemporaryDirectory() as tmp:
        ckpt.tokenizer.save_pretrained(tmp)
        config = json.loads((Path(tmp) / "tokenizer_config.json").read_text(encoding="utf-8"))
        special = Path(tmp) / "special_tokens_map.json"
        special_map = json.loads(special.read_text(encoding="utf-8")) if special.is_file() else {}
    for key in _CALL_TIME_KEYS:
        config.pop(key, None)
    config["model_max_length"] = max_length
    config["clean_up_tokenization_spaces"] = bool(getattr(ckpt.tokenizer, "clean_up_tokenization_spaces", False))
    config.pop("name_or_path", None)  # a path on the exporting machine
    for name in ("pad", "cls", "sep", "unk", "mask", "bos", "eos"):
        token = getattr(ckpt.tokenizer, f"{name}_token", None)
        if token is not None:
            config.setdefault(f"{name}_token", str(token))
            special_map.setdefault(f"{name}_token", str(token))
    _write(folder / "tokenizer_config.json", config)
    _write(folder / "special_tokens_map.json", special_map)


def _sentence_transformers_files(ckpt: Any, folder: Path, modules: list[dict[str, Any]], max_length: int) -> None:
    # Only the modules the runtime reproduces are written (Transformer, Pooling, Normalize): a folder that
    # declared a Dense layer would give other vectors in sentence-transformers than in onnxpipe.
    kinds = [m["type"].rsplit(".", 1)[-1] for m in modules]
    unknown = sorted(set(kinds) - {"Transformer", "Pooling", "Normalize"})
    if unknown:
        raise ExportError(
            f"{ckpt.source} has sentence-transformers modules {unknown} that onnxpipe does not run "
            "(it runs Transformer, Pooling, Normalize); export it as plain feature-extraction by "
            "removing modules.json from a copy of the checkpoint, knowing the vectors will differ"
        )
    out = []
    for module, kind in zip(modules, kinds):
        entry = {k: module[k] for k in ("idx", "name", "path", "type") if k in module}
        if kind == "Transformer":
            entry["path"] = ""  # the folder itself: config.json, tokenizer files, sentence_bert_config.json
        elif kind == "Pooling":
            cfg = source_file(ckpt, f"{module['path']}/config.json")
            if cfg is None:
                raise ExportError(f"{ckpt.source}: modules.json names {module['path']}/config.json, which is missing")
            _write(folder / module["path"] / "config.json", json.loads(cfg.read_text(encoding="utf-8")))
        out.append(entry)
    _write(folder / "modules.json", out)
    src = source_file(ckpt, "sentence_bert_config.json")
    st_cfg = json.loads(src.read_text(encoding="utf-8")) if src is not None else {}
    st_cfg["max_seq_length"] = max_length  # what the manifest and tokenizer.json truncate at
    _write(folder / "sentence_bert_config.json", st_cfg)
    extra = source_file(ckpt, "config_sentence_transformers.json")  # similarity function, prompts
    if extra is not None:
        _write(folder / "config_sentence_transformers.json", json.loads(extra.read_text(encoding="utf-8")))


def write_ecosystem_files(ckpt: Any, folder: Path, max_length: int) -> None:
    """Write the tokenizer and sentence-transformers files other consumers read (see the module docstring)."""
    write_tokenizer_files(ckpt, folder, max_length)
    modules = sentence_transformers_modules(ckpt)
    if modules is not None:
        _sentence_transformers_files(ckpt, folder, modules, max_length)


def _write(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
