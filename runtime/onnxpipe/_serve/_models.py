"""The served model folders, addressed by name: one session and tokenizer per folder, one pipeline per task.

A folder serves every task its exported graph supports (a text-classification folder with hidden states
also serves sentence embeddings; an NLI folder also serves zero-shot): the pipelines share the folder's one
onnxruntime session, so serving a task more costs no memory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any

from .._manifest import Manifest, load_manifest
from .._model import OnnxModel
from .._pipelines import Pipeline
from .._resolve import resolve_model
from .._seq2seq import Seq2SeqModel
from .._session_options import SessionOptions
from .._tasks import TABLE, folder_task
from .._tokenizer import AutoTokenizer
from ._limits import RequestError


@dataclass
class ServedModel:
    """One model folder: its name, manifest and a pipeline per task it serves."""

    name: str
    manifest: Manifest
    model: OnnxModel
    pipelines: dict[str, Pipeline] = field(default_factory=dict)

    @property
    def main_task(self) -> str:
        """The task the folder was exported for, which answers ``POST /`` and requests without ``model``: a
        feature-extraction folder's is sentence embeddings, an NLI classifier's zero-shot; the other tasks it
        serves (a classifier's hidden states as embeddings) are reached by naming the model."""
        task = self.manifest.task
        if task == "feature-extraction" and "sentence-embeddings" in self.pipelines:
            return "sentence-embeddings"
        if task == "text-classification" and "zero-shot-classification" in self.pipelines:
            return "zero-shot-classification"
        if task == "text-classification" and "rerank" in self.pipelines:
            return "rerank"
        return task

    def info(self, expose_paths: bool = False) -> dict[str, Any]:
        """The manifest figures ``GET /info`` shows for this model: names only, unless ``expose_paths`` (the
        server's ``--expose-paths``) adds the folder's path and the validation data's path as recorded; any
        client can read /info, and a path tells it the machine's layout (user names, mounts)."""
        data = self.manifest.to_dict()
        keep = (
            "architecture",
            "format_version",
            "hidden_size",
            "max_length",
            "labels",
            "pooling",
            "problem_type",
            "validation_data",
        )
        out = {k: data[k] for k in keep if k in data}
        validation = out.get("validation_data")
        if not expose_paths and isinstance(validation, dict) and isinstance(validation.get("file"), str):
            out["validation_data"] = {**validation, "file": PurePath(validation["file"]).name}
        if expose_paths:
            out["folder"] = str(self.manifest.folder)
        tokenizer = next(iter(self.pipelines.values())).tokenizer
        out.update(
            name=self.name,
            tasks=sorted(self.pipelines),
            device=self.model.device,
            precision=self.model.precision,
            max_input_length=tokenizer.model_max_length,
            main_task=self.main_task,
        )
        return out


def parse_model_arg(arg: str) -> tuple[str, str]:
    """``NAME=PATH`` or ``PATH`` (named after its folder) -> (name, path).

    >>> parse_model_arg("sst2=models/minilm-sst2")
    ('sst2', 'models/minilm-sst2')
    >>> parse_model_arg("models/minilm-sst2")
    ('minilm-sst2', 'models/minilm-sst2')
    """
    name, sep, path = arg.partition("=")
    if sep and name and path and "/" not in name:
        return name, path
    return Path(os.path.normpath(arg)).name, arg


def load_model(
    name: str,
    path: str,
    options: SessionOptions = SessionOptions(),
    max_input_length: int | None = None,
) -> ServedModel:
    """Load one folder as ``options`` say and build a pipeline for every task it serves (tokenizer capped at
    ``max_input_length``)."""
    manifest = load_manifest(resolve_model(path), verify=options.verify)
    tasks = [task for task in TABLE if folder_task(task) in manifest.tasks]
    # One load for every task the folder serves: an encoder-decoder's summarization, translation and
    # text2text-generation pipelines share one encoder and one decoder session.
    loaded = TABLE[tasks[0]].pipeline.load_model(manifest, options) if tasks else OnnxModel(manifest, options)
    model = loaded.encoder if isinstance(loaded, Seq2SeqModel) else loaded
    tokenizer = AutoTokenizer.from_manifest(manifest)
    if max_input_length is not None and max_input_length < tokenizer.model_max_length:
        # The runtime's own input policy then truncates, or refuses with InputTooLongError, at the server's cap.
        tokenizer = AutoTokenizer(tokenizer.backend.to_str(), max_input_length, manifest.inputs, manifest.pad_token_id)
    # Made lazily, these landed on the first requests, on the event loop: the untruncated tokenizer copy
    # (requests truncate only when they ask) took ~35 ms of the GIL, and the lane session ~100 ms of a core; the
    # first burst's 429s took 25-45 ms instead of 3-6 ms (bench/serve_load.py's overload, first round).
    tokenizer.warm_up()
    model.warm_up()
    served = ServedModel(name, manifest, model)
    for task in tasks:
        served.pipelines[task] = TABLE[task].pipeline(loaded, tokenizer)
    # A classifier with one label scores a pair: a cross-encoder, which /rerank serves with the same pipeline.
    if "text-classification" in served.pipelines and len(manifest.labels) == 1:
        served.pipelines["rerank"] = served.pipelines["text-classification"]
    return served


RERANK_HINT = (
    "rerank needs a cross-encoder: a pair model with one label, exported with onnxpipe export --task "
    "text-classification (a bi-encoder's embeddings compare texts through /similarity)"
)


class ModelSet:
    """Served models by name; ``find(task, name)`` is the lookup every endpoint uses.

    Example:
        >>> models = ModelSet([load_model("sst2", "models/minilm-sst2")])
        >>> models.find("text-classification", None).name
        'sst2'
    """

    def __init__(self, models: list[ServedModel]):
        self.by_name: dict[str, ServedModel] = {}
        for m in models:
            if m.name in self.by_name:
                raise ValueError(f"two models are named {m.name!r}; name them: onnxpipe serve NAME=PATH ...")
            self.by_name[m.name] = m

    def find(self, task: str | None, name: Any) -> ServedModel:
        """The model called ``name`` (or, when None, ``default(task)``); 422/404 saying what exists."""
        if name is not None:
            model = self.by_name.get(name) if isinstance(name, str) else None
            if model is None:
                raise RequestError(422, f"model={name!r} is not served here; served models: {sorted(self.by_name)}")
            if task is not None and task not in model.pipelines:
                hint = f"; {RERANK_HINT}" if task == "rerank" else ""
                raise RequestError(
                    422,
                    f"model {name!r} does not serve {task}; it serves {sorted(model.pipelines)}. "
                    f"Models serving {task}: {self.serving(task)}{hint}",
                )
            return model
        if task is None:
            return next(iter(self.by_name.values()))
        model = self.default(task)
        if model is None:
            served = ", ".join(f"{n}: {sorted(m.pipelines)}" for n, m in self.by_name.items())
            if self.serving(task):
                raise RequestError(
                    422,
                    f"no served model has {task} as its main task, and several serve it besides theirs "
                    f'({self.serving(task)}); name one with "model" (served: {served})',
                )
            hint = f"; {RERANK_HINT}" if task == "rerank" else ""
            raise RequestError(
                404,
                f"no served model does {task}; start the server with a model folder exported for it "
                f"(served: {served}){hint}",
                "NotFound",
            )
        return model

    def default(self, task: str) -> ServedModel | None:
        """The model that answers ``task`` when a request names none: the first whose main task it is; else
        the only model serving it (an embedding request never reaches a classifier's hidden states while
        another model is served); else None."""
        for model in self.by_name.values():  # an embedding model's token states are its main task's too
            if model.main_task == task or (task, model.main_task) == ("feature-extraction", "sentence-embeddings"):
                return model
        serving = self.serving(task)
        embeddings = task in ("sentence-embeddings", "feature-extraction")
        if len(serving) == 1 and (not embeddings or len(self.by_name) == 1):
            return self.by_name[serving[0]]
        return None

    def first(self) -> ServedModel:
        return next(iter(self.by_name.values()))

    def serving(self, task: str) -> list[str]:
        return [n for n, m in self.by_name.items() if task in m.pipelines]
