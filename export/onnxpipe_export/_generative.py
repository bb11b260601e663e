"""What the two generative exports (_decoder: causal LMs, _seq2seq: encoder-decoders) write alike once their
graphs are in the staging folder: the tokenizer and config files, then the manifest, validation and the atomic
move into place."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from onnxpipe._for_export import FORMAT_VERSION, Manifest, Variant

from ._output import Target, fsync_tree, place


def save_tokenizer_and_configs(ckpt: Any, folder: Path, max_length: int) -> None:
    """tokenizer.json with no padding and no truncation (the runtime pads its own batches, and checks, cuts or
    refuses a long input itself), config.json and generation_config.json; and the tokenizer_config.json and
    special_tokens_map.json without which transformers.js cannot load the folder's tokenizer."""
    from ._ecosystem import write_tokenizer_files

    write_tokenizer_files(ckpt, folder, max_length)
    backend = ckpt.tokenizer.backend_tokenizer
    backend.no_padding()
    backend.no_truncation()
    backend.save(str(folder / "tokenizer.json"))
    ckpt.config.save_pretrained(folder)
    ckpt.model.generation_config.save_pretrained(folder)


def write_and_place(
    ckpt: Any,
    tmp: Path,
    target: Target,
    *,
    task: str,
    graph: Path,
    hidden_size: int,
    max_length: int,
    generation: dict[str, Any],
    variants: dict[str, Variant],
    revision: str | None,
    validate: Callable[[Manifest, str], dict[str, Any]],
    precisions: list[str],
) -> Manifest:
    """The manifest of the staged folder ``tmp`` (inputs and outputs read from ``graph``), validated and written
    by ``validate_and_write``, then ``tmp`` moved to ``target`` durably; returns the manifest."""
    import onnx

    from ._assemble import _provenance, validate_and_write
    from ._load import tokenizer_config  # transformers: loaded only where an export runs

    g = onnx.load(str(graph), load_external_data=False).graph
    manifest = Manifest(
        folder=tmp,
        format_version=FORMAT_VERSION,
        task=task,
        tasks=[task],
        architecture=ckpt.config.model_type,
        inputs=[i.name for i in g.input],
        outputs=[o.name for o in g.output],
        tokenizer_config=tokenizer_config(ckpt.tokenizer),
        hidden_size=hidden_size,
        max_length=max_length,
        pad_token_id=generation["pad_token_id"],
        tokenizer="tokenizer.json",
        generation=generation,
        variants=variants,
        provenance=_provenance(ckpt, revision),
    )
    manifest = validate_and_write(manifest, validate, precisions)
    fsync_tree(tmp)
    place(tmp, target)
    fsync_tree(target.path.parent, recursive=False)
    return manifest


def exported_line(source: Any, task: str, manifest: Manifest) -> str:
    """The line an export prints when it is done: each variant's validation summary."""
    figures = ", ".join(f"{p}: {(v.validation or {}).get('summary')}" for p, v in manifest.variants.items())
    return f"exported {source} for {task} ({figures})"
