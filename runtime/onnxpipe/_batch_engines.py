"""The batch job's engines, by name: a plain registry that each engine fills in when its module is imported.

``_batch_job`` registers ``local`` and runs whatever is registered; ``onnxpipe.ray`` registers ``ray``. So the
job never imports an engine's module (Ray's imports the job, not the other way round), and an engine that is
not installed costs nothing. ``onnxpipe.ray.run_batch`` and ``onnxpipe batch --engine ray`` import the Ray
module first; code that calls the job directly imports ``onnxpipe.ray`` itself.

An engine is ``engine(job, path, fmt, batch_rows, threads, *, actors, cpus_per_actor, retries)``, returning
the job's output tables in input order (``_batch_job.run_batch`` documents the arguments).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from .errors import BatchJobError

Engine = Callable[..., Iterator[Any]]

ENGINES: dict[str, Engine] = {}
# Engines that come with onnxpipe but live in a module of their own, and what makes them available: named in
# the error only; nothing here imports them.
SHIPPED = {"ray": "import onnxpipe.ray first (from onnxpipe.ray import run_batch), after pip install 'onnxpipe[ray]'"}


def register_engine(name: str, engine: Engine) -> None:
    """Make ``engine`` available as ``run_batch(engine=name)``; registering a name again replaces it."""
    ENGINES[name] = engine


def get_engine(name: str) -> Engine:
    if name in ENGINES:
        return ENGINES[name]
    hint = f"; to use {name!r}, {SHIPPED[name]}" if name in SHIPPED else ""
    raise BatchJobError(f"engine {name!r} is not one of {sorted(ENGINES)}{hint}")
