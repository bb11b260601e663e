"""Count the model exports and int8 recipe candidates a test run makes, by what was exported.

Exports dominate the suite's time, and their count, unlike a duration, does not depend on the machine's load:
conftest wraps ``onnxpipe_export.export`` (the entry the tests and the CLI call) and the recipe search's
quantize step, and prints one summary at the end of the run. In-process calls only: an export a test runs in a
subprocess is not counted. ``ONNXPIPE_EXPORT_CENSUS=FILE`` also writes every call as JSON lines there. A fixture
folder copied from the machine's test cache (tests/_export_cache.py) is no export; the last line counts those hits
and the misses the run built and stored.
"""

from __future__ import annotations

import functools
import json
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

import _export_cache

CALLS: list[dict[str, Any]] = []
CANDIDATES: list[str] = []


def _label(source: Any) -> str:
    """``tiny bert/text-classification`` for a tests/_tiny.py checkpoint, else the source's folder name."""
    path = Path(str(source))
    tiny = path / "tiny.json"
    if tiny.is_file():
        info = json.loads(tiny.read_text())
        return f"tiny {info['arch']}/{info['head']}"
    return path.name


def _key(source: Any, kwargs: dict[str, Any]) -> str:
    precisions = kwargs.get("precisions", "default")
    if not isinstance(precisions, str):
        precisions = ",".join(precisions)
    options = [
        name
        for name in ("validation_data", "calibration_data", "prune_vocab", "ort", "int8_candidates")
        if kwargs.get(name) not in (None, False)
    ]
    if kwargs.get("int8_recipe", "default") != "default":
        options.append(f"int8_recipe={kwargs['int8_recipe']}")
    task = kwargs.get("task", "text-classification")
    return f"{_label(source)} -> {task} [{precisions}]" + (f" +{','.join(options)}" if options else "")


def install() -> bool:
    """Wrap the export entry point and the search's quantize step; False where the export extra is missing."""
    try:
        import onnxpipe_export
        import onnxpipe_export._int8_search as search
    except ImportError:
        return False
    real_export, real_quantize = onnxpipe_export.export, search.quantize_int8

    @functools.wraps(real_export)
    def export(source, *args, **kwargs):
        names = ("task", "out", "precisions")  # the positional order of export()'s first parameters
        key = _key(source, {**dict(zip(names, args)), **kwargs})
        t0, outcome = time.perf_counter(), "ok"
        try:
            return real_export(source, *args, **kwargs)
        except BaseException as e:
            outcome = type(e).__name__
            raise
        finally:
            CALLS.append({"key": key, "outcome": outcome, "s": round(time.perf_counter() - t0, 2)})

    @functools.wraps(real_quantize)
    def quantize_int8(source, out, recipe=None, calibration=None):
        CANDIDATES.append(Path(out).stem)
        return real_quantize(source, out, recipe, calibration)

    onnxpipe_export.export = export
    search.quantize_int8 = quantize_int8
    return True


def cache_used() -> bool:
    return bool(_export_cache.STATS)


def summary() -> list[str]:
    """The lines printed at the end of the run."""
    done = [c for c in CALLS if c["outcome"] == "ok"]
    seconds = sum(c["s"] for c in done)
    lines = [
        f"exports: {len(done)} completed ({seconds:.0f} s), {len(CALLS) - len(done)} refused or failed; "
        f"int8 search candidates quantized: {len(CANDIDATES)} (in-process calls only)"
    ]
    repeated = {k: n for k, n in Counter(c["key"] for c in done).items() if n > 1}
    lines += [f"  {n}x {key}" for key, n in sorted(repeated.items(), key=lambda kv: (-kv[1], kv[0]))]
    if _export_cache.STATS:
        lines.append(_export_cache.summary())
    target = os.environ.get("ONNXPIPE_EXPORT_CENSUS")
    if target:
        with open(target, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(c) + "\n" for c in CALLS)
    return lines
