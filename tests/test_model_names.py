"""Model names resolve exactly: a path if it is one, else a folder of exactly that name in a search directory.

A near miss (another organisation, another case, a path that climbs out with ``..``) must be an error naming
what exists, never the embedded model loaded in its place.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from onnxpipe import AutoTokenizer, _resolve, errors, pipeline
from onnxpipe._cli import main as cli_main
from onnxpipe._resolve import find_model, folder_name, resolve_model

EMBEDDED = find_model("minilm-sst2")

# names that the old matching (last component, lowercased) turned into the embedded minilm-sst2
NEAR_MISSES = [
    "anyorg/minilm-sst2",
    "evil/../../minilm-sst2",
    "MINILM-SST2",
    "Minilm-Sst2",
    "org/MINILM-SST2",
    "../minilm-sst2",
    "/minilm-sst2",
    "minilm-sst2/",
    "./minilm-sst2",
    "a/b/minilm-sst2",
    "..",
    "",
    "minilm-sst2\\x",
]


def test_the_exact_name_finds_the_embedded_model():
    assert EMBEDDED is not None and EMBEDDED.name == "minilm-sst2"
    assert resolve_model("minilm-sst2") == EMBEDDED
    assert resolve_model(EMBEDDED) == EMBEDDED  # a path is a path


@pytest.mark.parametrize("name", NEAR_MISSES)
def test_a_near_miss_is_not_found(name, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # relative names must not hit a real folder by accident
    assert find_model(name) is None
    with pytest.raises(errors.ModelNotFoundError, match=r"onnxpipe export"):
        resolve_model(name)


@pytest.mark.parametrize("name", ["anyorg/minilm-sst2", "MINILM-SST2", "evil/../../minilm-sst2"])
def test_a_near_miss_fails_every_way_users_load(name, monkeypatch, tmp_path, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(errors.ModelNotFoundError):
        pipeline("sentiment-analysis", model=name)
    with pytest.raises(errors.ModelNotFoundError):
        AutoTokenizer.from_pretrained(name)
    assert cli_main(["predict", "--model", name, "good"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith("error: no model folder")


@pytest.mark.parametrize(
    "name,folder",
    [
        ("minilm-sst2", "minilm-sst2"),
        ("org/name", "org--name"),
        ("Org/Name", "Org--Name"),
        ("org--name", "org--name"),
        ("org/../name", None),
        ("/abs", None),
        ("a/b/c", None),
        ("a//b", None),
        (".", None),
        ("a\\b", None),
    ],
)
def test_folder_name(name, folder):
    assert folder_name(name) == folder


def test_a_hub_id_maps_to_org_dash_dash_name_in_onnxpipe_home(monkeypatch, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    os.symlink(EMBEDDED, home / "someorg--sentiment")
    monkeypatch.setenv("ONNXPIPE_HOME", str(home))
    monkeypatch.chdir(tmp_path)
    assert resolve_model("someorg/sentiment") == home / "someorg--sentiment"
    assert resolve_model("someorg--sentiment") == home / "someorg--sentiment"
    for miss in ("SomeOrg/sentiment", "other/sentiment", "sentiment"):
        with pytest.raises(errors.ModelNotFoundError):
            resolve_model(miss)


def test_the_not_found_message_lists_only_existing_dirs_and_their_names(monkeypatch, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    for name in ["zeta", "alpha", "mid"]:
        os.symlink(EMBEDDED, home / name)
    (home / "not-a-model").mkdir()  # no manifest: not offered
    gone = tmp_path / "no-such-checkout" / "models"  # e.g. a wheel install has no checkout models/
    monkeypatch.setenv("ONNXPIPE_HOME", str(home))
    monkeypatch.setattr(_resolve, "_CHECKOUT_MODELS", gone)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(errors.ModelNotFoundError) as info:
        resolve_model("anyorg/minilm-sst2")
    message = str(info.value)
    assert f"{home} [alpha, mid, zeta]" in message  # sorted, models only
    assert str(gone) not in message and "not-a-model" not in message
    if _resolve._PACKAGE_MODELS.is_dir():
        assert str(_resolve._PACKAGE_MODELS) in message
    else:
        assert str(_resolve._PACKAGE_MODELS) not in message
    assert "org--name" in message and "onnxpipe export SOURCE --task TASK --out DIR" in message


def test_the_not_found_message_shortens_a_long_listing(monkeypatch, tmp_path):
    for i in range(12):
        os.symlink(EMBEDDED, tmp_path / f"m{i:02d}")
    monkeypatch.setenv("ONNXPIPE_HOME", str(tmp_path))
    with pytest.raises(errors.ModelNotFoundError, match=r"m07, \.\.\. \(12 in all\)"):
        resolve_model("missing")


def test_a_wheel_install_does_not_search_a_checkout_models_dir():
    assert _resolve._checkout_models(Path("/venv/lib/python3.11/site-packages/onnxpipe")) is None
    assert _resolve._checkout_models(Path("/src/onnxpipe/runtime/onnxpipe")) == Path("/src/onnxpipe/models")
