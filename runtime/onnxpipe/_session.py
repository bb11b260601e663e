"""The one place that creates onnxruntime sessions: provider check, precision and file format choice, threads,
and the session profile (``default``: fastest; ``low-power``: one thread that does not spin between runs).

A session is configured here once and never changed afterwards, so one session can be shared by threads.
onnxruntime's Python wrapper silently rebuilds a session on CPU when CUDA fails, both while creating it and
in ``run``; we turn both off, because a rebuild under other threads' feet (or a CUDA deployment quietly
running on CPU) is worse than a clear error.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

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


# "onnx": the variant's .onnx file; "ort": its ORT-format copy (onnxpipe export --ort), the file minimal and
# mobile onnxruntime builds load. Both compute the same (the .ort is saved after the runtime's own optimizations).
FORMATS = ("onnx", "ort")


@dataclass(frozen=True)
class Profile:
    """Session settings as data: ``threads`` (None: one per usable core) and onnxruntime session options."""

    threads: int | None
    cpu_mem_arena: bool = True
    config: tuple[tuple[str, str], ...] = ()  # SessionOptions.add_session_config_entry(key, value)
    note: str = ""


# Chosen by measurement (bench/footprint.py, docs/edge.md). "default" is what every session had
# before profiles existed. "low-power" is for a small box that is mostly idle: pool threads that spin after each
# run burn CPU between requests (~2 % of a core in the 2 s after a burst and 31-42 % at 10 requests/s, against
# 0.00 % and 4-5 % without, measured under load), and
# a second thread buys little at batch 1. The memory arena stays on: it is bounded by the largest call
# (max_batch_tokens), and without it onnxruntime's per-run malloc/free left 11-76 MB more resident through the
# pipeline (glibc keeps the freed heap), so "arena off" is no limit here.
PROFILES: dict[str, Profile] = {
    # Pool threads spin at most 200 us before they sleep (session.intra_op.spin_duration_us): a decode step
    # runs hundreds of tiny operators, each a fork/join of the pool. Measured side by side on the quiet 2-core
    # Xeon (bench/results/seq2seq.md): t5-small int8 greedy 1.44-1.45x the tokens/s of onnxruntime's default spin, fp32
    # 1.16x; minilm-sst2 batch 1 unchanged (p50 1.05 against 1.08 ms).
    "default": Profile(
        threads=None,
        config=(("session.intra_op.spin_duration_us", "200"),),
        note="one thread per core, threads spinning up to 200 us: lowest latency on a quiet machine",
    ),
    "low-power": Profile(
        threads=1,
        config=(("session.intra_op.allow_spinning", "0"), ("session.inter_op.allow_spinning", "0")),
        note="one thread, no spinning: ~0 CPU between requests",
    ),
}


def check_profile(profile: str) -> Profile:
    if profile not in PROFILES:
        raise ValueError(f"profile={profile!r} is not one of {list(PROFILES)}")
    return PROFILES[profile]


@dataclass(frozen=True)
class SessionChoice:
    device: str
    precision: str
    format: str = "onnx"


def choose(
    manifest: Manifest, device: str = "cpu", precision: str | None = None, format: str = "onnx"
) -> SessionChoice:
    """Pick the device, precision and file format; raise with the valid choices when the request cannot be met."""
    if device not in DEVICES:
        raise ValueError(f"device={device!r} is not one of {list(DEVICES)}")
    if format not in FORMATS:
        raise ValueError(f"format={format!r} is not one of {list(FORMATS)}")
    choice = _choose(manifest, device, precision)
    if format == "ort":
        _check_ort(manifest, choice)
    return SessionChoice(choice.device, choice.precision, format)


def _check_ort(manifest: Manifest, choice: SessionChoice) -> None:
    ort_file = manifest.variants[choice.precision].ort
    if ort_file is None:
        having = sorted(p for p, v in manifest.variants.items() if v.ort is not None)
        raise PrecisionUnavailableError(
            f"{manifest.folder} has no ORT-format file for {choice.precision!r}"
            + (f" (it has one for {having})" if having else "")
            + ". Use format='onnx', or re-export with --ort: onnxpipe export SOURCE --out DIR --ort"
        )
    if choice.device != "cpu":
        raise ProviderUnavailableError(
            f"format='ort' runs on the CPU provider only: {ort_file.file} was optimized for it at export. "
            f"Use format='onnx' on {choice.device}."
        )
    if _version(ort.__version__) < _version(ort_file.onnxruntime):
        raise ModelLoadError(
            f"{ort_file.file} was written by onnxruntime {ort_file.onnxruntime}; this is {ort.__version__}, and "
            f"onnxruntime reads ORT-format files of its own version or older only. Fix: pip install "
            f"'onnxruntime>={ort_file.onnxruntime}', or use format='onnx'."
        )


def _version(text: str) -> tuple[int, ...]:
    """Major and minor of a version string, ``"1.32.0"`` -> ``(1, 32)`` (patch releases keep the ORT format)."""
    parts = []
    for piece in text.split(".")[:2]:
        digits = "".join(c for c in piece if c.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def _choose(manifest: Manifest, device: str, precision: str | None) -> SessionChoice:
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
# pool keeps both cores busy without padding. fp32/fp16 and fixed-scale int8 are exact in batches; fixed-scale
# int8 of the dynamic quantizer's graph still runs alone, as the faster of the two (alone_is_faster).
EXECUTIONS = ("auto", "alone", "batched")


def batch_dependent(manifest: Manifest, precision: str) -> bool:
    """Whether the variant's result for a text depends on the rest of its batch (dynamic activation scales)."""
    if manifest.task == "text-generation":
        # Greedy decoding turns any difference into another token. The low-bit decoders' kernels round a row
        # differently beside other rows (int4 MatMulNBits on a 135M Llama: 2 of 4 prompts decoded other greedy
        # text in a batch than alone; fp32: none), so only fp32 / fp16 decode in batches.
        return precision not in ("fp32", "fp16")
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
    return (
        "alone"
        if batch_dependent(manifest, choice.precision) or alone_is_faster(manifest, choice.precision)
        else "batched"
    )


def alone_is_faster(manifest: Manifest, precision: str) -> bool:
    """Whether the variant gives the same answers in batches but runs faster alone on CPU: fixed-scale int8
    (the dynamic quantizer's integer GEMMs with calibrated scales) ran about 3x the sentences per second alone on
    the pool than in padded batches (bench/results/int8_cpu.md)."""
    if manifest.task == "text-generation" or precision != "int8":
        return False
    return bool((manifest.variants[precision].recipe or {}).get("method") == "fixed-scales")


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


# The level every session runs at, recorded in the manifest for ORT-format files saved at it (save_ort_format).
# Not "all": its layout (NCHWc) rewrites are specific to the CPU that saves the file.
OPTIMIZATION_LEVEL = "extended"
_LEVELS = {"extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED}


def session_options(threads: int | None = None, profile: str = "default") -> ort.SessionOptions:
    """The SessionOptions of every session: ``profile``'s settings, ``threads`` (when given) over its count."""
    settings = check_profile(profile)
    threads = check_threads(threads if threads is not None else settings.threads)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.enable_cpu_mem_arena = settings.cpu_mem_arena
    for key, value in settings.config:
        opts.add_session_config_entry(key, value)
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # The default profile keeps intra-op spinning on (bounded in time: PROFILES), chosen by measurement
    # (bench/session_options.py, int8 minilm-sst2, 2 cores): with the machine lightly loaded, turning it off costs
    # 39 % at batch 1 (p50 1.32 -> 2.17 ms, the pool's wake-up latency); only when other processes oversubscribe
    # the cores (load 6-11) does off win (6.1 -> 2.1 ms). Arena, memory pattern and optimization level changed
    # nothing measurable in speed; the low-power profile turns spinning and the arena off for idle CPU and memory.
    # The export stage already fused the graph; "extended" re-applies only the cheap rewrites.
    opts.graph_optimization_level = _LEVELS[OPTIMIZATION_LEVEL]
    opts.log_severity_level = 3
    return opts


def save_ort_format(manifest: Manifest, precision: str, dest: Path) -> None:
    """Write ``precision``'s graph to ``dest`` in ORT format, optimized exactly as create_session optimizes it on
    the CPU provider (same level, same disabled optimizers), so the .ort file computes what the .onnx does.

    Example:
        >>> save_ort_format(manifest, "int8", folder / "onnx/model_quantized.ort")
    """
    opts = session_options(threads=1)
    opts.optimized_model_filepath = str(dest)
    opts.add_session_config_entry("session.save_model_format", "ORT")
    choice = SessionChoice("cpu", precision)
    ort.InferenceSession(
        str(manifest.variant_path(precision)),
        sess_options=opts,
        providers=[_PROVIDER["cpu"]],
        **_disabled_optimizers(manifest, choice),
    )


def create_session(
    manifest: Manifest, choice: SessionChoice, threads: int | None = None, profile: str = "default"
) -> ort.InferenceSession:
    """A session of ``choice``'s file with ``profile``'s settings (PROFILES); ``threads`` overrides its count."""
    path = manifest.variant_path(choice.precision, choice.format)
    opts = session_options(threads, profile)
    if choice.format == "ort":
        opts.add_session_config_entry("session.load_model_format", "ORT")
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
