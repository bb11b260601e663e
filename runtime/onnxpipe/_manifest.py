"""The model folder contract: read manifest.json, check it, and hash the files it lists.

The export stage writes the manifest with :func:`dump_manifest`, so both halves agree on one format.
Hashing ~23 MB costs ~15 ms; it runs at load by default because a truncated or tampered ONNX file
otherwise fails later with an opaque onnxruntime message (``verify=False`` skips it).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import IntegrityError, ManifestError

FORMAT_VERSION = "1.0"
MANIFEST_NAME = "manifest.json"
PRECISIONS = ("int8", "int4", "fp32", "fp16")

REEXPORT_HINT = "re-export it: onnxpipe export SOURCE --task TASK --out {folder} --force"


@dataclass(frozen=True)
class Manifest:
    """The parsed manifest of one model folder (read-only)."""

    folder: Path
    data: dict[str, Any] = field(repr=False)

    @property
    def task(self) -> str:
        return self.data["task"]

    @property
    def tasks(self) -> list[str]:
        return list(self.data.get("tasks", [self.task]))

    @property
    def labels(self) -> dict[int, str]:
        return {int(k): v for k, v in self.data.get("labels", {}).items()}

    @property
    def inputs(self) -> list[str]:
        return list(self.data["inputs"])

    @property
    def outputs(self) -> list[str]:
        return list(self.data["outputs"])

    @property
    def max_length(self) -> int:
        return int(self.data["max_length"])

    @property
    def variants(self) -> dict[str, dict[str, Any]]:
        return self.data["variants"]

    def variant_path(self, precision: str) -> Path:
        return safe_path(self.folder, self.variants[precision]["file"])

    def hint(self) -> str:
        src = self.data.get("provenance", {}).get("source", "SOURCE")
        return REEXPORT_HINT.replace("SOURCE", str(src)).replace("TASK", self.task).format(folder=self.folder)


def safe_path(folder: Path, rel: str) -> Path:
    """Resolve ``rel`` inside ``folder``; refuse absolute paths, ``..`` and symlinks that leave it."""
    if not isinstance(rel, str) or not rel or Path(rel).is_absolute() or ".." in Path(rel).parts:
        raise IntegrityError(
            f"manifest entry {rel!r} in {folder} points outside the model folder; "
            "only relative paths inside it are allowed. Re-export the folder."
        )
    path = folder / rel
    try:
        resolved = path.resolve()
    except (OSError, RuntimeError) as e:  # a symlink loop
        raise IntegrityError(f"{path} cannot be resolved ({e}). Replace it with the real file or re-export.") from e
    if not resolved.is_relative_to(folder.resolve()):
        raise IntegrityError(
            f"{path} resolves to {resolved}, outside the model folder {folder} (a symlink out?). "
            "Replace it with the real file or re-export the folder."
        )
    return path


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_manifest(folder: str | Path, verify: bool = True) -> Manifest:
    """Parse ``folder/manifest.json``; with ``verify`` also check size and sha256 of every listed file."""
    folder = Path(folder)
    path = folder / MANIFEST_NAME
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ManifestError(
            f"{path} is missing: {folder} is not an onnxpipe model folder. "
            "Create one with: onnxpipe export SOURCE --task TASK --out DIR"
        ) from None
    except (OSError, UnicodeDecodeError) as e:
        raise ManifestError(f"cannot read {path} ({e}). Re-export the folder with --force.") from e
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ManifestError(f"{path} is not valid JSON ({e}). Re-export the folder with --force.") from e
    except RecursionError:  # thousands of nested [ or {: no manifest we write nests more than a few levels
        raise ManifestError(f"{path} nests JSON too deeply to be a manifest. Re-export the folder with --force.") \
            from None
    if not isinstance(data, dict):
        raise ManifestError(f"{path} must hold a JSON object, found {type(data).__name__}. Re-export the folder.")
    version = str(data.get("format_version", ""))
    if version.split(".")[0] != FORMAT_VERSION.split(".")[0]:
        raise ManifestError(
            f"{path} has format_version {version or '(none)'!r}; this onnxpipe reads {FORMAT_VERSION.split('.')[0]}.x. "
            "Re-export the folder with this version of onnxpipe (onnxpipe export ... --force), "
            "or install the onnxpipe version that wrote it."
        )
    missing = [k for k in ("task", "inputs", "outputs", "max_length", "variants", "files") if k not in data]
    if missing:
        raise ManifestError(f"{path} lacks the keys {missing}. Re-export the folder.")
    _check_shape(path, data)
    manifest = Manifest(folder=folder, data=data)
    # Every file the runtime opens must be listed under 'files', so that verify covers it.
    for rel in [info["file"] for info in manifest.variants.values()] + [data.get("tokenizer", "tokenizer.json")]:
        if rel not in data["files"]:
            raise ManifestError(f"{path}: {rel!r} is used but not listed under 'files', so it cannot be verified. "
                                "Re-export the folder.")
    if verify:
        verify_files(manifest)
    else:  # no hashing, but still no path outside the folder and no missing file
        for rel in data["files"]:
            if not safe_path(folder, rel).is_file():
                raise IntegrityError(f"{folder / rel} is listed in the manifest but missing; {manifest.hint()}")
    return manifest


def _is_str_list(x: Any) -> bool:
    return isinstance(x, list) and all(isinstance(i, str) for i in x)


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


# key -> (check, what it must be). A hand-edited or damaged manifest fails here with the key named, instead of
# an AttributeError deep inside a pipeline.
_SHAPE = {
    "task": (lambda x: isinstance(x, str), "a string"),
    "tasks": (_is_str_list, "a list of strings"),
    # attention_mask is required: without it the runtime could not mask padding, and padded batches would
    # attend to pad tokens (answers that change with what a text is batched with).
    "inputs": (lambda x: _is_str_list(x) and {"input_ids", "attention_mask"} <= set(x),
               "a list of input names including 'input_ids' and 'attention_mask'"),
    "outputs": (lambda x: _is_str_list(x) and len(x) > 0, "a non-empty list of output names"),
    "max_length": (lambda x: _is_int(x) and x > 0, "a positive integer"),
    "pad_token_id": (_is_int, "an integer"),
    "tokenizer": (lambda x: isinstance(x, str), "a path string"),
    "variants": (lambda x: isinstance(x, dict) and len(x) > 0
                 and all(isinstance(v, dict) and isinstance(v.get("file"), str)
                         and _is_str_list(v.get("cpu_disabled_optimizers", [])) for v in x.values()),
                 "an object of precision -> {'file': path, 'cpu_disabled_optimizers': [names], ...}"),
    "files": (lambda x: isinstance(x, dict)
              and all(isinstance(v, dict) and isinstance(v.get("sha256"), str) and _is_int(v.get("size"))
                      for v in x.values()),
              "an object of path -> {'sha256': hex, 'size': bytes}"),
    # ASCII digits only: str.isdigit() accepts '¹' or '٣', which int() then rejects or reads as another index.
    "labels": (lambda x: isinstance(x, dict) and all(re.fullmatch(r"-?[0-9]+", k) and isinstance(v, str)
                                                       for k, v in x.items()),
               "an object of class index -> label string"),
}


def _check_shape(path: Path, data: dict[str, Any]) -> None:
    for key, (ok, what) in _SHAPE.items():
        if key in data and not ok(data[key]):
            raise ManifestError(
                f"{path}: {key!r} must be {what}, found {json.dumps(data[key])[:80]}. "
                "The manifest was edited or damaged; re-export the folder (onnxpipe export ... --force)."
            )


def unlisted_files(folder: Path, listed) -> list[str]:
    """Files (and symlinks) anywhere under ``folder`` that are neither listed nor the manifest itself."""
    listed = set(listed) | {MANIFEST_NAME}
    found = []
    for root, dirs, files in os.walk(folder):  # does not descend into symlinked directories...
        base = Path(root)
        for name in files + [d for d in dirs if (base / d).is_symlink()]:  # ...but reports them
            rel = (base / name).relative_to(folder).as_posix()
            if rel not in listed:
                found.append(rel)
    return sorted(found)


def verify_files(manifest: Manifest) -> None:
    for rel, info in manifest.data["files"].items():
        path = safe_path(manifest.folder, rel)
        if not path.is_file():
            raise IntegrityError(f"{path} is listed in the manifest but missing; {manifest.hint()}")
        size = path.stat().st_size
        if size != info.get("size"):
            raise IntegrityError(
                f"{path} is {size} bytes, the manifest says {info.get('size')} (truncated or replaced?); {manifest.hint()}"
            )
        if sha256_file(path) != info.get("sha256"):
            raise IntegrityError(
                f"{path} does not match its sha256 in the manifest (modified or corrupted); {manifest.hint()}. "
                "To load it anyway, pass verify=False (CLI: --no-verify)."
            )
    # An ONNX graph can name external-data files that onnxruntime opens next to it; the manifest cannot know
    # which, so verify=True accepts no file it has not hashed (the export lists every file it writes).
    extra = unlisted_files(manifest.folder, manifest.data["files"])
    if extra:
        more = f" and {len(extra) - 5} more" if len(extra) > 5 else ""
        raise IntegrityError(
            f"{manifest.folder} holds files its manifest does not list: {extra[:5]}{more}. onnxruntime may read "
            "any file in the folder (ONNX external data), so with verify=True every file must be listed and "
            f"hashed. Remove them, or {manifest.hint()}; verify=False (CLI: --no-verify) skips this check."
        )


def dump_manifest(data: dict[str, Any]) -> str:
    """Serialise a manifest: format_version first, sorted keys, 2-space indent, trailing newline."""
    ordered = {"format_version": data["format_version"], **{k: v for k, v in sorted(data.items()) if k != "format_version"}}
    body = json.dumps({k: v for k, v in ordered.items() if k != "format_version"}, indent=2, sort_keys=True)
    return '{\n  "format_version": ' + json.dumps(ordered["format_version"]) + ",\n" + body[2:] + "\n"
