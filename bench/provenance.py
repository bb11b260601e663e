"""Where a committed result came from: the command line, the commit, the machine, the versions and the date.

Every bench program calls ``provenance(script, argv)`` before it measures and stores the result beside its
figures (summary.json, matmul_floor.json, session_options.json) and at the top of its tables (results.md,
tasks.md), so a number in the docs can be traced to the command that produced it and rerun.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import shlex
import subprocess
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Distributions whose version can move a figure; the ones not installed are left out.
PACKAGES = (
    "onnxruntime",
    "tokenizers",
    "numpy",
    "onnx",
    "torch",
    "transformers",
    "optimum",
    "optimum-onnx",
    "fastembed",
    "ctranslate2",
    "openvino",
)
# Regenerated outputs a run itself rewrites: changes there do not make the code that measured "dirty".
OUTPUTS = "bench/results"


def rel(path: str | os.PathLike) -> str:
    """``path`` relative to the repository root when it lies inside it, so committed files hold no
    machine-specific absolute paths; anything outside (../shared, a user's folder) is kept as given."""
    p = Path(path).resolve()
    try:
        return str(p.relative_to(REPO))
    except ValueError:
        try:
            return str(Path("..") / p.relative_to(REPO.parent))  # ../shared and siblings of the checkout
        except ValueError:
            return str(path)


def _git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, check=True).stdout


def git_state() -> dict:
    """HEAD's commit and whether tracked files differ from it (outside the results folder)."""
    try:
        commit = _git("rev-parse", "HEAD").strip()
        changed = [
            line[3:]
            for line in _git(
                "status", "--porcelain", "--untracked-files=no", "--", ".", f":(exclude){OUTPUTS}"
            ).splitlines()
        ]
    except (OSError, subprocess.CalledProcessError) as e:
        return {"commit": None, "dirty": None, "error": f"git failed: {e}"}
    return {"commit": commit, "dirty": bool(changed), "dirty_files": changed[:20]}


def machine() -> dict:
    """The runtime's machine_info (CPU model, SIMD flags, usable cores, Python/onnxruntime/onnxpipe versions)
    plus the platform and the memory size."""
    from onnxpipe._bench import machine_info

    return {
        **machine_info(),
        "platform": platform.platform(),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
    }


def versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def provenance(script: str | os.PathLike, argv: Sequence[str]) -> dict:
    """``argv`` is the program's own arguments (sys.argv[1:] when run from a shell, the list main() got
    otherwise); the command is written as a line to paste at the repository root."""
    command = shlex.join(["python", rel(script), *map(str, argv)])
    return {
        "command": command,
        "argv": list(map(str, argv)),
        "git": git_state(),
        "machine": machine(),
        "versions": versions(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "loadavg_1min_at_start": round(os.getloadavg()[0], 2),
    }


def markdown(prov: dict) -> list[str]:
    """The header lines results.md and tasks.md start with."""
    g, m = prov["git"], prov["machine"]
    if g["commit"] is None:
        commit = f"unknown ({g['error']})"
    else:
        commit = f"`{g['commit']}`" + (
            " (uncommitted changes not recorded)"  # a result from before provenance was recorded
            if g["dirty"] is None
            else f" **with uncommitted changes** to {', '.join(g['dirty_files'])}"
            if g["dirty"]
            else " (clean)"
        )
    return [
        f"Command (at the repository root): `{prov['command']}`  ",
        f"Commit: {commit}; date {prov['date']}; load average {prov['loadavg_1min_at_start']} at start"
        + (f", {prov['loadavg_1min_at_end']} at end" if "loadavg_1min_at_end" in prov else "")
        + ".  ",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB; SIMD: {' '.join(m['simd_flags']) or '-'}; "
        f"{m['platform']}.  ",
        f"Versions: Python {m['python']}, onnxpipe {m['onnxpipe']}, "
        + ", ".join(f"{k} {v}" for k, v in prov["versions"].items())
        + ".",
    ]


def write_report(out: Path, stem: str, report: dict, markdown: Callable[[dict], str]) -> str:
    """Write ``out/stem.json`` (keys sorted) and ``out/stem.md``, the table made from that JSON as written, so a
    committed table can always be rebuilt from the committed JSON alone; return the table."""
    out.mkdir(parents=True, exist_ok=True)
    text = json.dumps(report, indent=2, sort_keys=True)
    (out / f"{stem}.json").write_text(text + "\n", encoding="utf-8")
    table = markdown(json.loads(text))
    (out / f"{stem}.md").write_text(table, encoding="utf-8")
    return table


def simd_flags() -> list[str]:
    """What `grep -o 'avx512_vnni\\|avx2' /proc/cpuinfo | sort -u` prints (plus the AMX / bf16 flags OpenVINO uses)."""
    try:
        words = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return []
    return sorted(words & {"avx2", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "avx512f"})


def run_header(report: dict, lead: str = "") -> list[str]:
    """The two header lines of the engine benches' tables (command, commit, date; CPU, flags, load), from a report
    with ``provenance``, ``simd_flags`` and ``loadavg`` {start, end}; ``lead`` goes before the first."""
    prov, m = report["provenance"], report["provenance"]["machine"]
    return [
        f"{lead}Command: `{prov['command']}`; commit `{prov['git']['commit']}`"
        + (" (uncommitted changes)" if prov["git"]["dirty"] else "")
        + f"; {prov['date']}.  ",
        f"CPU: {m['cpu']}, {m['cores']} cores; flags: {' '.join(report['simd_flags'])}. Load average (1 min) "
        f"{report['loadavg']['start']} at start, {report['loadavg']['end']} at end (a shared machine).  ",
    ]


def target(name: str, ratio: float | None, met: bool | None, detail: str) -> dict:
    """One row of an engine bench's target table (``ratio`` rounded to 3 places; None: not measured)."""
    return {"target": name, "ratio": None if ratio is None else round(ratio, 3), "met": met, "detail": detail}


def target_table(rows: Sequence[dict], heading: str = "target") -> list[str]:
    """The markdown lines of a target table: target, ratio, met (yes / **no** / n/a), detail."""
    lines = [f"| {heading} | ratio | met | detail |", "|---|---|---|---|"]
    for t in rows:
        met = {True: "yes", False: "**no**", None: "n/a"}[t["met"]]
        lines.append(f"| {t['target']} | {t['ratio']} | {met} | {t['detail']} |")
    return lines
