"""Record the CPUs a model folder's variant was checked on into its manifest (``variants.<p>.cpus``).

The figures come from elsewhere (the emulated-CPU tier runs the folder under QEMU as an AVX2-only x86 and as
ARM64 and compares with the native answers); this module only checks their shape and writes them, replacing an
earlier entry for the same CPU, through the runtime's typed contract and an atomic rename, so a bad call never
leaves a half-written manifest.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from onnxpipe._for_export import FORMAT_VERSION, MANIFEST_NAME, Manifest
from onnxpipe.errors import ExportError

REQUIRED: dict[str, type | tuple[type, ...]] = {
    "cpu": str,
    "n": int,
    "flips": int,
    "max_abs_dp": (int, float),
    "p99_abs_dp": (int, float),
}


def _checked(entry: Any) -> dict[str, Any]:
    if not isinstance(entry, dict):
        raise ExportError(f"a CPU figure must be an object with {', '.join(REQUIRED)}; got {entry!r}")
    for key, kind in REQUIRED.items():
        value = entry.get(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise ExportError(
                f"CPU figure {entry.get('cpu', entry)!r}: {key!r} must be {getattr(kind, '__name__', 'a number')}, "
                f"got {value!r} (each entry: cpu name, n texts compared, label flips, max and p99 |dP|)"
            )
    return dict(entry)


def record_cpu_figures(folder: str | Path, figures: list[dict[str, Any]], precision: str = "int8") -> Path:
    """Add ``figures`` (``[{"cpu", "n", "flips", "max_abs_dp", "p99_abs_dp", ...}]``: one per CPU, each against
    the exporting machine's answers; more keys are kept) to ``precision``'s variant in ``folder``'s manifest.
    An entry for a CPU already recorded replaces it. Returns the manifest's path."""
    folder = Path(folder)
    path = folder / MANIFEST_NAME
    if not path.is_file():
        raise ExportError(f"{folder} has no {MANIFEST_NAME}: not an onnxpipe model folder")
    manifest = Manifest.from_json(path.read_text(encoding="utf-8"), folder)
    if precision not in manifest.variants:
        raise ExportError(f"{folder} has no {precision!r} variant; it has {', '.join(manifest.variants)}")
    new = [_checked(e) for e in figures]
    names = {e["cpu"] for e in new}
    variant = manifest.variants[precision]
    cpus = [c for c in variant.cpus or [] if c.get("cpu") not in names] + new
    manifest = replace(
        manifest,
        format_version=max(manifest.format_version, FORMAT_VERSION, key=lambda v: tuple(map(int, v.split(".")))),
        variants={**manifest.variants, precision: replace(variant, cpus=cpus)},
    )
    text = manifest.to_json()
    Manifest.from_json(text, folder)  # the runtime's checks before anything is written
    tmp = path.with_name(f".{MANIFEST_NAME}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path
