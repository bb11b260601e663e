"""SessionOptions: how a model folder is loaded and run, one value passed whole from the CLI or ``pipeline()``
down to the session, and the one set of command-line flags that fills it.

The values are checked where they take effect (``_session.choose``, ``choose_execution``, ``create_session``),
so an error names the folder's variants and the valid choices; this module only carries them.
"""

from __future__ import annotations

import argparse
from collections.abc import Collection
from dataclasses import dataclass, fields

from ._manifest import PRECISIONS
from ._session import DEVICES, EXECUTIONS, FORMATS, PROFILES


@dataclass(frozen=True)
class SessionOptions:
    """How to load and run a model folder (the session settings of ``pipeline()`` and ``from_pretrained()``).

    ``device``: "cpu", "cuda" or "auto". ``precision``: the folder's variant ("int8", "int8-exact", "int4",
    "fp32", "fp16"; None: the fastest the device has). ``threads``: onnxruntime intra-op threads (None: the
    profile's). ``verify``: check every file's sha256 at load. ``profile``: "default" or "low-power".
    ``format``: "onnx" or "ort" (the variant's ORT-format copy). ``execution``: "auto", "alone" or "batched"
    (how pipelines run several inputs).

    Example:
        >>> options = SessionOptions(precision="fp32", threads=2)
        >>> replace(options, profile="low-power").threads   # dataclasses.replace: a changed copy
        2
    """

    device: str = "cpu"
    precision: str | None = None
    threads: int | None = None
    verify: bool = True
    profile: str = "default"
    format: str = "onnx"
    execution: str = "auto"

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> SessionOptions:
        """The options of parsed command-line arguments (``add_session_arguments``); a flag the command does not
        take keeps its default. Only the flags ``add_session_arguments`` added are read: ``batch``'s
        ``--format`` (the input file's) is not the session's."""
        added = getattr(args, "session_flags", ())
        values = {f.name: getattr(args, f.name) for f in fields(cls) if f.name in added}
        return cls(**values, verify=not ("no-verify" in added and args.no_verify))


SESSION_FLAGS = ("device", "precision", "threads", "no-verify", "profile", "format", "execution")


def add_session_arguments(
    parser: argparse.ArgumentParser, exclude: Collection[str] = (), threads_help: str | None = None
) -> None:
    """Add the session flags (``SESSION_FLAGS`` except ``exclude``) to a command; ``SessionOptions.from_args``
    reads them back. One definition, so every command that loads a model takes the same flags with the same
    choices and defaults."""
    unknown = sorted(set(exclude) - set(SESSION_FLAGS))
    if unknown:
        raise ValueError(f"exclude={unknown}: not session flags; they are {list(SESSION_FLAGS)}")
    flags: dict[str, tuple[tuple[str, ...], dict[str, object]]] = {
        "device": (("--device",), {"default": "cpu", "choices": list(DEVICES)}),
        "precision": (
            ("--precision",),
            {"choices": PRECISIONS, "help": "the folder's variant (default: the fastest the device has)"},
        ),
        "threads": (("--threads",), {"type": int, "help": threads_help or "intra-op threads (default: the profile's)"}),
        "no-verify": (("--no-verify",), {"action": "store_true", "help": "skip the sha256 check at load"}),
        "profile": (
            ("--profile",),
            {
                "default": "default",
                "choices": list(PROFILES),
                "help": "session settings: " + "; ".join(f"{name}: {p.note}" for name, p in PROFILES.items()),
            },
        ),
        "format": (
            ("--format",),
            {
                "default": "onnx",
                "choices": list(FORMATS),
                "help": "the variant's file: onnx, or ort (its ORT-format copy, from onnxpipe export --ort; CPU only)",
            },
        ),
        "execution": (
            ("--execution",),
            {
                "default": "auto",
                "choices": list(EXECUTIONS),
                "help": "auto (default): dynamic-int8 inputs each run alone on a thread pool, so an answer never "
                "depends on the other inputs; batched: padded batches (int8 answers then vary with batch-mates)",
            },
        ),
    }
    added = tuple(name for name in SESSION_FLAGS if name not in exclude)
    for name in added:
        names, kwargs = flags[name]
        parser.add_argument(*names, **kwargs)  # type: ignore[arg-type]
    parser.set_defaults(session_flags=added)
