"""SessionOptions: one value from the command line or pipeline()'s keywords down to the session, and one set of
session flags shared by every command that loads a model."""

from __future__ import annotations

import argparse

import pytest

from onnxpipe import AutoModelForSequenceClassification, SessionOptions, pipeline
from onnxpipe._cli import build_parser
from onnxpipe._resolve import find_model
from onnxpipe._session_options import SESSION_FLAGS, add_session_arguments

EMBEDDED = find_model("minilm-sst2")
ALL = set(SESSION_FLAGS)


def _flags(command: str) -> set[str]:
    sub = build_parser()._subparsers._group_actions[0].choices[command]  # type: ignore[union-attr]
    added = set(sub.get_default("session_flags") or ())
    options = {o for a in sub._actions for o in a.option_strings}
    assert {f"--{f}" for f in added} <= options
    return added


@pytest.mark.parametrize(
    "command, flags",
    [
        ("predict", ALL),
        ("bench", ALL),
        ("serve", ALL),
        ("generate", ALL),
        # --format is the input file's there; the engines set threads per worker
        ("batch", {"precision", "threads", "no-verify"}),
    ],
)
def test_every_command_that_loads_a_model_takes_the_same_session_flags(command, flags):
    assert _flags(command) == flags


@pytest.mark.parametrize(
    "argv, expected",
    [
        ([], SessionOptions()),
        (
            ["--device", "auto", "--precision", "fp32", "--threads", "2", "--no-verify", "--profile", "low-power"]
            + ["--format", "ort", "--execution", "alone"],
            SessionOptions("auto", "fp32", 2, False, "low-power", "ort", "alone"),
        ),
    ],
)
def test_the_flags_read_back_as_one_value(argv, expected):
    parser = argparse.ArgumentParser()
    add_session_arguments(parser)
    assert SessionOptions.from_args(parser.parse_args(argv)) == expected


def test_a_command_without_a_flag_keeps_its_default():
    parser = argparse.ArgumentParser()
    parser.add_argument("--format", default="csv")  # the command's own flag of that name, not the session's
    add_session_arguments(parser, exclude=("device", "format", "profile", "execution"))
    assert SessionOptions.from_args(parser.parse_args(["--threads", "3"])) == SessionOptions(threads=3)
    with pytest.raises(ValueError, match="not session flags"):
        add_session_arguments(argparse.ArgumentParser(), exclude=("batch-size",))


@pytest.mark.skipif(EMBEDDED is None, reason="the embedded minilm-sst2 folder is missing")
def test_pipeline_and_from_pretrained_keywords_become_the_models_options():
    # transformers' spelling of the device (-1) is read as the CPU, as before
    pipe = pipeline("text-classification", model=EMBEDDED, device=-1, threads=1, execution="batched")
    assert pipe.model.options == SessionOptions(threads=1, execution="batched")
    model = AutoModelForSequenceClassification.from_pretrained(EMBEDDED, profile="low-power", verify=False)
    assert model.options == SessionOptions(profile="low-power", verify=False)
    assert model.threads == 1  # the profile took effect
