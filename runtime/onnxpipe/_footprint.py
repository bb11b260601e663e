"""``onnxpipe info --footprint MODEL``: what a model folder costs on a small box.

Bytes on disk per variant and file format, the installed runtime's size, and, each measured in a fresh Python
process (nothing imported or cached from this one), peak resident memory at
batch 1 and the cold start from process start to the first prediction. Fresh processes are slower to measure
but are the only honest cold start; the median over ``runs`` processes damps the noise of a shared machine.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

# What `pip install onnxpipe` installs on purpose; the closure of their requirements is what it brings.
RUNTIME_PACKAGES = ("onnxpipe", "onnxruntime", "tokenizers", "numpy")
SENTENCE = "I've been waiting for a HuggingFace course my whole life."
_CHILD_TIMEOUT_S = 300


def _dist_bytes(dist: metadata.Distribution) -> int:
    total = 0
    for f in dist.files or []:
        p = Path(str(dist.locate_file(f)))
        if p.is_file():
            total += p.stat().st_size
    return total


def _tree_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _requirements(dist: metadata.Distribution) -> list[str]:
    """Names of the requirements installed without extras (markers evaluated where packaging is present)."""
    names = []
    for text in dist.requires or []:
        try:
            from packaging.requirements import Requirement

            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                names.append(req.name)
        except ImportError:  # packaging comes with onnxruntime; without it, skip extras only
            if "extra" not in text:
                names.append(re.split(r"[\s;<>=!~\[(]", text, maxsplit=1)[0])
    return names


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def installed_size() -> dict[str, Any]:
    """Bytes installed per distribution: onnxpipe's runtime packages, and the closure of what they require.

    onnxpipe itself is measured as the imported package folder (a wheel's holds the embedded model; a source
    checkout's does not), so an editable install is not counted as a few bytes of links.

    Example:
        >>> installed_size()["core_mb"]  # onnxpipe + onnxruntime + tokenizers + numpy
        71.3
    """
    seen: dict[str, int] = {}
    todo = list(RUNTIME_PACKAGES)
    while todo:
        name = _canonical(todo.pop())
        if name in seen:
            continue
        if name == "onnxpipe":
            seen[name] = _tree_bytes(Path(__file__).resolve().parent)
            todo.extend(_requirements(metadata.distribution("onnxpipe")) if _has("onnxpipe") else ())
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        seen[name] = _dist_bytes(dist)
        todo.extend(_requirements(dist))
    core = {n: b for n, b in seen.items() if n in RUNTIME_PACKAGES}
    return {
        "packages_mb": {n: round(b / 1e6, 1) for n, b in sorted(seen.items(), key=lambda kv: -kv[1])},
        "core_mb": round(sum(core.values()) / 1e6, 1),
        "total_mb": round(sum(seen.values()) / 1e6, 1),
        "site_packages": str(metadata.distribution("onnxruntime").locate_file("")),
    }


def _has(name: str) -> bool:
    try:
        metadata.distribution(name)
        return True
    except metadata.PackageNotFoundError:
        return False


def disk_sizes(folder: Path) -> list[dict[str, Any]]:
    """One row per variant and format: the file's bytes, and the bytes of a folder exported with that variant
    alone (the file plus what every variant shares: tokenizer, manifest, config files)."""
    from ._manifest import MANIFEST_NAME, load_manifest

    manifest = load_manifest(folder, verify=False)
    variant_files = {v.file for v in manifest.variants.values()} | {
        v.ort.file for v in manifest.variants.values() if v.ort is not None
    }
    ort_only = {v.ort.required_operators for v in manifest.variants.values() if v.ort and v.ort.required_operators}
    shared = sum(f.size for rel, f in manifest.files.items() if rel not in variant_files | ort_only)
    shared += (folder / MANIFEST_NAME).stat().st_size
    rows = []
    for p, v in manifest.variants.items():
        for fmt, rel in (("onnx", v.file), ("ort", v.ort.file if v.ort else None)):
            if rel is None:
                continue
            size = manifest.files[rel].size
            alone = size + shared
            if fmt == "ort" and v.ort is not None:  # the folder keeps the .onnx (the manifest lists it) and config
                alone += manifest.files[v.file].size
                alone += manifest.files[v.ort.required_operators].size if v.ort.required_operators else 0
            rows.append(
                {
                    "precision": p,
                    "format": fmt,
                    "file": rel,
                    "file_mb": round(size / 1e6, 2),
                    "folder_alone_mb": round(alone / 1e6, 2),
                }
            )
    return rows


def _peak_rss_mb() -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    try:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux
    except ImportError:  # Windows
        return None


def child(folder: str, precision: str, fmt: str, profile: str, t0: float) -> dict[str, Any]:
    """Run in the fresh process (``t0``: its perf_counter before ``import onnxpipe``): load, predict once at
    batch 1; the times and the peak memory."""
    from . import AutoTokenizer, pipeline
    from ._manifest import load_manifest
    from ._model import OnnxModel

    imported = time.perf_counter()
    manifest = load_manifest(folder)
    if manifest.task == "text-generation":
        pipe = pipeline("text-generation", model=folder, precision=precision, format=fmt, profile=profile)
        loaded = time.perf_counter()
        pipe(SENTENCE, max_new_tokens=1)
    else:  # one forward pass: what every encoder task's pipeline runs, whatever its inputs look like
        model = OnnxModel(manifest, precision=precision, format=fmt, profile=profile)
        tokenizer = AutoTokenizer.from_manifest(manifest)
        loaded = time.perf_counter()
        model(**tokenizer([SENTENCE], return_tensors="np"))
    done = time.perf_counter()
    return {
        "import_s": imported - t0,
        "load_s": loaded - imported,
        "first_prediction_s": done - loaded,
        "peak_rss_mb": _peak_rss_mb(),
    }


def measure(folder: Path, precision: str, fmt: str, profile: str) -> dict[str, Any]:
    """One fresh process: its own figures, and the wall time from spawning it to its first prediction."""
    env = dict(os.environ)
    here = str(Path(__file__).resolve().parents[1])  # the onnxpipe this process runs, wherever it came from
    env["PYTHONPATH"] = here + os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else here
    args = json.dumps([str(folder), precision, fmt, profile])
    code = (
        "import json, sys, time; t0 = time.perf_counter(); from onnxpipe._footprint import child; "
        "print(json.dumps(child(*json.loads(sys.argv[1]), t0)), flush=True)"
    )
    cmd = [sys.executable, "-c", code, args]
    t0 = time.perf_counter()
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) as proc:
        assert proc.stdout is not None and proc.stderr is not None  # both are pipes
        line = proc.stdout.readline()
        cold = time.perf_counter() - t0
        try:
            _, err = proc.communicate(timeout=_CHILD_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
    if proc.returncode != 0 or not line.strip():
        raise RuntimeError(f"the footprint process for {precision}/{fmt} failed: {err.strip()[-800:]}")
    return {**json.loads(line), "cold_start_s": cold}


def footprint(folder: str | os.PathLike[str], profile: str = "default", runs: int = 3) -> dict[str, Any]:
    """The footprint report of a model folder: disk sizes, installed size, and per CPU variant and format the
    median peak RSS and cold start over ``runs`` fresh processes.

    Example:
        >>> report = footprint("models/minilm-sst2", runs=1)
        >>> report["variants"][0]["peak_rss_mb"], report["variants"][0]["cold_start_s"]
    """
    from ._bench import machine_info
    from ._inputs import int_option
    from ._manifest import load_manifest
    from ._resolve import resolve_model
    from ._session import check_profile

    int_option("runs (--runs)", runs, 1, 20)
    check_profile(profile)
    path = resolve_model(folder)
    load_manifest(path)  # verify once here: a damaged folder fails with its own message, not a child's
    rows = disk_sizes(path)
    for row in rows:
        got = [measure(path, row["precision"], row["format"], profile) for _ in range(runs)]
        for key in ("cold_start_s", "import_s", "load_s", "first_prediction_s", "peak_rss_mb"):
            values = [g[key] for g in got if g[key] is not None]
            row[key] = round(statistics.median(values), 3) if values else None
    return {
        "model": str(path),
        "profile": profile,
        "runs": runs,
        "machine": machine_info(),
        "loadavg_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "installed": installed_size(),
        "variants": rows,
    }


def format_report(report: dict[str, Any]) -> str:
    m, inst = report["machine"], report["installed"]
    lines = [
        f"footprint ({report['profile']} profile, median of {report['runs']} fresh processes; {m['cpu']}, "
        f"{m['cores']} cores, load average {report['loadavg_1min']}):",
        f"  {'variant':8s} {'format':6s} {'file':30s} {'file MB':>8s} {'alone MB':>9s} {'peak RSS':>9s} "
        f"{'cold start':>10s}  (import / load / 1st prediction)",
    ]
    for r in report["variants"]:
        rss = f"{r['peak_rss_mb']:6.1f} MB" if r["peak_rss_mb"] is not None else "        ?"
        lines.append(
            f"  {r['precision']:8s} {r['format']:6s} {r['file']:30s} {r['file_mb']:8.1f} {r['folder_alone_mb']:9.1f} "
            f"{rss:>9s} {r['cold_start_s']:8.2f} s  ({r['import_s']:.2f} / {r['load_s']:.2f} / "
            f"{r['first_prediction_s'] * 1e3:.1f} ms)"
        )
    core = ", ".join(f"{n} {inst['packages_mb'][n]}" for n in RUNTIME_PACKAGES if n in inst["packages_mb"])
    lines.append(
        f"  installed runtime: {inst['core_mb']} MB ({core}); {inst['total_mb']} MB with their "
        f"{len(inst['packages_mb']) - len(RUNTIME_PACKAGES)} dependencies ({inst['site_packages']})"
    )
    lines.append(
        "  alone MB: a folder exported with that variant only (its file, tokenizer, manifest, config files; "
        "an ort row also its .onnx and required_operators.config)"
    )
    return "\n".join(lines)
