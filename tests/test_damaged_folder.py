"""Damaged model folders: each kind of damage is a typed error from onnxpipe.errors naming the file and the fix.

Every case starts from a fresh copy of the embedded model (models/minilm-sst2), damages it one way and loads
it the ways users do (pipeline, AutoTokenizer, AutoModel, the CLI). No torch needed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest

from onnxpipe import AutoModel, AutoModelForSequenceClassification, AutoTokenizer, errors, pipeline
from onnxpipe._cli import main as cli_main
from onnxpipe._manifest import sha256_file
from onnxpipe._resolve import find_model

ONNX = "onnx/model_quantized.onnx"
RUNTIME = Path(__file__).resolve().parents[1] / "runtime" / "onnxpipe"


@pytest.fixture(scope="session")
def pristine(tmp_path_factory) -> Path:
    src = find_model("minilm-sst2")
    assert src is not None, "the embedded model models/minilm-sst2 is missing (see docs/model-folder.md)"
    return Path(shutil.copytree(src, tmp_path_factory.mktemp("pristine") / "minilm-sst2"))


@pytest.fixture
def folder(pristine, tmp_path) -> Path:
    return Path(shutil.copytree(pristine, tmp_path / "model"))


def edit_manifest(folder: Path, change) -> None:
    path = folder / "manifest.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data, indent=2))


def rehash(folder: Path, rel: str) -> None:
    """Make the manifest agree with the file as it is now (a forged or re-signed manifest)."""

    def change(data):
        data["files"][rel] = {"sha256": sha256_file(folder / rel), "size": (folder / rel).stat().st_size}

    edit_manifest(folder, change)


def flip_byte(path: Path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))


def truncate(path: Path, size: int) -> None:
    with open(path, "r+b") as f:
        f.truncate(size)


def symlink_out(folder: Path, rel: str) -> None:
    """Move a file out of the folder and leave a symlink: same bytes, same hash, but outside."""
    outside = folder.parent / ("outside-" + Path(rel).name)
    shutil.move(folder / rel, outside)
    os.symlink(outside, folder / rel)


def symlink_loop(folder: Path, rel: str) -> None:
    (folder / rel).unlink()
    os.symlink(folder / rel, folder / rel)


def garbage(folder: Path, rel: str, data: bytes) -> None:
    (folder / rel).write_bytes(data)


def _set(key, value):
    def change(data):
        data[key] = value

    return change


def _variant_file(rel):
    def change(data):
        data["variants"]["int8"]["file"] = rel
        data["files"][rel] = data["files"].pop(ONNX)

    return change


# name -> (damage, error class, patterns the message must contain: the file and the fix)
CASES = {
    "manifest_missing": (
        lambda f: (f / "manifest.json").unlink(),
        errors.ModelNotFoundError,
        [r"has no manifest\.json", r"onnxpipe export"],
    ),
    "manifest_not_json": (
        lambda f: (f / "manifest.json").write_text('{"format_version": "1.0", '),
        errors.ManifestError,
        [r"manifest\.json is not valid JSON", r"[Rr]e-export"],
    ),
    "manifest_empty": (
        lambda f: (f / "manifest.json").write_text(""),
        errors.ManifestError,
        [r"manifest\.json is not valid JSON", r"[Rr]e-export"],
    ),
    "manifest_not_utf8": (
        lambda f: (f / "manifest.json").write_bytes(b"\xff\xfe{}"),
        errors.ManifestError,
        [r"manifest\.json", r"[Rr]e-export"],
    ),
    "manifest_a_list": (
        lambda f: (f / "manifest.json").write_text("[]"),
        errors.ManifestError,
        [r"manifest\.json must hold a JSON object", r"[Rr]e-export"],
    ),
    "format_version_2": (
        lambda f: edit_manifest(f, _set("format_version", "2.0")),
        errors.ManifestError,
        [r"manifest\.json has format_version '2\.0'; this onnxpipe reads 1\.x", r"onnxpipe export \.\.\. --force"],
    ),
    "format_version_missing": (
        lambda f: edit_manifest(f, lambda d: d.pop("format_version")),
        errors.ManifestError,
        [r"format_version '\(none\)'", r"onnxpipe export"],
    ),
    "disabled_optimizers_not_names": (
        lambda f: edit_manifest(
            f, lambda d: d["variants"]["int8"].update(cpu_disabled_optimizers="SkipLayerNormFusion")
        ),
        errors.ManifestError,
        [r"'variants'", r"cpu_disabled_optimizers"],
    ),
    "key_missing": (
        lambda f: edit_manifest(f, lambda d: d.pop("variants")),
        errors.ManifestError,
        [r"manifest\.json lacks the keys \['variants'\]", r"[Rr]e-export"],
    ),
    "max_length_a_string": (
        lambda f: edit_manifest(f, _set("max_length", "512")),
        errors.ManifestError,
        [r"'max_length' must be a positive integer, found \"512\"", r"re-export"],
    ),
    "files_a_list": (
        lambda f: edit_manifest(f, _set("files", [ONNX])),
        errors.ManifestError,
        [r"'files' must be an object of path", r"re-export"],
    ),
    **{
        f"generation_{key}_{name}": (
            lambda f, key=key, value=value: edit_manifest(f, _set("generation", {"eos_token_id": [2], key: value})),
            errors.ManifestError,
            [rf"'generation\.{key}' must be {what}", r"re-export"],
        )
        for key, name, value, what in [
            ("eos_token_id", "a_word", ["abc"], r"a list of token ids"),
            ("eos_token_id", "a_bool", [True], r"a list of token ids"),
            ("eos_token_id", "not_a_list", "2", r"a list of token ids"),
            ("bos_token_id", "a_word", "abc", r"a token id"),
            ("pad_token_id", "negative", -1, r"a token id"),
            ("config", "a_list", [1], r"an object"),
            ("chat_template", "a_number", 5, r"a file name"),
            ("num_key_value_heads", "zero", 0, r"a positive integer"),
        ]
    },
    "labels_not_indices": (
        lambda f: edit_manifest(f, _set("labels", {"neg": "NEGATIVE"})),
        errors.ManifestError,
        [r"'labels' must be an object of class index", r"re-export"],
    ),
    "manifest_deeply_nested": (
        lambda f: (f / "manifest.json").write_text("[" * 100_000 + "]" * 100_000),
        errors.ManifestError,
        [r"manifest\.json nests JSON too deeply", r"[Rr]e-export"],
    ),
    "inputs_without_attention_mask": (
        lambda f: edit_manifest(f, _set("inputs", ["input_ids", "token_type_ids"])),
        errors.ManifestError,
        [
            r"'inputs' must be a list of input names including 'input_ids' and "
            r"'attention_mask'",
            r"re-export",
        ],
    ),
    # '¹'.isdigit() is True, int('¹') raises: the key must be refused as a manifest error, not a ValueError later
    "label_key_superscript": (
        lambda f: edit_manifest(f, _set("labels", {"0": "NEGATIVE", "\u00b9": "POSITIVE"})),
        errors.ManifestError,
        [r"'labels' must be an object of class index", r"re-export"],
    ),
    "label_key_arabic_digit": (
        lambda f: edit_manifest(f, _set("labels", {"0": "NEGATIVE", "\u0661": "POSITIVE"})),
        errors.ManifestError,
        [r"'labels' must be an object of class index"],
    ),
    "unlisted_file_beside_the_onnx": (
        lambda f: garbage(f, "onnx/model_quantized.onnx_data", b"\0" * 64),
        errors.IntegrityError,
        [
            r"holds files its manifest does not list: "
            r"\['onnx/model_quantized\.onnx_data'\]",
            r"external data",
            r"onnxpipe export .* --force",
            r"verify=False",
        ],
    ),
    "unlisted_file_at_the_top": (
        lambda f: garbage(f, "weights.bin", b"\0"),
        errors.IntegrityError,
        [r"does not list: \['weights\.bin'\]"],
    ),
    "unlisted_symlink_to_a_folder": (
        lambda f: os.symlink(f.parent, f / "onnx" / "up"),
        errors.IntegrityError,
        [r"does not list: \['onnx/up'\]"],
    ),
    # The graph and the manifest disagree: caught once the session exists (so not by AutoTokenizer).
    "one_label_on_two_logits": (
        lambda f: edit_manifest(f, _set("labels", {"0": "NEGATIVE"})),
        errors.ManifestError,
        [
            re.escape(ONNX) + r" gives 2 logits per row, but the manifest labels the indices "
            r"\[0\]",
            r"must be 0\.\.1",
            r"onnxpipe export .* --force",
        ],
    ),
    "three_labels_on_two_logits": (
        lambda f: edit_manifest(f, _set("labels", {"0": "a", "1": "b", "2": "c"})),
        errors.ManifestError,
        [r"gives 2 logits per row.*\[0, 1, 2\]"],
    ),
    "labels_not_from_zero": (
        lambda f: edit_manifest(f, _set("labels", {"1": "a", "2": "b"})),
        errors.ManifestError,
        [r"gives 2 logits per row.*\[1, 2\]"],
    ),
    "graph_input_not_in_manifest": (
        lambda f: edit_manifest(f, _set("inputs", ["input_ids", "attention_mask"])),
        errors.ManifestError,
        [
            re.escape(ONNX) + r" takes the inputs \['attention_mask', 'input_ids', "
            r"'token_type_ids'\], but the manifest lists \['attention_mask', 'input_ids'\]",
            r"do not belong together",
            r"onnxpipe export",
        ],
    ),
    "manifest_input_not_in_graph": (
        lambda f: edit_manifest(f, _set("inputs", ["input_ids", "attention_mask", "token_type_ids", "position_ids"])),
        errors.ManifestError,
        [r"but the manifest lists \['attention_mask', 'input_ids', 'position_ids'"],
    ),
    "manifest_output_not_in_graph": (
        lambda f: edit_manifest(f, _set("outputs", ["logits", "last_hidden_state", "pooler_output"])),
        errors.ManifestError,
        [r"not \['pooler_output'\] that the manifest lists"],
    ),
    "variant_file_unlisted": (
        lambda f: edit_manifest(f, lambda d: d["files"].pop(ONNX)),
        errors.ManifestError,
        [re.escape(repr(ONNX)) + r" is used but not listed", r"[Rr]e-export"],
    ),
    "tokenizer_unlisted": (
        lambda f: edit_manifest(f, _set("tokenizer", "other.json")),
        errors.ManifestError,
        [r"'other\.json' is used but not listed", r"[Rr]e-export"],
    ),
    "onnx_missing": (
        lambda f: (f / ONNX).unlink(),
        errors.IntegrityError,
        [re.escape(ONNX) + r" is listed in the manifest but missing", r"onnxpipe export .* --force"],
    ),
    "onnx_replaced_by_a_folder": (
        lambda f: ((f / ONNX).unlink(), (f / ONNX).mkdir()),
        errors.IntegrityError,
        [re.escape(ONNX) + r" is listed in the manifest but missing"],
    ),
    "tokenizer_missing": (
        lambda f: (f / "tokenizer.json").unlink(),
        errors.IntegrityError,
        [r"tokenizer\.json is listed in the manifest but missing", r"onnxpipe export"],
    ),
    "onnx_tampered": (
        lambda f: flip_byte(f / ONNX, 11_000_000),
        errors.IntegrityError,
        [re.escape(ONNX) + r" does not match its sha256", r"onnxpipe export .* --force", r"verify=False"],
    ),
    "onnx_truncated": (
        lambda f: truncate(f / ONNX, 5_000_000),
        errors.IntegrityError,
        [re.escape(ONNX) + r" is 5000000 bytes, the manifest says (?P<listed>\d+) \(truncated", r"onnxpipe export"],
    ),
    "onnx_emptied": (lambda f: truncate(f / ONNX, 0), errors.IntegrityError, [re.escape(ONNX) + r" is 0 bytes"]),
    "tokenizer_tampered": (
        lambda f: flip_byte(f / "tokenizer.json", 100),
        errors.IntegrityError,
        [r"tokenizer\.json does not match its sha256", r"onnxpipe export"],
    ),
    "entry_dotdot": (
        lambda f: edit_manifest(f, _variant_file("../model_quantized.onnx")),
        errors.IntegrityError,
        [r"'\.\./model_quantized\.onnx' .* points outside the model folder"],
    ),
    "entry_absolute": (
        lambda f: edit_manifest(f, _variant_file(str(f / ONNX))),
        errors.IntegrityError,
        [r"points outside the model folder; only relative paths"],
    ),
    "entry_absolute_elsewhere": (
        lambda f: edit_manifest(f, _variant_file("/etc/passwd")),
        errors.IntegrityError,
        [r"'/etc/passwd' .* points outside the model folder"],
    ),
    "tokenizer_entry_dotdot": (
        lambda f: edit_manifest(
            f,
            lambda d: (
                d.__setitem__("tokenizer", "../t.json"),
                d["files"].__setitem__("../t.json", {"sha256": "0", "size": 1}),
            ),
        ),
        errors.IntegrityError,
        [r"'\.\./t\.json' .* points outside the model folder"],
    ),
    "onnx_symlinked_out": (
        lambda f: symlink_out(f, ONNX),
        errors.IntegrityError,
        [re.escape(ONNX) + r" resolves to .*outside-model_quantized\.onnx, outside the model", r"re-export"],
    ),
    "tokenizer_symlinked_out": (
        lambda f: symlink_out(f, "tokenizer.json"),
        errors.IntegrityError,
        [r"tokenizer\.json resolves to .*, outside the model folder"],
    ),
    "onnx_symlink_loop": (
        lambda f: symlink_loop(f, ONNX),
        errors.IntegrityError,
        [re.escape(ONNX) + r" cannot be resolved", r"re-export"],
    ),
    # The manifest agrees with the bytes (a forged manifest, or a broken export): the loaders must still refuse.
    "onnx_garbage_hash_matches": (
        lambda f: (garbage(f, ONNX, b"\x08\x07garbage" * 1000), rehash(f, ONNX)),
        errors.ModelLoadError,
        [
            r"onnxruntime [\d.]+ could not load .*" + re.escape(ONNX),
            r"onnxpipe export .* --force",
            r"pip install -U onnxruntime",
        ],
    ),
    "onnx_is_text_hash_matches": (
        lambda f: (garbage(f, ONNX, b"version https://git-lfs.github.com/spec/v1\n"), rehash(f, ONNX)),
        errors.ModelLoadError,
        [r"could not load .*" + re.escape(ONNX)],
    ),
    "tokenizer_garbage_hash_matches": (
        lambda f: (garbage(f, "tokenizer.json", b'{"model": 1}'), rehash(f, "tokenizer.json")),
        errors.ModelLoadError,
        [r"the tokenizers library rejected .*tokenizer\.json", r"onnxpipe export"],
    ),
    "tokenizer_not_utf8_hash_matches": (
        lambda f: (garbage(f, "tokenizer.json", b"\xff\xfe\x00"), rehash(f, "tokenizer.json")),
        errors.ModelLoadError,
        [r"cannot read .*tokenizer\.json", r"onnxpipe export"],
    ),
}

# Damage that only one loader can see: once the hashes check out, AutoTokenizer never opens the ONNX file and
# AutoModel never opens tokenizer.json (the hash check itself runs in every loader).
ONNX_ONLY = {
    "onnx_garbage_hash_matches",
    "onnx_is_text_hash_matches",
    "one_label_on_two_logits",
    "three_labels_on_two_logits",
    "labels_not_from_zero",
    "graph_input_not_in_manifest",
    "manifest_input_not_in_graph",
    "manifest_output_not_in_graph",
}
TOKENIZER_ONLY = {"tokenizer_garbage_hash_matches", "tokenizer_not_utf8_hash_matches"}

LOADERS = {
    "pipeline": lambda f: pipeline("sentiment-analysis", model=f),
    "AutoTokenizer": lambda f: AutoTokenizer.from_pretrained(f),
    "AutoModel": lambda f: AutoModel.from_pretrained(f),
}


def test_the_pristine_copy_loads(folder):
    """The control: an undamaged copy loads every way, so each failure below is the damage's doing."""
    assert pipeline("sentiment-analysis", model=folder)("fine")[0]["label"] in {"NEGATIVE", "POSITIVE"}
    AutoTokenizer.from_pretrained(folder)
    AutoModel.from_pretrained(folder)


PAIRS = [
    (case, loader)
    for case in CASES
    for loader in LOADERS
    if not (loader == "AutoTokenizer" and case in ONNX_ONLY or loader == "AutoModel" and case in TOKENIZER_ONLY)
]


@pytest.mark.parametrize("case,loader", PAIRS)
def test_damage_is_a_typed_error_naming_the_file_and_the_fix(folder, case, loader):
    damage, error, patterns = CASES[case]
    damage(folder)
    with pytest.raises(error) as info:
        LOADERS[loader](folder)
    message = str(info.value)
    assert isinstance(info.value, errors.ModelFolderError)
    for pattern in patterns:
        found = re.search(pattern, message)
        assert found, f"{pattern!r} not in: {message}"
        if "listed" in found.groupdict():  # the size the message quotes is the one the manifest lists
            listed = json.loads((folder / "manifest.json").read_text())["files"][ONNX]["size"]
            assert int(found["listed"]) == listed
    assert str(folder) in message  # the file is named with its path


@pytest.mark.parametrize("case", ["onnx_tampered", "format_version_2", "onnx_symlinked_out", "onnx_missing"])
def test_cli_prints_one_error_line_and_exits_2(folder, case, capsys):
    CASES[case][0](folder)
    assert cli_main(["info", str(folder)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and str(folder) in err, err
    assert cli_main(["predict", "--model", str(folder), "some text"]) == 2


def test_a_later_minor_format_version_is_accepted(folder):
    edit_manifest(folder, _set("format_version", "1.7"))
    assert len(pipeline("sentiment-analysis", model=folder)("fine")) == 1


def test_hashes_are_checked_by_default_and_verify_false_skips_them(folder, capsys):
    # config.json is listed and hashed, but the runtime never reads it: damage it, and only the hash check sees it
    flip_byte(folder / "config.json", 5)
    with pytest.raises(errors.IntegrityError, match=r"config\.json does not match its sha256"):
        pipeline("sentiment-analysis", model=folder)
    with pytest.raises(errors.IntegrityError):
        AutoModelForSequenceClassification.from_pretrained(folder)
    assert len(pipeline("sentiment-analysis", model=folder, verify=False)("fine")) == 1
    AutoModelForSequenceClassification.from_pretrained(folder, verify=False)
    AutoTokenizer.from_pretrained(folder, verify=False)
    assert cli_main(["info", str(folder)]) == 2
    assert cli_main(["info", "--no-verify", str(folder)]) == 0
    assert "no (--no-verify)" in capsys.readouterr().out


@pytest.mark.parametrize("case", ["entry_dotdot", "onnx_symlinked_out", "onnx_missing", "tokenizer_missing"])
def test_verify_false_still_refuses_paths_outside_and_missing_files(folder, case):
    CASES[case][0](folder)
    with pytest.raises(errors.IntegrityError):
        pipeline("sentiment-analysis", model=folder, verify=False)


def test_garbage_onnx_is_refused_by_onnxruntime_even_without_verify(folder):
    garbage(folder, ONNX, b"not an onnx model")
    with pytest.raises(errors.ModelLoadError, match=r"(?s)could not load .*model_quantized\.onnx.*onnxpipe export"):
        pipeline("sentiment-analysis", model=folder, verify=False)


def test_a_task_the_folder_was_not_exported_for(folder):
    def feature_extraction_only(data):
        data["task"], data["tasks"] = "feature-extraction", ["feature-extraction"]
        data["outputs"] = ["last_hidden_state"]
        data.pop("labels")

    edit_manifest(folder, feature_extraction_only)
    with pytest.raises(
        errors.TaskMismatchError,
        match=r"was exported for \['feature-extraction'\], not 'text-classification' .*onnxpipe export",
    ):
        pipeline("sentiment-analysis", model=folder)
    with pytest.raises(errors.TaskMismatchError, match=r"has outputs \['last_hidden_state'\], not 'logits'"):
        AutoModelForSequenceClassification.from_pretrained(folder)
    assert pipeline("feature-extraction", model=folder)("ok", return_tensors=True).shape[-1] == 384


def test_a_precision_the_folder_does_not_have(folder):
    with pytest.raises(
        errors.PrecisionUnavailableError, match=r"has no 'fp16' variant; it has \['int8'\].*--precision fp16"
    ):
        pipeline("sentiment-analysis", model=folder, precision="fp16")


def test_no_folder_at_all(tmp_path):
    with pytest.raises(
        errors.ModelNotFoundError,
        match=r"no model folder at .*does-not-exist'?: the path does "
        r"not exist.*onnxpipe export",
    ):
        pipeline("sentiment-analysis", model=tmp_path / "does-not-exist")
    with pytest.raises(errors.ModelNotFoundError, match=r"has no manifest\.json: it is not an onnxpipe model folder"):
        pipeline("sentiment-analysis", model=tmp_path)


# The runtime never unpickles: model folders hold JSON, ONNX protobuf and tokenizer JSON only, and no runtime
# code calls a loader that can run code from a file.
UNPICKLING = [
    r"\bimport pickle\b",
    r"\bpickle\.",
    r"\bcPickle\b",
    r"\bdill\b",
    r"\bjoblib\b",
    r"\bcloudpickle\b",
    r"\bshelve\b",
    r"\bmarshal\.loads?\b",
    r"\bnp\.load\(",
    r"\bnumpy\.load\(",
    r"allow_pickle\s*=\s*True",
    r"\btorch\.load\b",
    r"\bload_pickle\b",
    r"__reduce__",
]


def test_the_runtime_never_unpickles():
    sources = sorted(RUNTIME.rglob("*.py"))
    assert len(sources) > 10
    hits = [
        f"{p.relative_to(RUNTIME)}:{n}: {line.strip()}"
        for p in sources
        for n, line in enumerate(p.read_text().splitlines(), 1)
        for pattern in UNPICKLING
        if re.search(pattern, line)
    ]
    assert hits == []


def _rewrite_onnx(folder: Path, change, **save) -> None:
    """Load the ONNX file with the onnx package, change it, save it (optionally with external data), rehash it."""
    onnx = pytest.importorskip("onnx")
    model = onnx.load(str(folder / ONNX))
    change(model, onnx)
    onnx.save_model(model, str(folder / ONNX), **save)
    rehash(folder, ONNX)


@pytest.mark.torch
def test_an_extra_graph_input_is_refused_at_load_not_at_predict(folder):
    def add_input(model, onnx):
        model.graph.input.append(
            onnx.helper.make_tensor_value_info(
                "position_ids", onnx.TensorProto.INT64, ["batch_size", "sequence_length"]
            )
        )

    _rewrite_onnx(folder, add_input)
    for load in (lambda: pipeline("sentiment-analysis", model=folder), lambda: AutoModel.from_pretrained(folder)):
        with pytest.raises(
            errors.ManifestError,
            match=r"takes the inputs \['attention_mask', 'input_ids', "
            r"'position_ids', 'token_type_ids'\].*onnxpipe export",
        ):
            load()


@pytest.mark.torch
def test_onnx_external_data_is_verified_only_when_listed(folder):
    _rewrite_onnx(
        folder,
        lambda model, onnx: None,
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="weights.bin",
        size_threshold=1024,
    )
    data = folder / "onnx" / "weights.bin"
    assert data.stat().st_size > 10_000_000  # the weights really moved out of the listed file
    flip_byte(data, data.stat().st_size // 2)  # ...and their bytes are not what was exported
    with pytest.raises(errors.IntegrityError, match=r"does not list: \['onnx/weights\.bin'\].*external data"):
        pipeline("sentiment-analysis", model=folder)
    rehash(folder, "onnx/weights.bin")  # listed: it loads, and from now on its hash is checked
    assert pipeline("sentiment-analysis", model=folder)("fine")[0]["label"] in {"NEGATIVE", "POSITIVE"}
    flip_byte(data, 0)
    with pytest.raises(errors.IntegrityError, match=r"weights\.bin does not match its sha256"):
        pipeline("sentiment-analysis", model=folder)


@pytest.mark.parametrize(
    "damage",
    [
        lambda d: d["validation_data"].__setitem__("variants", []),
        lambda d: d["validation_data"].pop("pytorch_accuracy"),
        lambda d: d["variants"]["int8"].__setitem__("validation", {"max_abs_diff_logits": "x"}),
    ],
    ids=["validation_data_variants_a_list", "validation_data_without_accuracy", "validation_figure_a_word"],
)
def test_info_names_a_damaged_export_record(folder, damage, capsys):
    """The export's records (validation figures, validation data) are read only by `onnxpipe info`: a damaged
    one was an AttributeError or KeyError traceback there."""
    edit_manifest(folder, damage)
    assert cli_main(["info", str(folder), "--no-verify"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "a record of the export" in err and "re-export" in err
    assert "Traceback" not in err
