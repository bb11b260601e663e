"""The one place that creates onnxruntime sessions: provider check, precision choice, threads.

A session is configured here once and never changed afterwards, so one session can be shared by threads.
onnxruntime's Python wrapper silently rebuilds a session on CPU when CUDA fails, both while creating it and
in ``run``; we turn both off, because a rebuild under other threads' feet (or a CUDA deployment quietly
running on CPU) is worse than a clear error.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import onnxruntime as ort

from ._inputs import int_option
from ._manifest import Manifest
from .errors import ModelLoadError, PrecisionUnavailableError, ProviderUnavailableError

log = logging.getLogger("onnxpipe")

DEVICES = ("cpu", "cuda", "auto")
_PROVIDER = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}
# Dynamic INT8 is a CPU recipe: on CUDA it runs several times slower than fp32, so it is never a CUDA default.
# int4 (4-bit weight-only MatMulNBits, decoder folders) is the CPU default where there is no int8 variant.
_PRECISION_ORDER = {"cpu": ("int8", "int4", "fp32", "fp16"), "cuda": ("fp16", "fp32")}


@dataclass(frozen=True)
class SessionChoice:
    device: str
    precision: str


def choose(manifest: Manifest, device: str = "cpu", precision: str | None = None) -> SessionChoice:
    """Pick the device and precision; raise with the valid choices when the request cannot be met."""
    if device not in DEVICES:
        raise ValueError(f"device={device!r} is not one of {list(DEVICES)}")
    available = ort.get_available_providers()
    if device == "auto":
        device = "cuda" if _PROVIDER["cuda"] in available else "cpu"
        log.info("device='auto' chose %s (providers: %s)", device, ", ".join(available))
    elif device == "cuda" and _PROVIDER["cuda"] not in available:
        raise ProviderUnavailableError(
            f"device='cuda' needs CUDAExecutionProvider, which this onnxruntime does not have. "
            f"Available providers: {', '.join(available)}. Fix: pip uninstall -y onnxruntime && "
            "pip install onnxruntime-gpu (the two packages must not be installed together), or use device='cpu'."
        )
    variants = manifest.variants
    if precision is None:
        for p in _PRECISION_ORDER[device]:
            if p in variants:
                return SessionChoice(device, p)
        raise PrecisionUnavailableError(
            f"{manifest.folder} has variants {sorted(variants)}, none usable on {device} "
            f"({', '.join(_PRECISION_ORDER[device])}). Re-export with --precision {_PRECISION_ORDER[device][0]}."
        )
    if precision not in variants:
        raise PrecisionUnavailableError(
            f"{manifest.folder} has no {precision!r} variant; it has {sorted(variants)}. "
            f"Pick one of those, or re-export with --precision {precision}."
        )
    return SessionChoice(device, precision)


# How a pipeline runs its inputs. "batched": length-sorted padded batches (plan_batches). "alone": every sequence
# as its own batch of one, several at once from a thread pool. Dynamic int8 scales each matmul's activations
# by the whole batch tensor, so a text's answer depends on its batch-mates (minilm-sst2, SST-2 dev in batches of
# 32: 15 of 872 labels flipped, max score change 0.48); alone, every text gets exactly its single-input answer,
# and on 2 AMD cores it was also the faster of the two (440 vs 308 sentences/s, bench/README.md), because the
# pool keeps both cores busy without padding. fp32/fp16 and fixed-scale int8 are exact in batches: batched.
EXECUTIONS = ("auto", "alone", "batched")


def batch_dependent(manifest: Manifest, precision: str) -> bool:
    """Whether the variant's result for a text depends on the rest of its batch (dynamic activation scales)."""
    if precision != "int8":
        return False
    recipe = manifest.variants[precision].recipe or {}
    return bool(recipe.get("method", "dynamic") == "dynamic")  # a folder without a recipe predates the others


def choose_execution(manifest: Manifest, choice: SessionChoice, execution: str = "auto") -> str:
    """ "alone" or "batched" for ``execution`` ("auto": alone exactly where batches would change answers)."""
    if execution not in EXECUTIONS:
        raise ValueError(f"execution={execution!r} is not one of {list(EXECUTIONS)}")
    if execution != "auto":
        return execution
    return "alone" if batch_dependent(manifest, choice.precision) else "batched"


def default_threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


# threads above this many per usable core are refused: onnxruntime starts every thread of the pool at session
# creation (threads=5000 hung, and segfaulted under a memory limit), and past the core count they only contend.
_THREADS_PER_CORE = 4


def check_threads(threads: int | None) -> int:
    """``threads`` (None: one per usable core) as an int within 1..4 x the usable cores; ValueError otherwise."""
    cores = default_threads()
    if threads is None:
        return cores
    return int_option(
        "threads",
        threads,
        1,
        _THREADS_PER_CORE * cores,
        f"{_THREADS_PER_CORE} x the {cores} usable cores; None gives one per core",
    )


def _disabled_optimizers(manifest: Manifest, choice: SessionChoice) -> dict[str, list[str]]:
    # Load-time fusions the export measured as slower for this file on the CPU provider (the INT8 recipe's
    # cpu_disabled_optimizers, e.g. SkipLayerNormFusion); other providers have their own kernels, so they keep
    # every fusion.
    names = manifest.variants[choice.precision].cpu_disabled_optimizers if choice.device == "cpu" else ()
    return {"disabled_optimizers": list(names)} if names else {}


def create_session(manifest: Manifest, choice: SessionChoice, threads: int | None = None) -> ort.InferenceSession:
    threads = check_threads(threads)
    path = manifest.variant_path(choice.precision)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # Intra-op spinning stays on (onnxruntime's default), chosen by measurement (bench/session_options.py, int8
    # minilm-sst2, 2 cores): with the machine lightly loaded, turning it off costs 39 % at batch 1 (p50 1.32 ->
    # 2.17 ms, the pool's wake-up latency); only when other processes oversubscribe the cores (load 6-11) does
    # off win (6.1 -> 2.1 ms). Arena, memory pattern and optimization level changed nothing measurable.
    # The export stage already fused the graph; "extended" re-applies only the cheap rewrites.
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    opts.log_severity_level = 3
    providers = [_PROVIDER[choice.device]]
    if choice.device == "cuda":
        providers.append(_PROVIDER["cpu"])  # shape ops that CUDA does not implement; not a fallback
    try:
        # enable_fallback=0: no silent retry on CPU while creating (older onnxruntime ignores the keyword).
        session = ort.InferenceSession(
            str(path),
            sess_options=opts,
            providers=providers,
            enable_fallback=0,
            **_disabled_optimizers(manifest, choice),
        )
    except Exception as e:  # onnxruntime raises its own untyped exceptions (Fail, InvalidGraph, ...)
        if choice.device == "cuda" and "CUDA" in str(e):
            raise ProviderUnavailableError(f"CUDAExecutionProvider failed to start for {path}: {e}") from e
        detail = str(e).strip().rstrip(".")[:500]
        raise ModelLoadError(
            f"onnxruntime {ort.__version__} could not load {path}: {detail}. The file is damaged or not ONNX: "
            f"{manifest.hint()}. If it passed the sha256 check (verify=True, the default), the export may need a "
            "newer onnxruntime: pip install -U onnxruntime"
        ) from e
    if hasattr(session, "disable_fallback"):
        session.disable_fallback()  # and none in run()
    if session.get_providers()[0] != _PROVIDER[choice.device]:
        raise ProviderUnavailableError(
            f"asked for {_PROVIDER[choice.device]} but onnxruntime created the session on "
            f"{session.get_providers()}; check the CUDA / cuDNN installation (onnxruntime-gpu's requirements)."
        )
    return session
