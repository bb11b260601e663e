"""Run the worktree's runtime on a model folder under one of three CPUs and get back what it computed.

    >>> run_on("haswell", "models/minilm-sst2", "int8", ["a fine film"], "probabilities").shape
    (1, 2)

- ``native``: this machine's CPU, the test environment's Python.
- ``native-pinned``: the same, with the ARM64 side's onnxruntime release (the reference of ``arm64``).
- ``haswell``: the same Python under ``qemu-x86_64 -cpu Haswell``: x86 with AVX2 and FMA but no AVX-512 and no
  VNNI, so onnxruntime takes its AVX2 int8 kernels (u8 x s8 pairs summed in 16 bits, saturating).
- ``arm64``: Debian's ARM64 Python with aarch64 wheels (provision.py) under ``qemu-aarch64-static -cpu
  neoverse-n1`` (Graviton 2: ARMv8.2 with the int8 dot product, no SVE, no i8mm).

Each call of ``run_jobs`` is one fresh process executing runner.py on a list of jobs (model folders: one thread,
each text alone; ONNX graphs: onnxruntime alone), so a CPU's interpreter and onnxruntime start once for all of
them; the runtime comes from this checkout's ``runtime/`` on PYTHONPATH. Used by tests/test_cpus_emulated.py
(one process per CPU for the whole tier) and bench/cpu_agreement.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import provision  # its sibling: callers put tests/emulated on sys.path, as the interop suite does for envs

CPUS = ("native", "haswell", "arm64", "native-pinned")
# What each emulated CPU is compared with. The ARM64 side runs an older onnxruntime (provision.ARM64_ORT): its
# reference is this CPU with that same release, so the comparison measures the CPU alone.
REFERENCE = {"haswell": "native", "arm64": "native-pinned"}
HERE = Path(__file__).resolve().parent
RUNNER = HERE / "runner.py"
RUNTIME = provision.ROOT / "runtime"
# Haswell without the features QEMU's TCG cannot emulate and warns about on every start (TSX, PCID, x2APIC,
# TSC deadline): none of them changes which onnxruntime kernels run.
HASWELL_CPU = "Haswell,-pcid,-x2apic,-tsc-deadline,-hle,-invpcid,-rtm"
# Not "max": Debian's QEMU 7.2 computes SME's integer outer product (SMOPA) wrongly, and onnxruntime sends
# DynamicQuantizeMatMul to its SME kernels wherever the CPU reports SME, so int8 answers there are the
# emulator's garbage (docs/performance.md, "INT8 and the CPU"). Neoverse N1 has no SME (nor SVE, nor i8mm).
ARM64_CPU = "neoverse-n1"
# Emulation is 10-100x slower than the host: a run that takes longer than this is stuck, not slow.
TIMEOUT_S = 1800


class EmulatedRunError(RuntimeError):
    pass


def command(cpu: str, arm64_cpu: str = ARM64_CPU) -> tuple[list[str], dict[str, str]]:
    """The argv prefix that starts a Python under ``cpu``, and the environment it needs."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "QEMU_"))}
    env["PYTHONPATH"] = str(RUNTIME)
    if cpu == "native":
        return [sys.executable], env
    if cpu == "native-pinned":
        env["PYTHONPATH"] = f"{provision.ensure_native_pinned()}{os.pathsep}{RUNTIME}"
        return [sys.executable], env
    if cpu == "haswell":
        qemu = provision.ensure_qemu()["qemu-x86_64"]
        return [qemu, "-cpu", HASWELL_CPU, sys.executable], env
    if cpu == "arm64":
        qemu = provision.ensure_qemu()["qemu-aarch64-static"]
        where = provision.ensure_arm64()
        env["PYTHONPATH"] = f"{where / 'site'}{os.pathsep}{RUNTIME}"
        env["QEMU_LD_PREFIX"] = str(where / "root")
        return [qemu, "-cpu", arm64_cpu, str(provision.arm64_python(where))], env
    raise ValueError(f"cpu {cpu!r}: one of {CPUS}")


def run_script(cpu: str, argv: list[str], arm64_cpu: str = ARM64_CPU) -> None:
    """Run a Python script with ``argv`` under ``cpu``; raise with its output's tail if it fails."""
    prefix, env = command(cpu, arm64_cpu)
    proc = subprocess.run([*prefix, *argv], env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    if proc.returncode != 0:
        raise EmulatedRunError(
            f"{cpu}: {' '.join(prefix + argv)} exited {proc.returncode}:\n{(proc.stdout + proc.stderr)[-3000:]}"
        )


def folder_job(folder: str | Path, precision: str, texts: list[str], task: str = "probabilities") -> dict[str, Any]:
    """A job of ``run_jobs``: the runtime on ``folder``, one row per text (runner.TASKS says what a row is)."""
    return {"folder": str(folder), "precision": precision, "task": task, "texts": list(texts)}


def graph_job(graph: str | Path, feeds: dict[str, np.ndarray]) -> dict[str, Any]:
    """A job of ``run_jobs``: onnxruntime alone on an ONNX file and ``feeds``; its outputs by name."""
    return {"graph": str(graph), "feeds": feeds}


def run_jobs(cpu: str, jobs: list[dict[str, Any]], arm64_cpu: str = ARM64_CPU) -> tuple[list[Any], dict[str, Any]]:
    """Every job (``folder_job``, ``graph_job``) in one process under ``cpu``, so the interpreter and onnxruntime
    start once per CPU: each job's result (an array for a folder job, a dict of output arrays for a graph job) in
    order, and the versions that side ran (onnxruntime, numpy, Python, machine)."""
    with tempfile.TemporaryDirectory(prefix="onnxpipe-cpus-") as tmp:
        listed = []
        for i, job in enumerate(jobs):
            if "feeds" in job:
                inputs = Path(tmp) / f"in{i}.npz"
                np.savez(inputs, **job["feeds"])
                job = {"graph": job["graph"], "inputs": str(inputs)}
            listed.append(job)
        jobs_file, out = Path(tmp) / "jobs.json", Path(tmp) / "out.npz"
        jobs_file.write_text(json.dumps(listed), encoding="utf-8")
        run_script(cpu, [str(RUNNER), str(jobs_file), str(out)], arm64_cpu)
        results: list[Any] = [{} if "graph" in job else None for job in listed]
        with np.load(out) as got:
            for key in got.files:
                index, _, name = key.partition("/")
                if name:
                    results[int(index)][name] = got[key]
                else:
                    results[int(index)] = got[key]
        return results, json.loads(out.with_suffix(".json").read_text(encoding="utf-8"))


def run_graph(cpu: str, graph: str | Path, feeds: dict[str, np.ndarray], arm64_cpu: str = ARM64_CPU) -> dict[str, Any]:
    """Run an ONNX file on ``feeds`` with onnxruntime alone under ``cpu``: its outputs by name, and
    ``"onnxruntime"``, the version that ran it."""
    results, versions = run_jobs(cpu, [graph_job(graph, feeds)], arm64_cpu)
    return {**results[0], "onnxruntime": versions["onnxruntime"]}


def run_with_versions(
    cpu: str,
    folder: str | Path,
    precision: str,
    texts: list[str],
    task: str = "probabilities",
    arm64_cpu: str = ARM64_CPU,
) -> tuple[np.ndarray, dict[str, Any]]:
    """``run_on``'s array, and the versions that side ran (onnxruntime, numpy, Python, machine)."""
    results, versions = run_jobs(cpu, [folder_job(folder, precision, texts, task)], arm64_cpu)
    return results[0], versions


def run_on(cpu: str, folder: str | Path, precision: str, texts: list[str], task: str = "probabilities") -> np.ndarray:
    """One row per text: class probabilities, logits or mean-pooled embeddings (runner.TASKS) under ``cpu``."""
    return run_with_versions(cpu, folder, precision, texts, task)[0]


def emulator_versions() -> dict[str, str]:
    """The first line of ``--version`` of each QEMU program the tier runs."""
    out = {}
    for name, path in provision.ensure_qemu().items():
        if name.startswith("qemu"):
            text = subprocess.run([path, "--version"], capture_output=True, text=True, check=True).stdout
            out[name] = text.splitlines()[0]
    return out
