"""The ORT-format copy of a variant made without the export extra, as ``onnxpipe export --ort`` makes it:
the runtime's own save_ort_format, the manifest entry, the file listed and hashed (test_ort_format, test_edge)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import onnxruntime as ort

from onnxpipe._manifest import MANIFEST_NAME, Manifest, OrtFormat, file_entry, load_manifest
from onnxpipe._session import OPTIMIZATION_LEVEL, save_ort_format


def _write(manifest: Manifest) -> None:
    (manifest.folder / MANIFEST_NAME).write_text(manifest.to_json(), encoding="utf-8")


def add_ort_copy(folder: Path, precision: str, writer: str = ort.__version__) -> Path:
    """What ``export --ort`` does to one variant, without the export extra: save the .ort, list it, hash it."""
    manifest = load_manifest(folder)
    rel = Path(manifest.variants[precision].file).with_suffix(".ort").as_posix()
    save_ort_format(manifest, precision, folder / rel)
    variant = replace(manifest.variants[precision], ort=OrtFormat(rel, writer, OPTIMIZATION_LEVEL))
    _write(
        replace(
            manifest,
            variants={**manifest.variants, precision: variant},
            files={**manifest.files, rel: file_entry(folder / rel)},
        )
    )
    return folder / rel
