"""The one task table (onnxpipe._tasks) and everything derived from it agree across both halves.

Each check names the table a new task must be added to; removing an entry from either half fails here.
"""

from __future__ import annotations

import argparse
import inspect

import pytest

import onnxpipe
from onnxpipe import errors
from onnxpipe._cli_tasks import add_task_arguments, implied_task, task_kwargs
from onnxpipe._pipelines import Pipeline
from onnxpipe._tasks import ALIASES, GRAPHS, TABLE, TASKS, canonical_task, folder_task, served_tasks


@pytest.mark.parametrize("name", sorted(TABLE))
def test_every_task_record_is_complete(name):
    t = TABLE[name]
    assert t.name == name
    assert inspect.isclass(t.pipeline) and issubclass(t.pipeline, Pipeline)
    assert t.pipeline.task == name, "the pipeline class names its task as the table does"
    assert t.graph in GRAPHS, f"{name}: graph {t.graph!r} is not in GRAPHS"
    assert set(t.pipeline.output_names) <= {*GRAPHS[t.graph].outputs, "last_hidden_state"}, (
        f"{name}: its pipeline reads outputs its graph does not have"
    )
    assert t.default_model and t.default_source, f"{name}: no default model (pipeline({name!r}) needs one)"
    # The folder that serves the task is one a graph of its kind lists (conditionally for needs_label).
    labels = {0: f"{t.needs_label}ment"} if t.needs_label else None
    assert folder_task(name) in served_tasks(t.graph, labels)


def test_public_tasks_and_aliases_are_derived_from_the_table():
    assert onnxpipe.TASKS == TASKS == {n: t.pipeline for n, t in TABLE.items()}
    for alias, name in ALIASES.items():
        assert canonical_task(alias) == name and alias not in TABLE
    with pytest.raises(errors.UnknownTaskError, match="valid tasks"):
        canonical_task("summarisation")


def test_every_graph_serves_a_task():
    served = {t.graph for t in TABLE.values()}
    assert served == set(GRAPHS), f"graphs no task uses: {set(GRAPHS) - served}"


@pytest.mark.torch
def test_export_half_covers_every_graph_and_task_name():
    from onnxpipe_export import _registry

    assert set(_registry.MODEL_CLASSES) == set(GRAPHS), "onnxpipe_export._registry.MODEL_CLASSES needs every graph"
    for name, t in TABLE.items():
        # Every task (and alias) can be named at export, and exports the graph the runtime expects.
        assert _registry.canonical_export_task(name) == t.graph
        for alias in t.aliases:
            assert _registry.canonical_export_task(alias) == t.graph
        assert _registry.canonical_export_task(folder_task(name)) == t.graph
    import transformers

    for graph, cls in _registry.MODEL_CLASSES.items():
        assert hasattr(transformers, cls), f"{graph}: transformers has no {cls}"


@pytest.mark.torch
def test_test_checkpoints_cover_every_task():
    import _tiny

    missing = [n for n, t in TABLE.items() if t.graph not in _tiny.HEADS and n not in _tiny.HEADS]
    assert not missing, f"tests/_tiny.py HEADS has no checkpoint head for {missing}"


def _parse(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_task_arguments(p)
    return p.parse_args(list(argv))


@pytest.mark.parametrize("name", [n for n, t in TABLE.items() if t.options])
def test_cli_options_come_from_the_table(name):
    t = TABLE[name]

    def argv_of(o):
        return [o.flag] if o.store_true else [o.flag, (o.choices or ("x",))[0]]

    required = [a for r in t.options if r.required for a in argv_of(r)]
    if required:
        with pytest.raises(ValueError, match=f"{name} needs {required[0]}"):
            task_kwargs(name, _parse())
    for o in t.options:
        args = _parse(*(required if o.required else [*required, *argv_of(o)]))
        if o.implies_task:
            assert implied_task(args) == name
        if t.cli_input != "question-context":
            assert o.kwarg in task_kwargs(name, args)
        other = next(n for n in TABLE if n != name and not any(x.flag == o.flag for x in TABLE[n].options))
        with pytest.raises(ValueError, match=f"is for {name}, not {other}"):
            task_kwargs(other, args)


def test_a_missing_default_model_says_how_to_export_it_and_exports_nothing(monkeypatch, tmp_path):
    # Even with the export extra installed, pipeline() never exports or downloads on its own.
    import sys

    monkeypatch.setenv("ONNXPIPE_HOME", str(tmp_path))
    before = set(sys.modules)
    with pytest.raises(
        errors.ModelNotFoundError, match="onnxpipe export distilbert/distilroberta-base --task fill-mask"
    ):
        onnxpipe.pipeline("fill-mask")
    assert not [m for m in set(sys.modules) - before if m.startswith(("onnxpipe_export", "torch"))]
    assert list(tmp_path.iterdir()) == []
