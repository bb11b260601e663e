"""fp32 ONNX export through optimum-onnx, with dynamic batch and sequence axes.

Every head graph (classification, fill-mask, token classification, question answering) also exposes the
encoder's last hidden state as an extra output: one graph then serves the task's pipeline and AutoModel, and
onnxruntime only computes the outputs asked for.
"""

from __future__ import annotations

import functools
import inspect
import warnings
from pathlib import Path
from typing import Any

import torch
from optimum.exporters.onnx import onnx_export_from_model
from optimum.exporters.onnx.model_patcher import ModelPatcher
from optimum.exporters.tasks import TasksManager


class _HiddenStatePatcher(ModelPatcher):  # type: ignore[misc]  # optimum is untyped: its classes are Any
    def __init__(self, config: Any, model: Any, model_kwargs: Any = None, head_outputs: Any = ("logits",)) -> None:
        super().__init__(config, model, model_kwargs)
        orig = self.orig_forward

        @functools.wraps(orig)  # optimum checks the dummy inputs against this signature
        def forward(*args: Any, **kwargs: Any) -> dict[str, Any]:
            bound = inspect.signature(orig).bind_partial(*args, **kwargs)
            bound.arguments["output_hidden_states"] = True
            bound.arguments["return_dict"] = True
            out = orig(*bound.args, **bound.kwargs)
            return {**{name: out[name] for name in head_outputs}, "last_hidden_state": out.hidden_states[-1]}

        self.patched_forward = forward


def _with_hidden_state(base_config: Any) -> Any:
    base = type(base_config)

    class WithHiddenState(base):  # type: ignore[valid-type,misc]  # a subclass of optimum's config, made at run time
        @property
        def outputs(self) -> dict[str, dict[int, str]]:
            outs = dict(super().outputs)
            outs["last_hidden_state"] = {0: "batch_size", 1: "sequence_length"}
            return outs

        def patch_model_for_export(self, model: Any, model_kwargs: Any = None) -> Any:
            return _HiddenStatePatcher(self, model, model_kwargs, head_outputs=list(super().outputs))

    return WithHiddenState(base_config._config, task=base_config.task)


def export_fp32(model: Any, task: str, out_dir: Path) -> Path:
    """Write ``out_dir/model.onnx`` (fp32, unfused) and return its path."""
    ctor = TasksManager.get_exporter_config_constructor(
        exporter="onnx", model=model, task=task, library_name="transformers"
    )
    onnx_config = ctor(model.config, task=task)
    custom = {"model": _with_hidden_state(onnx_config)} if task != "feature-extraction" else None
    with warnings.catch_warnings():
        # The tracer warns about constants in transformers' mask code on every export; the graph is validated
        # against PyTorch afterwards, which is the check that matters, so the warning is only noise here.
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)  # type: ignore[attr-defined]  # torch.jit re-exports it without __all__
        onnx_export_from_model(
            model, out_dir, task=task, custom_onnx_configs=custom, do_validation=False, no_post_process=True
        )
    return out_dir / "model.onnx"
