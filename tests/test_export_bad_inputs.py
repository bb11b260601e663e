"""Export faults that used to end in a traceback or in a silently broken folder: damaged weights (NaN, inf,
overflow), labels that do not fit the head or are not text, no tokenizer files, an unwritable or full disk.
Each is one typed ExportError naming the problem (CLI: one ``error:`` line, exit 2), raised before the long
work (ONNX export, fusion, quantization) wherever it can be known up front.

Uses the tiny random checkpoints of tests/_tiny.py (conftest fixtures); needs the export extra.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from onnxpipe import errors
from onnxpipe._cli import main as cli_main

pytestmark = pytest.mark.torch


def _export(source, out, **kwargs):
    from onnxpipe_export import export

    return export(source, task="text-classification", out=out, precisions="int8", progress=False, **kwargs)


@pytest.fixture
def ckpt(tiny_checkpoint, tmp_path) -> Path:
    return Path(shutil.copytree(tiny_checkpoint("bert", "text-classification"), tmp_path / "ckpt"))


@pytest.fixture
def no_long_work(monkeypatch):
    """Fail the test if the ONNX export starts: these faults must be refused before it."""
    import onnxpipe_export._onnx as onnx_export

    def exported(*args, **kwargs):
        raise AssertionError("the ONNX export started: the fault was found only after the long work began")

    monkeypatch.setattr(onnx_export, "export_fp32", exported)


def _refused(capsys, ckpt: Path, out: Path, error: type, match: str) -> None:
    """The same refusal through the Python API and the CLI; nothing left at or next to ``out``."""
    with pytest.raises(error, match=match):
        _export(ckpt, out)
    rc = cli_main(["export", str(ckpt), "--out", str(out), "--precision", "int8", "--quiet"])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    assert re.search(match, lines[0])
    assert not os.path.lexists(out) and list(out.parent.glob(f".{out.name}.*")) == []


def _weights(ckpt: Path, change) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(ckpt / "model.safetensors")
    change(tensors)
    save_file(tensors, ckpt / "model.safetensors", metadata={"format": "pt"})


def _config(ckpt: Path, change) -> None:
    config = json.loads((ckpt / "config.json").read_text())
    change(config)
    (ckpt / "config.json").write_text(json.dumps(config))


def _labels(*names, keys=None):
    keys = keys or range(len(names))
    return lambda c: c.update(
        id2label={str(k): n for k, n in zip(keys, names)}, label2id={n: k for k, n in zip(keys, names)}
    )


def _no_tokenizer(ckpt: Path) -> None:
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        (ckpt / name).unlink()


def _surrogate(ckpt: Path) -> None:  # "\ud800" in JSON parses to a lone surrogate in Python
    (ckpt / "config.json").write_text((ckpt / "config.json").read_text().replace('"NEGATIVE"', '"\\ud800"'))


def _overflow(t) -> None:
    t["bert.pooler.dense.bias"].fill_(1e4)  # tanh saturates: every pooled value is 1 ...
    t["classifier.weight"].fill_(1e38)  # ... so every logit is 32 x 1e38: inf in float32


CHECKPOINTS = [
    # (case, damage, error, message, refused before the ONNX export)
    (
        "NaN weight",
        lambda c: _weights(c, lambda t: t["classifier.weight"].__setitem__((1, 2), float("nan"))),
        errors.ExportError,
        r"weight classifier\.weight holds 1 non-finite value\(s\) \(NaN or inf\)",
        True,
    ),
    (
        "inf weight",
        lambda c: _weights(c, lambda t: t["bert.pooler.dense.bias"].__setitem__(0, float("-inf"))),
        errors.ExportError,
        r"weight bert\.pooler\.dense\.bias holds 1 non-finite",
        True,
    ),
    (
        "weights overflow float32",
        lambda c: _weights(c, _overflow),
        errors.ValidationError,
        r"PyTorch's own outputs hold \d+ non-finite value\(s\) \(NaN or inf\) in 'logits'",
        True,
    ),
    (
        "fewer labels than outputs",
        lambda c: _config(c, _labels("a", "b")),
        errors.ExportError,
        r"do not fit its config\.json \(size mismatch.*id2label has 2 labels",
        True,
    ),
    (
        "more labels than outputs",
        lambda c: _config(c, _labels("a", "b", "c", "d")),
        errors.ExportError,
        r"do not fit its config\.json \(size mismatch.*id2label has 4 labels",
        True,
    ),
    (
        "labels numbered with a gap",
        lambda c: _config(c, _labels("a", "b", "c", keys=[0, 1, 5])),
        errors.ExportError,
        r"the classifier head has 3 outputs but config\.json's id2label has 3 labels \(\[0, 1, 5\]\)",
        True,
    ),
    (
        "a lone surrogate in a label",
        _surrogate,
        errors.ExportError,
        r"label 0 of .*config\.json is '\\ud800', which is not valid text",
        True,
    ),
    ("no tokenizer files", _no_tokenizer, errors.ExportError, r"has no usable tokenizer files .*tokenizer\.json", True),
]


@pytest.mark.parametrize("case,damage,error,match,early", CHECKPOINTS, ids=[c[0] for c in CHECKPOINTS])
def test_a_damaged_checkpoint_is_one_clear_error(ckpt, tmp_path, request, capsys, case, damage, error, match, early):
    if early:
        request.getfixturevalue("no_long_work")
    damage(ckpt)
    _refused(capsys, ckpt, tmp_path / "out", error, match)


def test_nan_from_the_onnx_model_fails_validation(tiny_checkpoint, tiny_export, monkeypatch):
    # NaN fails every comparison: the old gate `diff > 1e-4` let a NaN output through as a pass.
    from onnxpipe._manifest import load_manifest
    from onnxpipe._model import OnnxModel
    from onnxpipe._tokenizer import AutoTokenizer
    from onnxpipe_export._load import load_checkpoint
    from onnxpipe_export._validate import torch_reference, validate_variant

    folder = tiny_export("bert", "text-classification")
    manifest = load_manifest(folder)
    tokenizer = AutoTokenizer(
        (folder / "tokenizer.json").read_text(), manifest.max_length, manifest.inputs, manifest.pad_token_id
    )
    ckpt = load_checkpoint(
        str(tiny_checkpoint("bert", "text-classification")), "text-classification", False, False, None
    )
    ref = torch_reference(ckpt, "text-classification")
    assert validate_variant(manifest, "fp32", tokenizer, ref)["max_abs_diff_logits"] <= 1e-4  # sane as it is
    real = OnnxModel.run

    def run_with_a_nan(self, feeds, names):
        outputs = real(self, feeds, names)
        outputs[names.index("logits")][0, 0] = np.nan
        return outputs

    monkeypatch.setattr(OnnxModel, "run", run_with_a_nan)
    for precision in ("fp32", "int8"):
        with pytest.raises(errors.ValidationError, match=rf"the {precision} ONNX model's outputs hold 1 non-finite"):
            validate_variant(manifest, precision, tokenizer, ref)


# -- the disk -------------------------------------------------------------------------------------------------------
@pytest.mark.skipif(not Path("/sys").is_dir(), reason="needs Linux' read-only /sys")
def test_an_unwritable_output_folder_is_refused_before_loading(ckpt, monkeypatch, capsys):
    import onnxpipe_export._load as load

    monkeypatch.setattr(load, "load_checkpoint", lambda *a, **k: pytest.fail("loaded before checking the output"))
    for out in (Path("/sys/onnxpipe-test-model"), Path("/sys/onnxpipe-test/model")):  # even root cannot write /sys
        _refused(
            capsys,
            ckpt,
            out,
            errors.ExportError,
            r"cannot create the model folder .*(not permitted|denied).*choose an --out in a folder you can write",
        )


def test_too_little_free_space_is_refused_before_loading(ckpt, tmp_path, monkeypatch, capsys):
    import onnxpipe_export._load as load
    import onnxpipe_export._output as output

    monkeypatch.setattr(load, "load_checkpoint", lambda *a, **k: pytest.fail("loaded before checking the space"))
    real = shutil.disk_usage
    monkeypatch.setattr(output.shutil, "disk_usage", lambda p: real(p)._replace(free=1000))
    _refused(
        capsys,
        ckpt,
        tmp_path / "out",
        errors.ExportError,
        r"only 0 MB are free in .*the export needs at least \d+ MB .*Free space there",
    )


def _dev_full(name: str):
    """Point ``name`` in the staging folder at /dev/full just before the tokenizer is written: a real ENOSPC.
    (Python's write fails at close, where OSError carries no file name; the Rust tokenizer names none either.)"""

    def meddle(real):
        def write_tokenizer(ckpt, folder, max_length):
            (folder / name).symlink_to("/dev/full")
            return real(ckpt, folder, max_length)

        return write_tokenizer

    return meddle


def _enospc(real):
    def write_tokenizer(ckpt, folder, max_length):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(folder / "tokenizer.json"))

    return write_tokenizer


@pytest.mark.parametrize(
    "meddle",
    [
        pytest.param(
            _dev_full("tokenizer.json"),
            id="tokenizers library writes to /dev/full",
            marks=pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full"),
        ),
        pytest.param(
            _dev_full("config.json"),
            id="Python writes to /dev/full",
            marks=pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full"),
        ),
        pytest.param(_enospc, id="OSError(ENOSPC)"),
    ],
)
def test_a_full_disk_midway_is_one_clear_error(ckpt, tmp_path, monkeypatch, capsys, meddle):
    import onnxpipe_export._recipe as recipe

    monkeypatch.setattr(recipe, "_write_tokenizer", meddle(recipe._write_tokenizer))
    _refused(
        capsys,
        ckpt,
        tmp_path / "out",
        errors.ExportError,
        r"stopped on a file error: No space left on device( \(.*tokenizer\.json\))?; the disk is full",
    )
