"""The model folder contract: the typed manifest both halves share, its one JSON format, and the file checks.

The export stage builds a :class:`Manifest` and writes it with :meth:`Manifest.to_json`; the runtime reads it
with :func:`load_manifest` (:meth:`Manifest.from_json` plus the file checks). One schema, one
``FORMAT_VERSION``; docs/model-folder.md documents every key. Hashing ~23 MB costs ~15 ms; it runs at load by
default because a truncated or tampered ONNX file otherwise fails later with an opaque onnxruntime message
(``verify=False`` skips it).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, TypedDict, cast

from .errors import IntegrityError, ManifestError

# 1.0: the first format. A new optional key is a minor bump (older runtimes ignore it, as unknown keys are
# kept); a new required key or a changed meaning is a major bump, which this runtime refuses with a re-export hint.
# 1.1: variants.*.ort (the ORT-format copy of a variant, onnxpipe export --ort) and vocab_pruning (--prune-vocab).
# 1.2: variants.*.cpus (the CPUs a variant was checked on, with agreement figures) and variants.*.cpu_exact.
# 1.3: variants.*.decoder (an encoder-decoder folder: the variant's decoder graph beside its encoder file) and
# the generation entry's encoder-decoder keys (decoder_start_token_id, decoder_inputs, task_params, prefix).
FORMAT_VERSION = "1.3"
MANIFEST_NAME = "manifest.json"
PRECISIONS = ("int8", "int8-exact", "int4", "fp32", "fp16")

REEXPORT_HINT = "re-export it: onnxpipe export SOURCE --task TASK --out {folder} --force"

#: A free-form measurement record (validation figures, a recipe, provenance): typed at the top, open inside,
#: because its keys grow with what the export measures and only people (``onnxpipe info``) read them.
Figures = dict[str, Any]


class TokenizerConfig(TypedDict, total=False):
    """What the runtime needs beyond tokenizer.json to decode and find tokens as transformers does.
    A token the checkpoint's tokenizer does not define is ``None``."""

    clean_up_tokenization_spaces: bool
    cls_token: str | None
    cls_token_id: int | None
    sep_token: str | None
    sep_token_id: int | None
    mask_token: str | None
    mask_token_id: int | None
    unk_token: str | None
    unk_token_id: int | None
    pad_token: str | None
    pad_token_id: int | None
    bos_token: str | None
    bos_token_id: int | None
    eos_token: str | None
    eos_token_id: int | None


@dataclass(frozen=True)
class Pooling:
    """How sentence-embeddings pools ``last_hidden_state``: ``mode`` cls | mean | max, then L2 ``normalize``."""

    mode: str = "mean"
    normalize: bool = True
    source: str | None = None  # where the export found it: "sentence-transformers modules.json" or "default"
    extra: dict[str, Any] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class FileEntry:
    """Size and sha256 of one file in the folder, checked at load with ``verify=True``."""

    sha256: str
    size: int
    extra: dict[str, Any] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class OrtFormat:
    """A variant's copy in onnxruntime's ORT format (flatbuffers, what minimal and mobile builds load), saved
    after the graph optimizations the runtime applies at load, so both files compute the same."""

    file: str
    onnxruntime: str  # the version that wrote it: ORT format is read by that version and later ones only
    optimization_level: str  # the level it was saved at: the runtime's own ("extended")
    required_operators: str | None = None  # the operator config a minimal build of it needs (--include_ops_by_config)
    extra: dict[str, Any] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class Variant:
    """One precision's ONNX file and what is known about it."""

    file: str
    # onnxruntime graph optimizers the CPU session must leave off (an int8 recipe that measured faster so).
    cpu_disabled_optimizers: tuple[str, ...] = ()
    fused_operators: dict[str, int] | None = None  # fusion counts; absent where onnxruntime fuses at load
    note: str | None = None
    recipe: Figures | None = None  # the int8 recipe that made the file
    recipe_search: Figures | None = None  # every candidate's figures, with --int8-recipe search
    validation: Figures | None = None  # the figures against PyTorch, or {"skipped": why}
    ort: OrtFormat | None = None  # with onnxpipe export --ort
    # the CPUs this file was checked on, each {"cpu", "n", "flips", "max_abs_dp", "p99_abs_dp"} against the
    # exporting machine's answers (onnxpipe_export.record_cpu_figures writes them)
    cpus: list[Figures] | None = None
    cpu_exact: bool | None = None  # True: only float kernels run, so every CPU computes the same to ~1e-6
    # An encoder-decoder folder: ``file`` is the encoder, this its decoder graph (with past key values).
    decoder: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class Manifest:
    """The parsed manifest of one model folder (read-only: build a changed copy with ``dataclasses.replace``).

    Every key either half reads is a typed field; keys this version does not know are kept in ``extra`` and
    written back unchanged, so a folder from a later 1.x export survives a read and re-write.
    """

    folder: Path  # where the folder is; not serialised (a folder can be moved)
    task: str
    inputs: list[str]
    outputs: list[str]
    max_length: int
    variants: dict[str, Variant]
    files: dict[str, FileEntry] = field(default_factory=dict)
    format_version: str = FORMAT_VERSION
    tasks: list[str] = field(default_factory=list)  # empty: just ``task``
    architecture: str | None = None
    hidden_size: int | None = None
    labels: dict[int, str] = field(default_factory=dict)
    problem_type: str | None = None
    pad_token_id: int = 0
    tokenizer: str = "tokenizer.json"
    tokenizer_config: TokenizerConfig | None = None
    pooling: Pooling | None = None
    provenance: Figures | None = None
    validation_data: Figures | None = None
    intermediate_validation: dict[str, Figures] | None = None
    # text-generation folders: eos/pad/bos ids, the decoder's shape, generation_config, chat template file
    # (read by _pipelines/text_generation.generation_info, which checks its shape).
    generation: Figures | None = None
    # --prune-vocab: the corpus (path, sha256), vocabulary size before / after, what was kept and the alphabet
    # a word outside the corpus must be spelled with to avoid unk_token (export/onnxpipe_export/_prune.py).
    vocab_pruning: Figures | None = None
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if not self.tasks:  # a folder that predates 'tasks' serves its one task
            object.__setattr__(self, "tasks", [self.task])

    def variant_path(self, precision: str, format: str = "onnx") -> Path:
        """The file of ``precision`` in ``format`` ("onnx", or "ort" where the variant has an ORT-format copy)."""
        v = self.variants[precision]
        if format == "ort" and v.ort is not None:
            return safe_path(self.folder, v.ort.file)
        if format != "onnx":
            raise ValueError(f"{self.folder}: the {precision} variant has no {format!r} file")
        return safe_path(self.folder, v.file)

    def decoder_view(self) -> Manifest:
        """This folder as seen by its decoder graph (an encoder-decoder folder): every variant's file is its
        ``decoder``, the inputs and outputs are the decoder's (``generation.decoder_inputs`` / ``_outputs``), so
        the one session factory and load-time graph check serve the decoder as they serve any graph."""
        g = self.generation or {}
        if not all(v.decoder for v in self.variants.values()) or not g.get("decoder_inputs"):
            raise ManifestError(
                f"{self.folder}/manifest.json describes no decoder graph (variants.*.decoder, "
                f"generation.decoder_inputs); it is not an encoder-decoder folder. {self.hint()}"
            )
        variants = {p: replace(v, file=str(v.decoder), ort=None, decoder=None) for p, v in self.variants.items()}
        return replace(
            self,
            variants=variants,
            inputs=list(g["decoder_inputs"]),
            outputs=list(g.get("decoder_outputs") or ["logits"]),
        )

    def hint(self) -> str:
        src = (self.provenance or {}).get("source", "SOURCE")
        return REEXPORT_HINT.replace("SOURCE", str(src)).replace("TASK", self.task).format(folder=self.folder)

    @classmethod
    def from_json(cls, source: str | dict[str, Any], folder: str | Path) -> Manifest:
        """Parse and check a manifest (its text, or the object it decodes to) of the folder ``folder``.

        Raises ManifestError naming the key and the fix for: text that is not a JSON object, another major
        ``format_version``, a missing required key, a key of the wrong shape, and a file the runtime opens
        that ``files`` does not list. Nothing on disk is read.

        Example:
            >>> Manifest.from_json(Path("models/minilm-sst2/manifest.json").read_text(), "models/minilm-sst2").task
            'text-classification'
        """
        folder = Path(folder)
        path = folder / MANIFEST_NAME
        data = _decode(source, path) if isinstance(source, str) else source
        if not isinstance(data, dict):
            raise ManifestError(f"{path} must hold a JSON object, found {type(data).__name__}. Re-export the folder.")
        version = str(data.get("format_version", ""))
        if version.split(".")[0] != FORMAT_VERSION.split(".")[0]:
            raise ManifestError(
                f"{path} has format_version {version or '(none)'!r}; this onnxpipe reads "
                f"{FORMAT_VERSION.split('.')[0]}.x. Re-export the folder with this version of onnxpipe "
                "(onnxpipe export ... --force), or install the onnxpipe version that wrote it."
            )
        missing = [k for k in _REQUIRED if k not in data]
        if missing:
            raise ManifestError(f"{path} lacks the keys {missing}. Re-export the folder.")
        _check_shape(path, data)
        manifest = cls(
            folder=folder,
            format_version=version,
            task=data["task"],
            tasks=list(data.get("tasks", [])),
            inputs=list(data["inputs"]),
            outputs=list(data["outputs"]),
            max_length=data["max_length"],
            variants={p: _variant(v) for p, v in data["variants"].items()},
            files={rel: FileEntry(**_split(FileEntry, info)) for rel, info in data["files"].items()},
            architecture=data.get("architecture"),
            hidden_size=data.get("hidden_size"),
            labels={int(k): v for k, v in data.get("labels", {}).items()},
            problem_type=data.get("problem_type"),
            pad_token_id=data.get("pad_token_id", 0),
            tokenizer=data.get("tokenizer", "tokenizer.json"),
            tokenizer_config=cast(TokenizerConfig, dict(data["tokenizer_config"]))
            if data.get("tokenizer_config") is not None
            else None,
            pooling=Pooling(**_split(Pooling, data["pooling"])) if data.get("pooling") is not None else None,
            provenance=data.get("provenance"),
            validation_data=data.get("validation_data"),
            intermediate_validation=data.get("intermediate_validation"),
            generation=data.get("generation"),
            vocab_pruning=data.get("vocab_pruning"),
            extra={k: v for k, v in data.items() if k not in _KNOWN},
        )
        # Every file the runtime opens must be listed under 'files', so that verify covers it.
        variants = manifest.variants.values()
        opened = [v.file for v in variants] + [v.ort.file for v in variants if v.ort is not None]
        opened += [v.decoder for v in variants if v.decoder is not None]
        for rel in opened + [manifest.tokenizer]:
            if rel not in manifest.files:
                raise ManifestError(
                    f"{path}: {rel!r} is used but not listed under 'files', so it cannot be "
                    "verified. Re-export the folder."
                )
        return manifest

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of this manifest (optional keys that are unset are left out)."""
        optional: dict[str, Any] = {
            "architecture": self.architecture,
            "hidden_size": self.hidden_size,
            "labels": {str(k): v for k, v in sorted(self.labels.items())} or None,
            "problem_type": self.problem_type,
            "tokenizer_config": None if self.tokenizer_config is None else dict(self.tokenizer_config),
            "pooling": None
            if self.pooling is None
            else _with_extra(
                self.pooling,
                {"mode": self.pooling.mode, "normalize": self.pooling.normalize, "source": self.pooling.source},
            ),
            "provenance": self.provenance,
            "validation_data": self.validation_data,
            "intermediate_validation": self.intermediate_validation,
            "generation": self.generation,
            "vocab_pruning": self.vocab_pruning,
        }
        return {
            **self.extra,
            "format_version": self.format_version,
            "task": self.task,
            "tasks": list(self.tasks),
            "inputs": list(self.inputs),
            "outputs": list(self.outputs),
            "max_length": self.max_length,
            "pad_token_id": self.pad_token_id,
            "tokenizer": self.tokenizer,
            "variants": {p: _variant_dict(v) for p, v in self.variants.items()},
            "files": {rel: _with_extra(f, {"sha256": f.sha256, "size": f.size}) for rel, f in self.files.items()},
            **{k: v for k, v in optional.items() if v is not None},
        }

    def to_json(self) -> str:
        """The manifest.json text: format_version first, keys sorted, 2-space indent, trailing newline, so
        that two exports diff line by line."""
        data = self.to_dict()
        body = json.dumps({k: v for k, v in data.items() if k != "format_version"}, indent=2, sort_keys=True)
        return '{\n  "format_version": ' + json.dumps(self.format_version) + ",\n" + body[2:] + "\n"


def _decode(text: str, path: Path) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ManifestError(f"{path} is not valid JSON ({e}). Re-export the folder with --force.") from e
    except RecursionError:  # thousands of nested [ or {: no manifest we write nests more than a few levels
        raise ManifestError(
            f"{path} nests JSON too deeply to be a manifest. Re-export the folder with --force."
        ) from None


def _split(cls: type[Variant | Pooling | FileEntry | OrtFormat], data: dict[str, Any]) -> dict[str, Any]:
    """``data`` as keyword arguments of the dataclass ``cls``: its fields, and the rest under ``extra``."""
    names = {f.name for f in fields(cls) if f.name != "extra"}
    return {**{k: v for k, v in data.items() if k in names}, "extra": {k: v for k, v in data.items() if k not in names}}


def _variant(data: dict[str, Any]) -> Variant:
    kwargs = _split(Variant, data)
    kwargs["cpu_disabled_optimizers"] = tuple(kwargs.get("cpu_disabled_optimizers", ()))
    if kwargs.get("ort") is not None:
        kwargs["ort"] = OrtFormat(**_split(OrtFormat, kwargs["ort"]))
    return Variant(**kwargs)


def _variant_dict(v: Variant) -> dict[str, Any]:
    optional = {
        "fused_operators": v.fused_operators,
        "note": v.note,
        "recipe": v.recipe,
        "recipe_search": v.recipe_search,
        "validation": v.validation,
        "cpus": v.cpus,
        "cpu_exact": v.cpu_exact,
        "cpu_disabled_optimizers": list(v.cpu_disabled_optimizers) or None,
        "decoder": v.decoder,
        "ort": None
        if v.ort is None
        else _with_extra(
            v.ort,
            {
                "file": v.ort.file,
                "onnxruntime": v.ort.onnxruntime,
                "optimization_level": v.ort.optimization_level,
                "required_operators": v.ort.required_operators,
            },
        ),
    }
    return _with_extra(v, {"file": v.file, **{k: x for k, x in optional.items() if x is not None}})


def _with_extra(obj: Variant | Pooling | FileEntry | OrtFormat, known: dict[str, Any]) -> dict[str, Any]:
    return {**obj.extra, **{k: v for k, v in known.items() if v is not None}}


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


def file_entry(path: Path) -> FileEntry:
    """The ``files`` entry of the file at ``path`` as it is now."""
    return FileEntry(sha256=sha256_file(path), size=path.stat().st_size)


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
    manifest = Manifest.from_json(text, folder)
    if verify:
        verify_files(manifest)
    else:  # no hashing, but still no path outside the folder and no missing file
        for rel in manifest.files:
            if not safe_path(folder, rel).is_file():
                raise IntegrityError(f"{folder / rel} is listed in the manifest but missing; {manifest.hint()}")
    return manifest


def _is_str_list(x: Any) -> bool:
    return isinstance(x, list) and all(isinstance(i, str) for i in x)


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_object(x: Any, *, of: Callable[[Any], bool] = lambda _: True) -> bool:
    return isinstance(x, dict) and all(isinstance(k, str) and of(v) for k, v in x.items())


def _is_variant(v: Any) -> bool:
    return (
        isinstance(v, dict)
        and isinstance(v.get("file"), str)
        and _is_str_list(v.get("cpu_disabled_optimizers", []))
        and _is_object(v.get("fused_operators", {}), of=_is_int)
        and isinstance(v.get("note", ""), str)
        and all(_is_object(v.get(k, {})) for k in ("recipe", "recipe_search", "validation"))
        and _is_ort_format(v.get("ort"))
        and isinstance(v.get("cpus", []), list)
        and all(_is_object(c) and isinstance(c.get("cpu"), str) for c in v.get("cpus", []))
        and isinstance(v.get("cpu_exact", False), bool)
        and isinstance(v.get("decoder", ""), str)
    )


def _is_ort_format(x: Any) -> bool:
    if x is None:
        return True
    return (
        _is_object(x)
        and all(isinstance(x.get(k), str) for k in ("file", "onnxruntime", "optimization_level"))
        and isinstance(x.get("required_operators", ""), str)
    )


def _is_tokenizer_config(x: Any) -> bool:
    if not _is_object(x) or not isinstance(x.get("clean_up_tokenization_spaces", False), bool):
        return False
    return all(
        (_is_int(v) if k.endswith("_id") else isinstance(v, str))
        for k, v in x.items()
        if k != "clean_up_tokenization_spaces" and v is not None
    )


_REQUIRED = ("task", "inputs", "outputs", "max_length", "variants", "files")
_KNOWN = {f.name for f in fields(Manifest) if f.name not in ("folder", "extra")}
# Optional keys a manifest may set to null, read as absent (the runtime always read them with a default).
_NULLABLE = {"architecture", "hidden_size", "problem_type", "tokenizer_config", "pooling"}

# key -> (check, what it must be). A hand-edited or damaged manifest fails here with the key named, instead of
# an AttributeError deep inside a pipeline.
_SHAPE: dict[str, tuple[Callable[[Any], bool], str]] = {
    "task": (lambda x: isinstance(x, str), "a string"),
    "tasks": (_is_str_list, "a list of strings"),
    "architecture": (lambda x: isinstance(x, str), "a string"),
    # attention_mask is required: without it the runtime could not mask padding, and padded batches would
    # attend to pad tokens (answers that change with what a text is batched with).
    "inputs": (
        lambda x: _is_str_list(x) and {"input_ids", "attention_mask"} <= set(x),
        "a list of input names including 'input_ids' and 'attention_mask'",
    ),
    "outputs": (lambda x: _is_str_list(x) and len(x) > 0, "a non-empty list of output names"),
    "max_length": (lambda x: _is_int(x) and x > 0, "a positive integer"),
    "hidden_size": (lambda x: _is_int(x) and x > 0, "a positive integer"),
    "pad_token_id": (_is_int, "an integer"),
    "problem_type": (lambda x: isinstance(x, str), "a string such as 'single_label_classification'"),
    "tokenizer": (lambda x: isinstance(x, str), "a path string"),
    "tokenizer_config": (
        _is_tokenizer_config,
        (
            "an object of '<name>_token' -> string or null, '<name>_token_id' -> integer or null, "
            "'clean_up_tokenization_spaces' -> true/false"
        ),
    ),
    "pooling": (
        lambda x: (
            _is_object(x)
            and isinstance(x.get("mode"), str)
            and isinstance(x.get("normalize", True), bool)
            and isinstance(x.get("source", ""), str)
        ),
        "an object {'mode': 'cls' | 'mean' | 'max', 'normalize': true/false}",
    ),
    "variants": (
        lambda x: _is_object(x, of=_is_variant) and len(x) > 0,
        (
            "an object of precision -> {'file': path, 'cpu_disabled_optimizers': [names], "
            "'fused_operators': {name: count}, 'recipe'/'validation': {...}, 'ort': {'file': path, "
            "'onnxruntime': version, 'optimization_level': level}, ...}"
        ),
    ),
    "files": (
        lambda x: _is_object(
            x, of=lambda v: isinstance(v, dict) and isinstance(v.get("sha256"), str) and _is_int(v.get("size"))
        ),
        "an object of path -> {'sha256': hex, 'size': bytes}",
    ),
    # ASCII digits only: str.isdigit() accepts '¹' or '٣', which int() then rejects or reads as another index.
    "labels": (
        lambda x: (
            isinstance(x, dict) and all(re.fullmatch(r"-?[0-9]+", k) and isinstance(v, str) for k, v in x.items())
        ),
        "an object of class index -> label string",
    ),
    "provenance": (_is_object, "an object"),
    "validation_data": (_is_object, "an object"),
    "generation": (_is_object, "an object (its entries: see _GENERATION)"),
    "vocab_pruning": (_is_object, "an object"),
    "intermediate_validation": (lambda x: _is_object(x, of=_is_object), "an object of precision -> figures"),
}


def _optional(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda x: x is None or check(x)


def _is_token_id(x: Any) -> bool:
    return _is_int(x) and x >= 0


# The "generation" entry of a text-generation folder, key by key: its ids reach int() and numpy, its config
# the sampler, so a wrong type fails here with the key named instead of as a bare ValueError at the first call.
_GENERATION: dict[str, tuple[Callable[[Any], bool], str]] = {
    "eos_token_id": (
        lambda x: isinstance(x, list) and all(_is_token_id(e) for e in x),
        "a list of token ids (int >= 0)",
    ),
    "bos_token_id": (_optional(_is_token_id), "a token id (int >= 0) or null"),
    "pad_token_id": (_optional(_is_token_id), "a token id (int >= 0) or null"),
    "num_layers": (lambda x: _is_int(x) and x > 0, "a positive integer"),
    "num_attention_heads": (lambda x: _is_int(x) and x > 0, "a positive integer"),
    "num_key_value_heads": (lambda x: _is_int(x) and x > 0, "a positive integer"),
    "head_dim": (lambda x: _is_int(x) and x > 0, "a positive integer"),
    "vocab_size": (lambda x: _is_int(x) and x > 0, "a positive integer"),
    "config": (_optional(_is_object), "an object (generation_config.json's settings) or null"),
    "chat_template": (_optional(lambda x: isinstance(x, str)), "a file name (string) or null"),
    "graph": (_optional(_is_object), "an object or null"),
    # encoder-decoder folders
    "decoder_start_token_id": (_is_token_id, "a token id (int >= 0)"),
    "decoder_inputs": (_is_str_list, "a list of the decoder graph's input names"),
    "decoder_outputs": (_is_str_list, "a list of the decoder graph's output names"),
    "task_params": (
        lambda x: _is_object(x, of=_is_object),
        "an object of task name -> generation settings (config.json's task_specific_params)",
    ),
    "prefix": (_optional(lambda x: isinstance(x, str)), "a string (config.json's prefix) or null"),
}


def _check_shape(path: Path, data: dict[str, Any]) -> None:
    checks = [(key, data[key], _SHAPE[key]) for key in _SHAPE if key in data]
    if isinstance(data.get("generation"), dict):
        g = data["generation"]
        checks += [(f"generation.{key}", g[key], _GENERATION[key]) for key in _GENERATION if key in g]
    for key, value, (ok, what) in checks:
        if not (value is None and key in _NULLABLE) and not ok(value):
            raise ManifestError(
                f"{path}: {key!r} must be {what}, found {json.dumps(value)[:80]}. "
                "The manifest was edited or damaged; re-export the folder (onnxpipe export ... --force)."
            )


def unlisted_files(folder: Path, listed: Iterable[str]) -> list[str]:
    """Files (and symlinks) anywhere under ``folder`` that are neither listed nor the manifest itself."""
    known = set(listed) | {MANIFEST_NAME}
    found = []
    for root, dirs, files in os.walk(folder):  # does not descend into symlinked directories...
        base = Path(root)
        for name in files + [d for d in dirs if (base / d).is_symlink()]:  # ...but reports them
            rel = (base / name).relative_to(folder).as_posix()
            if rel not in known:
                found.append(rel)
    return sorted(found)


def verify_files(manifest: Manifest) -> None:
    for rel, info in manifest.files.items():
        path = safe_path(manifest.folder, rel)
        if not path.is_file():
            raise IntegrityError(f"{path} is listed in the manifest but missing; {manifest.hint()}")
        size = path.stat().st_size
        if size != info.size:
            raise IntegrityError(
                f"{path} is {size} bytes, the manifest says {info.size} (truncated or replaced?); {manifest.hint()}"
            )
        if sha256_file(path) != info.sha256:
            raise IntegrityError(
                f"{path} does not match its sha256 in the manifest (modified or corrupted); {manifest.hint()}. "
                "To load it anyway, pass verify=False (CLI: --no-verify)."
            )
    # An ONNX graph can name external-data files that onnxruntime opens next to it; the manifest cannot know
    # which, so verify=True accepts no file it has not hashed (the export lists every file it writes).
    extra = unlisted_files(manifest.folder, manifest.files)
    if extra:
        more = f" and {len(extra) - 5} more" if len(extra) > 5 else ""
        raise IntegrityError(
            f"{manifest.folder} holds files its manifest does not list: {extra[:5]}{more}. onnxruntime may read "
            "any file in the folder (ONNX external data), so with verify=True every file must be listed and "
            f"hashed. Remove them, or {manifest.hint()}; verify=False (CLI: --no-verify) skips this check."
        )
