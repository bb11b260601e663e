"""The typed model-folder contract: Manifest.from_json checks every key's shape, to_json writes the one format
byte for byte, and keys this version does not know survive a read and re-write."""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from pathlib import Path

import pytest

from onnxpipe._manifest import FORMAT_VERSION, FileEntry, Manifest, Pooling, Variant
from onnxpipe.errors import ManifestError

ROOT = Path(__file__).resolve().parents[1]
MINILM = ROOT / "models" / "minilm-sst2"
TEXT = (MINILM / "manifest.json").read_text(encoding="utf-8")


@pytest.fixture
def data() -> dict:
    return json.loads(TEXT)


def test_the_shipped_folder_reserialises_to_identical_bytes():
    manifest = Manifest.from_json(TEXT, MINILM)
    assert manifest.to_json() == TEXT
    # Re-exported with fixed activation scales by this version's export, with the alone-vs-batched figures
    assert manifest.format_version == FORMAT_VERSION and manifest.task == "text-classification"
    invariance = manifest.validation_data["variants"]["int8"]["batch_invariance"]
    assert set(invariance) == {"label_flips", "max_score_change", "p99_score_change"}
    assert manifest.labels == {0: "NEGATIVE", 1: "POSITIVE"}
    # The residual Add is baked in as Sum, so no load-time switch is recorded.
    assert manifest.variants["int8"].recipe["residual_add_as_sum"] is True
    # One recipe for every CPU: the search took no candidate that AVX2-only CPUs' 16-bit pair sums overflow
    found = manifest.variants["int8"].recipe_search
    assert found["candidates"][found["chosen"]]["cannot_saturate"] is True
    assert manifest.variants["int8"].cpu_disabled_optimizers == ()
    assert manifest.files["tokenizer.json"].size == (MINILM / "tokenizer.json").stat().st_size
    assert manifest.tokenizer_config is not None and manifest.tokenizer_config["mask_token_id"] == 103


def test_text_and_object_parse_alike(data):
    assert Manifest.from_json(data, MINILM) == Manifest.from_json(TEXT, MINILM)


def test_a_manifest_built_in_code_round_trips(tmp_path):
    built = Manifest(
        folder=tmp_path,
        task="feature-extraction",
        inputs=["input_ids", "attention_mask"],
        outputs=["last_hidden_state"],
        max_length=128,
        hidden_size=32,
        variants={"fp32": Variant("onnx/model.onnx", fused_operators={}, validation={"sentences": 3})},
        files={"onnx/model.onnx": FileEntry("ab" * 32, 10), "tokenizer.json": FileEntry("cd" * 32, 5)},
        pooling=Pooling("cls", False, source="default"),
        provenance={"source": "ckpt"},
    )
    text = built.to_json()
    assert text.startswith('{\n  "format_version": "' + FORMAT_VERSION + '",\n') and text.endswith("}\n")
    again = Manifest.from_json(text, tmp_path)
    assert again == built and again.tasks == ["feature-extraction"]
    assert json.loads(text)["variants"]["fp32"]["fused_operators"] == {}  # set but empty: still written
    assert "labels" not in json.loads(text) and "problem_type" not in json.loads(text)


def test_unknown_keys_are_kept(data):
    data["later_key"] = {"a": 1}
    data["variants"]["int8"]["later_variant_key"] = [1, 2]
    data["files"]["config.json"]["later_file_key"] = "x"
    manifest = Manifest.from_json(data, MINILM)
    assert manifest.extra == {"later_key": {"a": 1}}
    assert json.loads(manifest.to_json()) == data


def test_keys_a_1_0_folder_may_omit_get_their_defaults(data):
    for key in ("tasks", "pad_token_id", "architecture", "hidden_size", "tokenizer_config", "provenance"):
        del data[key]
    manifest = Manifest.from_json(data, MINILM)
    assert manifest.tasks == ["text-classification"] and manifest.pad_token_id == 0
    assert manifest.tokenizer == "tokenizer.json" and manifest.hidden_size is None
    assert "SOURCE" in manifest.hint()


@pytest.mark.parametrize("key", ["architecture", "hidden_size", "problem_type", "tokenizer_config", "pooling"])
def test_null_optional_keys_read_as_absent(data, key):
    data[key] = None
    assert getattr(Manifest.from_json(data, MINILM), key) is None


def test_a_changed_copy_leaves_the_original_alone():
    manifest = Manifest.from_json(TEXT, MINILM)
    other = replace(manifest, variants={**manifest.variants, "int8": Variant("search/x.onnx")})
    assert manifest.variants["int8"].file == "onnx/model_quantized.onnx"
    assert other.variants["int8"].file == "search/x.onnx"
    with pytest.raises(AttributeError):
        manifest.task = "fill-mask"  # type: ignore[misc]


def _int8(change):
    def edit(d):
        change(d["variants"]["int8"])

    return edit


# key -> (edit, the key the message must name). Every check of the shape table, old and new.
BAD = {
    "task": lambda d: d.update(task=3),
    "tasks": lambda d: d.update(tasks="text-classification"),
    "architecture": lambda d: d.update(architecture=["bert"]),
    "inputs": lambda d: d.update(inputs=["input_ids"]),
    "outputs": lambda d: d.update(outputs=[]),
    "max_length": lambda d: d.update(max_length=0),
    "hidden_size": lambda d: d.update(hidden_size="384"),
    "pad_token_id": lambda d: d.update(pad_token_id=True),
    "problem_type": lambda d: d.update(problem_type=1),
    "tokenizer": lambda d: d.update(tokenizer=None),
    "tokenizer_config": lambda d: d["tokenizer_config"].update(cls_token_id="101"),
    "tokenizer_config ": lambda d: d["tokenizer_config"].update(clean_up_tokenization_spaces="no"),
    "pooling": lambda d: d.update(pooling={"normalize": True}),
    "pooling ": lambda d: d.update(pooling={"mode": "mean", "normalize": "yes"}),
    "variants": lambda d: d.update(variants={}),
    "variants ": _int8(lambda v: v.pop("file")),
    "variants  ": _int8(lambda v: v.update(fused_operators={"Attention": "12"})),
    "variants   ": _int8(lambda v: v.update(recipe="default")),
    "variants    ": _int8(lambda v: v.update(note=1)),
    "files": lambda d: d["files"]["config.json"].pop("sha256"),
    "labels": lambda d: d.update(labels={"0": 1}),
    "provenance": lambda d: d.update(provenance="local"),
    "validation_data": lambda d: d.update(validation_data=[]),
    "intermediate_validation": lambda d: d.update(intermediate_validation={"fp32": 1.0}),
}


@pytest.mark.parametrize("key", sorted(BAD))
def test_each_misshapen_key_is_named(data, key):
    BAD[key](data)
    with pytest.raises(ManifestError, match=rf"manifest\.json: '{key.strip()}' must be .*re-export the folder"):
        Manifest.from_json(data, MINILM)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("{", r"is not valid JSON"),
        ("[]", r"must hold a JSON object, found list"),
        (
            '{"format_version": "2.0"}',
            r"format_version '2\.0'; this onnxpipe reads 1\.x.*onnxpipe export \.\.\. --force",
        ),
        ('{"format_version": "1.0", "task": "x"}', r"lacks the keys \['inputs', 'outputs', 'max_length', 'variants', "),
    ],
)
def test_what_is_not_a_manifest_is_refused(source, message):
    with pytest.raises(ManifestError, match=message):
        Manifest.from_json(source, MINILM)


def test_a_later_minor_version_is_read_and_kept(data):
    data["format_version"] = "1.7"
    manifest = Manifest.from_json(data, MINILM)
    assert manifest.format_version == "1.7" and json.loads(manifest.to_json())["format_version"] == "1.7"


def test_a_file_the_runtime_opens_must_be_listed(data):
    bad = copy.deepcopy(data)
    del bad["files"]["tokenizer.json"]
    with pytest.raises(ManifestError, match=r"'tokenizer\.json' is used but not listed under 'files'"):
        Manifest.from_json(bad, MINILM)
