"""A model folder cut down to some of its variants, as an export of just those precisions writes it.

The tests ask for the same tiny model with several precision lists (``int8,fp32``, ``fp32``, ``fp16,fp32``);
exporting it once with their union and cutting copies from that folder gives the same files byte for byte (the
export is deterministic, and each variant is made from the same fused fp32 graph), so conftest's ``tiny_export``
exports each (architecture, task) once. tests/test_tiny_exports.py checks a cut against a real export.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

from onnxpipe._manifest import MANIFEST_NAME, Manifest

# The precisions each tiny (architecture, task) is exported with, once per session: "int8,fp32" for encoders and
# "fp32" for decoders, plus the extras some tests ask for. A request within that union gets a copy cut down to
# its precisions (cut_variants: the files an export of just those writes, byte for byte); any other
# request is exported on its own. Add a line here when a test asks a model for another precision.
TINY_EXPORT_EXTRAS: dict[tuple[str, str], tuple[str, ...]] = {
    ("bert", "text-classification"): ("int8-exact", "fp16"),
    ("llama", "text-generation"): ("int4", "int8"),
    ("gpt2", "text-generation"): ("int4",),
    # The encoder-decoder int8 path is architecture-independent (one quantizer, one merge, one validation loop):
    # T5 alone carries it, which saves BART's and Marian's slowest exports.
    ("t5", "text2text-generation"): ("int8",),
}


def tiny_export_precisions(arch: str, head: str) -> list[str]:
    """The precisions ``tiny_export`` exports (arch, head) with: the union of what the tests ask for."""
    base = ["fp32"] if head in ("text-generation", "text2text-generation") else ["int8", "fp32"]
    return base + list(TINY_EXPORT_EXTRAS.get((arch, head), ()))


def cut_variants(folder: Path, precisions: list[str], out: Path) -> Path:
    """Copy ``folder`` to ``out`` with only the variants in ``precisions`` (which must include fp32): the other
    variants' files are left out, and the manifest lists only what stays."""
    if "fp32" not in precisions:
        # without fp32 an export records fp32's figures under intermediate_validation; a cut would not
        raise ValueError(f"a cut keeps fp32 (asked for {precisions}); export such a folder on its own")
    manifest = Manifest.from_json((folder / MANIFEST_NAME).read_text(encoding="utf-8"), folder)
    missing = [p for p in precisions if p not in manifest.variants]
    if missing:
        raise ValueError(f"{folder} has no {missing} variant(s) to keep; it has {sorted(manifest.variants)}")
    if any(v.ort for v in manifest.variants.values()):
        raise ValueError(f"{folder} has ORT-format files, which a cut does not handle; export it on its own")
    dropped = {v.file for p, v in manifest.variants.items() if p not in precisions}
    shutil.copytree(
        folder,
        out,
        ignore=lambda d, names: [n for n in names if (Path(d) / n).relative_to(folder).as_posix() in dropped],
    )
    cut = replace(
        manifest,
        folder=out,
        variants={p: v for p, v in manifest.variants.items() if p in precisions},
        files={name: entry for name, entry in manifest.files.items() if name not in dropped},
    )
    (out / MANIFEST_NAME).write_text(cut.to_json(), encoding="utf-8")
    return out
