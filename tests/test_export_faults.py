"""The export stage under faults: wrong input is refused with the valid choices, nothing is overwritten
without --force, a killed export leaves no model folder behind, and unsafe checkpoints need their flag.

Uses the tiny random checkpoints of tests/_tiny.py (conftest fixtures); needs the export extra.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from onnxpipe import errors, pipeline
from onnxpipe._cli import main as cli_main

pytestmark = pytest.mark.torch


def _export(source, out, **kwargs):
    from onnxpipe_export import export

    return export(
        source,
        task=kwargs.pop("task", "text-classification"),
        out=out,
        precisions=kwargs.pop("precisions", "int8"),
        progress=False,
        **kwargs,
    )


def _siblings(out: Path) -> list[str]:
    """Hidden staging / backup folders next to ``out``."""
    return sorted(p.name for p in out.parent.glob(f".{out.name}.*"))


@pytest.fixture
def ckpt(tiny_checkpoint, tmp_path) -> Path:
    """A private copy of the tiny BERT classifier checkpoint, free to modify."""
    return Path(shutil.copytree(tiny_checkpoint("bert", "text-classification"), tmp_path / "ckpt"))


# -- refused before any work: unknown task or architecture, existing output ----------------------------------
def test_unsupported_task_lists_the_supported_ones(ckpt, tmp_path):
    from onnxpipe_export import SUPPORTED_TASKS

    out = tmp_path / "out"
    with pytest.raises(errors.UnsupportedArchitectureError, match=r"cannot export for task 'image-class") as e:
        _export(ckpt, out, task="image-classification")
    for task in SUPPORTED_TASKS:
        assert repr(task) in str(e.value)
    assert not out.exists() and _siblings(out) == []


def test_unsupported_architecture_lists_the_supported_ones(tmp_path):
    import transformers

    from onnxpipe_export import ARCHITECTURES

    source = tmp_path / "gpt2"
    config = transformers.GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=64, n_positions=32)
    transformers.GPT2ForSequenceClassification(config).save_pretrained(source)  # real, safetensors weights
    out = tmp_path / "out"
    with pytest.raises(errors.UnsupportedArchitectureError, match=r"no export settings for model type 'gpt2'") as e:
        _export(source, out)
    for arch in ARCHITECTURES:
        assert repr(arch) in str(e.value)
    assert not out.exists() and _siblings(out) == []  # the staging folder was removed on the way out


def test_existing_output_is_refused_without_force(ckpt, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("user data")
    with pytest.raises(errors.OutputExistsError, match=r"already exists; pass --force"):
        _export(ckpt, out)
    assert cli_main(["export", str(ckpt), "--out", str(out), "--quiet"]) == 2
    assert "already exists; pass --force" in capsys.readouterr().err
    assert (out / "keep.txt").read_text() == "user data"
    # --force replaces only a model folder (tests/test_export_output.py has the whole table)
    with pytest.raises(errors.OutputExistsError, match=r"not an onnxpipe model folder"):
        _export(ckpt, out, force=True)
    assert (out / "keep.txt").read_text() == "user data" and _siblings(out) == []
    (out / "keep.txt").unlink()
    _export(ckpt, out, force=True)  # an empty folder may be replaced
    assert (out / "manifest.json").is_file()
    _export(ckpt, out, force=True)  # and a model folder
    assert _siblings(out) == []  # neither the staging folder nor the old folder is left


# -- killed midway ---------------------------------------------------------------------------------------------
# The child is a real export, held right after it wrote the int8 model (files half done, no manifest yet).
_CHILD = textwrap.dedent("""
    import pathlib, sys, time
    import onnxpipe_export._optimize as optimize

    real = optimize.quantize_int8

    def quantize_then_wait(*args, **kwargs):
        result = real(*args, **kwargs)
        pathlib.Path(sys.argv[3]).write_text("int8 written")
        time.sleep(600)
        return result

    optimize.quantize_int8 = quantize_then_wait
    from onnxpipe_export import export
    export(sys.argv[1], task="text-classification", out=sys.argv[2], precisions="int8,fp32", progress=False)
""")


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"the export exited early ({proc.returncode}): {proc.stderr.read()[-3000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("the export did not reach the int8 step in time")
        time.sleep(0.1)


def test_a_killed_export_leaves_no_model_folder(ckpt, tmp_path):
    # SIGTERM and SIGKILL, started together to share the start-up time
    runs = {}
    for sig in (signal.SIGTERM, signal.SIGKILL):
        root = tmp_path / sig.name
        root.mkdir()
        out, marker = root / "model", root / "marker"
        proc = subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(ckpt), str(out), str(marker)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        runs[sig] = (proc, out, marker)
    try:
        for sig, (proc, out, marker) in runs.items():
            _wait_for(marker, proc, timeout=240)
            partial = [p for p in out.parent.glob(".model.partial-*")]
            assert len(partial) == 1 and (partial[0] / "onnx" / "model_quantized.onnx").is_file()  # midway
            assert not out.exists()
            proc.send_signal(sig)
            assert proc.wait(timeout=60) == (128 + sig if sig == signal.SIGTERM else -sig)
    finally:
        for proc, _, _ in runs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    # SIGTERM: cleaned up on the way out
    _, out, _ = runs[signal.SIGTERM]
    assert not out.exists() and _siblings(out) == []

    # SIGKILL cannot be caught: the hidden staging folder stays, and no model folder appears ...
    proc, out, _ = runs[signal.SIGKILL]
    assert not out.exists()
    left = _siblings(out)
    assert len(left) == 1 and left[0].startswith(f".model.partial-{proc.pid}-"), left
    # ... until the next export to the same place removes it (its process is gone) and succeeds.
    _export(ckpt, out)
    assert _siblings(out) == []
    assert pipeline("sentiment-analysis", model=out)("a complete folder")[0]["label"]


def test_the_next_export_keeps_a_staging_folder_whose_export_still_runs(ckpt, tmp_path):
    out = tmp_path / "model"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        live = tmp_path / f".model.partial-{sleeper.pid}-busy"  # as a concurrent export would name it
        live.mkdir()
        _export(ckpt, out)
        assert live.is_dir()
    finally:
        sleeper.kill()
        sleeper.wait()
    with pytest.raises(errors.OutputExistsError):
        _export(ckpt, out)  # the check for stale folders runs first, even when the export is then refused
    assert not live.exists()


def test_a_replace_killed_between_the_two_renames_gets_the_old_folder_back(ckpt, tmp_path):
    out = tmp_path / "model"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    backup = tmp_path / f".model.old-{dead.pid}"  # the old folder, moved aside by a --force export that died
    backup.mkdir()
    (backup / "manifest.json").write_text("{}")
    with pytest.raises(errors.OutputExistsError):
        _export(ckpt, out)  # the old folder is back in place, so without --force nothing is overwritten
    assert (out / "manifest.json").read_text() == "{}" and _siblings(out) == []


# -- unsafe checkpoints ---------------------------------------------------------------------------------------
def test_pickled_weights_are_refused_unless_allowed(ckpt, tmp_path, capsys):
    import transformers

    model = transformers.AutoModelForSequenceClassification.from_pretrained(ckpt)
    model.save_pretrained(ckpt, safe_serialization=False)
    (ckpt / "model.safetensors").unlink()
    assert (ckpt / "pytorch_model.bin").is_file()
    out = tmp_path / "out"
    with pytest.raises(
        errors.UnsafeCheckpointError, match=r"only pickled weights \(pytorch_model\.bin\).*--allow-pickle"
    ):
        _export(ckpt, out)
    assert cli_main(["export", str(ckpt), "--out", str(out), "--quiet"]) == 2
    assert "--allow-pickle" in capsys.readouterr().err
    assert not out.exists() and _siblings(out) == []
    _export(ckpt, out, allow_pickle=True)
    manifest = json.loads((out / "manifest.json").read_text())
    assert "pytorch_model.bin" in manifest["provenance"]["weights_sha256"]


def _custom_code(ckpt: Path, marker: Path, model_type: str) -> None:
    """Give the checkpoint its own code (as hub repositories with auto_map do); importing it leaves a marker."""
    stamp = f"import pathlib; pathlib.Path({str(marker)!r}).write_text('custom code ran')\n"
    (ckpt / "configuration_custom.py").write_text(
        stamp
        + textwrap.dedent(f"""
        from transformers import BertConfig

        class CustomConfig(BertConfig):
            model_type = {model_type!r}
    """)
    )
    (ckpt / "modeling_custom.py").write_text(
        stamp
        + textwrap.dedent("""
        from transformers import BertForSequenceClassification
        from .configuration_custom import CustomConfig

        class CustomModel(BertForSequenceClassification):
            config_class = CustomConfig
    """)
    )
    config = json.loads((ckpt / "config.json").read_text())
    config["model_type"] = model_type
    config["auto_map"] = {
        "AutoConfig": "configuration_custom.CustomConfig",
        "AutoModelForSequenceClassification": "modeling_custom.CustomModel",
    }
    (ckpt / "config.json").write_text(json.dumps(config))


@pytest.fixture
def modules_cache(tmp_path, monkeypatch):
    """transformers copies remote code into HF_MODULES_CACHE; keep it out of the user's home."""
    from transformers import dynamic_module_utils

    monkeypatch.setattr(dynamic_module_utils, "HF_MODULES_CACHE", str(tmp_path / "hf_modules"))
    monkeypatch.setattr(sys, "path", list(sys.path))
    yield
    # The imported remote code stays in sys.modules under the same name in every test ("ckpt"); the next test
    # would load it from this test's folder, which pytest deletes once the test passes.
    for name in [m for m in sys.modules if m.split(".")[0] == "transformers_modules"]:
        del sys.modules[name]


def test_unknown_model_type_with_remote_code_needs_trust_remote_code(ckpt, tmp_path, modules_cache):
    marker = tmp_path / "ran"
    _custom_code(ckpt, marker, "onnxpipe-custom")
    out = tmp_path / "out"
    with pytest.raises(errors.UnsafeCheckpointError, match=r"needs custom code .*--trust-remote-code"):
        _export(ckpt, out)
    assert not marker.exists() and not out.exists()
    # With the flag the code runs; this model type then has no export settings, which is said plainly.
    with pytest.raises(errors.UnsupportedArchitectureError, match=r"model type 'onnxpipe-custom'; supported: "):
        _export(ckpt, out, trust_remote_code=True)
    assert marker.exists() and not out.exists() and _siblings(out) == []


def test_known_model_type_with_remote_code_is_not_silently_exported_without_it(ckpt, tmp_path, modules_cache):
    # model_type "bert" with its own modeling code: transformers would quietly use BertForSequenceClassification
    # and ignore the checkpoint's code, so the export would not be the model its author wrote.
    marker = tmp_path / "ran"
    _custom_code(ckpt, marker, "bert")
    out = tmp_path / "out"
    with pytest.raises(
        errors.UnsafeCheckpointError,
        match=r"ships its own model code .*modeling_custom\.CustomModel.*--trust-remote-code",
    ):
        _export(ckpt, out)
    assert not marker.exists() and not out.exists() and _siblings(out) == []
    _export(ckpt, out, trust_remote_code=True)
    assert marker.exists()
    assert pipeline("sentiment-analysis", model=out)("custom code, exported")[0]["label"]
