"""Build the folder's typed Manifest (onnxpipe._manifest, the contract the runtime reads) and write it.

``draft_manifest`` describes the folder as soon as its graphs, tokenizer and config are written, so the
runtime's own code can load it for validation; ``finish_manifest`` drops intermediate variants and hashes
every file; ``write_manifest`` writes through ``Manifest.to_json`` and reads the text back through
``Manifest.from_json``, so an export cannot write a manifest the runtime would refuse.
"""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Callable
from dataclasses import replace
from importlib import metadata
from pathlib import Path
from typing import Any

from onnxpipe._for_export import (
    FORMAT_VERSION,
    GRAPHS,
    MANIFEST_NAME,
    Manifest,
    Pooling,
    Variant,
    file_entry,
    sha256_file,
)

from ._registry import HEADS
from ._variants import VARIANT_FILES


def draft_manifest(
    ckpt: Any,
    task: str,
    tasks: list[str],
    folder: Path,
    variants: dict[str, Variant],
    max_length: int,
    revision: str | None,
) -> Manifest:
    """The manifest of ``folder`` before validation: no figures yet, no files listed."""
    from ._load import tokenizer_config

    cfg = ckpt.config
    labelled = bool(GRAPHS[task].labels)
    return Manifest(
        folder=folder,
        format_version=FORMAT_VERSION,
        task=task,
        tasks=tasks,
        architecture=cfg.model_type,
        inputs=_graph_inputs(folder / VARIANT_FILES["fp32"]),
        outputs=[*HEADS[task]["outputs"], "last_hidden_state"],
        tokenizer_config=tokenizer_config(ckpt.tokenizer),
        hidden_size=int(getattr(cfg, "hidden_size", None) or cfg.dim),
        max_length=max_length,
        pad_token_id=int(ckpt.tokenizer.pad_token_id or 0),
        tokenizer="tokenizer.json",
        variants=variants,
        provenance=_provenance(ckpt, revision),
        labels={int(k): v for k, v in sorted(cfg.id2label.items())} if labelled else {},
        problem_type=(cfg.problem_type or "single_label_classification") if task == "text-classification" else None,
        pooling=None if labelled else _pooling(ckpt),
    )


def finish_manifest(manifest: Manifest, precisions: list[str]) -> Manifest:
    """Delete the variants made only as intermediates (fp32, to quantize from), keeping their figures under
    ``intermediate_validation``, and list every file left in the folder with its size and sha256."""
    folder = manifest.folder
    kept = {p: v for p, v in manifest.variants.items() if p in precisions}
    intermediate = {}
    for p, v in manifest.variants.items():
        if p not in precisions:
            (folder / v.file).unlink()
            intermediate[p] = v.validation or {}
    files = {
        path.relative_to(folder).as_posix(): file_entry(path) for path in sorted(folder.rglob("*")) if path.is_file()
    }
    return replace(manifest, variants=kept, files=files, intermediate_validation=intermediate or None)


def validate_and_write(
    manifest: Manifest, validate: Callable[[Manifest, str], dict[str, Any]], precisions: list[str]
) -> Manifest:
    """The last steps of the decoder and encoder-decoder exports: each variant's validation figures into its
    entry, the intermediate variants dropped (``finish_manifest``), and manifest.json written."""
    validated = {p: replace(v, validation=validate(manifest, p)) for p, v in manifest.variants.items()}
    manifest = finish_manifest(replace(manifest, variants=validated), precisions)
    write_manifest(manifest)
    return manifest


def write_manifest(manifest: Manifest) -> None:
    text = manifest.to_json()
    Manifest.from_json(text, manifest.folder)  # the runtime's checks: a ManifestError here is an export bug
    (manifest.folder / MANIFEST_NAME).write_text(text, encoding="utf-8")


def _pooling(ckpt: Any) -> Pooling:
    """Pooling as sentence-transformers configures it (modules.json), else mean + L2 normalisation."""
    if ckpt.local is not None and (ckpt.local / "modules.json").is_file():
        modules = json.loads((ckpt.local / "modules.json").read_text())
        mode, normalize = "mean", False
        for m in modules:
            if m.get("type", "").endswith("Pooling"):
                cfg = json.loads((ckpt.local / m["path"] / "config.json").read_text())
                for name in ("cls", "mean", "max"):
                    if cfg.get(f"pooling_mode_{name}_token" if name == "cls" else f"pooling_mode_{name}_tokens"):
                        mode = name
            if m.get("type", "").endswith("Normalize"):
                normalize = True
        return Pooling(mode, normalize, source="sentence-transformers modules.json")
    return Pooling("mean", True, source="default")


def _versions() -> dict[str, str]:
    out = {}
    for pkg in ("onnxpipe", "torch", "transformers", "optimum-onnx", "onnx", "onnxruntime", "tokenizers"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def _provenance(ckpt: Any, revision: str | None) -> dict[str, Any]:
    # The source as a reader elsewhere can name it: a hub id as given, a local checkpoint by its folder's name.
    # The exporting machine's path (its user name, its layout) would travel with every copy of the folder.
    source = ckpt.source if ckpt.local is None else Path(ckpt.local).resolve().name
    prov: dict[str, Any] = {
        "source": source,
        "tools": _versions(),
        "exported_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    if ckpt.local is not None:
        prov["source_kind"] = "local folder"
        weights = sorted(ckpt.local.glob("*.safetensors")) or sorted(ckpt.local.glob("*.bin"))
        prov["weights_sha256"] = {w.name: sha256_file(w) for w in weights}
    else:
        prov["source_kind"] = "hub"
        prov["revision"] = getattr(ckpt.config, "_commit_hash", None) or revision or "main"
    return prov


def _graph_inputs(path: Path) -> list[str]:
    import onnx

    names = {i.name for i in onnx.load(str(path), load_external_data=False).graph.input}
    return [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in names]
