"""Each interop consumer in its own environment, built on first use and reused.

A consumer's environment lives in the machine's test cache, ``$ONNXPIPE_TEST_CACHE/envs/interop/<consumer>-<key>``
(default ``~/.cache/onnxpipe/test-exports``), the key a hash of its pinned requirements and the Python that builds
it, so a second clone on the same machine reuses it instead of building it again (about 3 minutes); the two most
recently used keys of each consumer are kept. ``ONNXPIPE_TEST_CACHE=off`` builds them in the clone, in
``.venv-interop/<consumer>`` (gitignored by ``.venv*/``), as ``$ONNXPIPE_INTEROP_HOME`` names another folder for
them. A ``.ready`` file holding the spec marks a finished build, so a changed pin rebuilds and a build
interrupted half-way is redone, never half-used. Everything comes from the package registries
(pip from PyPI, npm from the npm registry): a fresh CI machine needs nothing installed by hand.

Run ``python tests/interop/envs.py [consumer ...]`` to build them outside pytest (the session fixtures call
the same code).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
from _export_cache import env_home  # noqa: E402  (the one reading of ONNXPIPE_TEST_CACHE)


def _home() -> tuple[Path, bool]:
    """Where the environments live, and whether there they are keyed (shared by every clone on the machine)."""
    return env_home("interop", "ONNXPIPE_INTEROP_HOME", ROOT / ".venv-interop")


HOME, KEYED = _home()
KEEP = 2  # keys kept per consumer in the machine's cache: the one in use and the one before it

# Pins: the versions the consumers were first checked against. onnxruntime is pinned to the runtime's own version, so a
# difference between consumers comes from how they load and feed the file, not from another kernel release.
# torch==2.13.0 is the pin of the export extra (pyproject.toml), resolved the same way as the dev venv's.
ORT = "onnxruntime==1.32.0"
TORCH = "torch==2.13.0"
PYTHON_SPECS = {
    "optimum": [ORT, TORCH, "transformers>=4.45,<4.58", "optimum-onnx==0.1.0"],
    "fastembed": ["fastembed==0.9.1", ORT],
    # sentence-transformers 6.x needs transformers >= 5, and its ONNX backend needs optimum-onnx, whose newest
    # release (0.1.0) needs transformers < 4.58: no 6.x installs with the ONNX backend. 5.7.0 is the newest that
    # does (same ONNX backend code path: SentenceTransformer(folder, backend="onnx")).
    "sentence-transformers": [TORCH, ORT, "transformers>=4.45,<4.58", "sentence-transformers[onnx]==5.7.0"],
    # huggingface_hub 1.x/2.x: transformers 4.x pins <1.0, so the test venv holds 0.36 and this one the 2.x client
    # (numpy: its feature_extraction returns arrays) for the serve tests' InferenceClient calls.
    "huggingface-hub-2": ["huggingface_hub==2.4.0", "numpy"],
}
NODE_SPEC = {"@huggingface/transformers": "4.3.1"}
CONSUMERS = [*PYTHON_SPECS, "transformers.js"]


class EnvBuildError(RuntimeError):
    pass


def _run(cmd: list[str], log: Path, env: dict | None = None, cwd: Path | None = None) -> None:
    with open(log, "a", encoding="utf-8") as f:
        f.write(f"$ {' '.join(cmd)}\n")
        f.flush()
        rc = subprocess.call(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=cwd)
    if rc != 0:
        tail = log.read_text(encoding="utf-8", errors="replace")[-3000:]
        raise EnvBuildError(f"{' '.join(cmd)} exited {rc}; log {log}:\n{tail}")


def _no_cuda_torch(python: Path, log: Path) -> None:
    # An unpinned or wrongly resolved torch brings gigabytes of nvidia-* wheels; refuse such an environment.
    out = subprocess.run(
        [str(python), "-m", "pip", "list", "--format=json"], capture_output=True, text=True, check=True
    ).stdout
    cuda = [p["name"] for p in json.loads(out) if p["name"].lower().startswith("nvidia-")]
    if cuda:
        raise EnvBuildError(
            f"{python.parent.parent} got CUDA packages {cuda}; torch must be the CPU build "
            f"({TORCH}, as the export extra resolves it). See {log}."
        )


def ensure(consumer: str) -> Path:
    """The environment folder of ``consumer`` (one of CONSUMERS), built if missing or out of date."""
    if consumer not in CONSUMERS:
        raise ValueError(f"unknown consumer {consumer!r}; valid: {CONSUMERS}")
    spec = json.dumps(PYTHON_SPECS.get(consumer) or NODE_SPEC, sort_keys=True)
    in_clone = ROOT / ".venv-interop" / consumer
    if KEYED and _ready_file(in_clone) == spec:  # a clone that built its own before the machine cache keeps it
        return in_clone
    where = HOME / (f"{consumer}-{_key(spec)}" if KEYED else consumer)
    ready = where / ".ready"
    HOME.mkdir(parents=True, exist_ok=True)
    # one builder at a time per consumer (two pytest runs, or envs.py beside pytest): the second waits and reuses
    with open(HOME / f".{consumer}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (ready.is_file() and ready.read_text(encoding="utf-8") == spec):
            _build(consumer, where, spec)
        if KEYED:
            (where / ".used").touch()
            _prune(consumer, where)
    return where


def _ready_file(where: Path) -> str | None:
    try:
        return (where / ".ready").read_text(encoding="utf-8")
    except OSError:
        return None


def _key(spec: str) -> str:
    """The pins, and the Python a venv is made from (its interpreter is linked, not copied) and the platform."""
    made_by = [spec, sys.version, sys.base_prefix, platform.machine()]
    return hashlib.sha256(json.dumps(made_by).encode()).hexdigest()[:16]


def _prune(consumer: str, keep: Path) -> None:
    """Delete the consumer's environments beyond the KEEP most recently used (renamed aside, then removed)."""

    def used(p: Path) -> float:
        return (p / ".used").stat().st_mtime if (p / ".used").exists() else 0.0

    mine = [p for p in HOME.iterdir() if re.fullmatch(re.escape(consumer) + "-[0-9a-f]{16}", p.name) and p != keep]
    others = sorted(mine, key=used, reverse=True)
    for old in others[KEEP - 1 :]:
        trash = HOME / f".trash-{old.name}-{os.getpid()}"
        old.rename(trash)
        shutil.rmtree(trash, ignore_errors=True)


def _build(consumer: str, where: Path, spec: str) -> None:
    ready = where / ".ready"
    shutil.rmtree(where, ignore_errors=True)
    where.mkdir(parents=True)
    log = where / "build.log"
    if consumer == "transformers.js":
        if shutil.which("npm") is None:
            raise EnvBuildError(
                "the transformers.js check needs node >= 18 and npm on PATH (apt-get install nodejs npm)"
            )
        (where / "package.json").write_text(
            json.dumps(
                {"name": "onnxpipe-interop", "private": True, "type": "module", "dependencies": NODE_SPEC}, indent=2
            )
        )
        # onnxruntime-node's post-install step downloads from a host outside the registries; skipping it keeps
        # the CPU binaries bundled in the npm package, which is all this check uses.
        env = {**os.environ, "ONNXRUNTIME_NODE_INSTALL": "skip"}
        _run(["npm", "install", "--no-audit", "--no-fund", "--loglevel=error"], log, env=env, cwd=where)
    else:
        _run([sys.executable, "-m", "venv", str(where)], log)
        python = where / "bin" / "python"
        _run([str(python), "-m", "pip", "install", "--quiet", *PYTHON_SPECS[consumer]], log)
        _no_cuda_torch(python, log)
    ready.write_text(spec, encoding="utf-8")


# tiktoken's cl100k_base, which LangChain's OpenAIEmbeddings loads by default, is downloaded from OpenAI's storage,
# out of reach here. js-tiktoken (npm) ships the same ranks in its own layout; rewritten in tiktoken's, the file's
# sha256 is the one tiktoken checks on load, so the encoding is OpenAI's own.
JS_TIKTOKEN = "js-tiktoken@1.0.21"
CL100K_URL = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"
CL100K_SHA256 = "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"


def tiktoken_cache() -> Path:
    """A folder for TIKTOKEN_CACHE_DIR holding cl100k_base where tiktoken looks for its download (built once)."""
    where = HOME / "tiktoken"
    target = where / hashlib.sha1(CL100K_URL.encode()).hexdigest()  # tiktoken's cache key
    HOME.mkdir(parents=True, exist_ok=True)
    with open(HOME / ".tiktoken.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if target.is_file():
            return where
        if shutil.which("npm") is None:
            raise EnvBuildError("the tiktoken encoding comes from npm's js-tiktoken: install node and npm")
        shutil.rmtree(where, ignore_errors=True)
        where.mkdir(parents=True)
        log = where / "build.log"
        _run(["npm", "pack", JS_TIKTOKEN, "--pack-destination", str(where), "--loglevel=error"], log, cwd=where)
        tarball = next(where.glob("js-tiktoken-*.tgz"))
        _run(["tar", "-xzf", str(tarball), "-C", str(where), "package/dist/ranks/cl100k_base.js"], log)
        source = (where / "package/dist/ranks/cl100k_base.js").read_text(encoding="utf-8")
        ranks: dict[str, int] = {}
        for line in filter(
            None, json.loads(source.removeprefix("export default ").rstrip("; \n"))["bpe_ranks"].split("\n")
        ):
            _, first, *tokens = line.split(" ")  # "<tag> <rank of the first> <base64 token> ..."
            ranks.update((t, int(first) + k) for k, t in enumerate(tokens))
        body = "".join(f"{t} {r}\n" for t, r in sorted(ranks.items(), key=lambda kv: kv[1])).encode()
        if hashlib.sha256(body).hexdigest() != CL100K_SHA256:
            raise EnvBuildError(f"{JS_TIKTOKEN}'s cl100k_base does not rebuild tiktoken's file (sha256 differs)")
        target.write_bytes(body)
    return where


def python_of(consumer: str) -> Path:
    return ensure(consumer) / "bin" / "python"


if __name__ == "__main__":
    for name in sys.argv[1:] or CONSUMERS:
        print(name, ensure(name), flush=True)
