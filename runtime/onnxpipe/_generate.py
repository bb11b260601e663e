"""The generation loop, in numpy, around one onnxruntime session of a decoder graph with past key values.

The graph (optimum's text-generation-with-past layout) takes ``input_ids``, ``attention_mask`` over past and
new tokens, ``position_ids`` (Llama-style graphs and GPT-2 alike) and ``past_key_values.N.key/value``; it
returns ``logits`` and ``present.N.key/value``. The first call (the prompt) gets empty past tensors; every
later call feeds one token per row.

The cache never passes through numpy: it lives in ``OrtValue``s bound with IO binding, so no step copies or
converts it in Python (``session.run`` would copy every present tensor into a new numpy array and back, each
step). Two layouts, read from the manifest (``generation.graph.cache``):

* ``shared-buffer`` (the fused Llama-family graph, GroupQueryAttention): one buffer per layer and key/value,
  allocated once for the prompt plus ``max_new_tokens`` and bound as both the past input and the present
  output; the operator writes each step's keys into it in place, so nothing grows or is copied per step.
* ``concat`` (optimum's graph, GPT-2): the graph concatenates past and new keys into fresh present tensors,
  which the next step binds as its past.

Batches are left-padded, so the last column is every row's newest token and one logits row per sequence is
read after each call.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._model import OnnxModel
from ._sampling import Sampling, choose, penalize
from .errors import InputTooLongError, ManifestError

_KV_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}


@dataclass(frozen=True)
class DecoderGraph:
    """What the loop needs to know about a decoder graph, read from the session itself."""

    past: tuple[str, ...]  # past_key_values.N.key / .value, layer by layer
    present: tuple[str, ...]  # the matching outputs
    kv_heads: int
    head_dim: int
    kv_type: type
    position_ids: bool
    shared_buffer: bool = False  # past and present are one preallocated buffer per layer (GroupQueryAttention)


def describe(model: OnnxModel) -> DecoderGraph:
    """Read the past/present names, key/value shape and type from ``model``'s session; refuse other graphs."""
    inputs = {i.name: i for i in model.session.get_inputs()}
    past = tuple(
        sorted(
            (n for n in inputs if n.startswith("past_key_values.")),
            key=lambda n: (int(n.split(".")[1]), n.endswith(".value")),
        )
    )
    outputs = {o.name for o in model.session.get_outputs()}
    present = tuple(n.replace("past_key_values.", "present.") for n in past)
    missing = [n for n in present if n not in outputs]
    if not past or missing or "logits" not in outputs:
        raise ManifestError(
            f"{model.manifest.folder} is not a decoder graph with a key/value cache (past inputs {list(past)}, "
            f"missing outputs {missing or ['logits']}); re-export it: onnxpipe export SOURCE --task text-generation"
        )
    first = inputs[past[0]]
    heads, dim = first.shape[1], first.shape[3]
    if not isinstance(heads, int) or not isinstance(dim, int) or first.type not in _KV_TYPES:
        raise ManifestError(
            f"{model.manifest.folder}: {past[0]} has shape {first.shape} and type {first.type}; the "
            "loop needs static heads and head size, float or float16. Re-export the folder."
        )
    graph_info = (model.manifest.generation or {}).get("graph") or {}
    shared = isinstance(graph_info, dict) and graph_info.get("cache") == "shared-buffer"
    return DecoderGraph(past, present, heads, dim, _KV_TYPES[first.type], "position_ids" in inputs, shared)


class KVCache:
    """One generation's decoder calls: the prompt, then one token per row per step; holds the cache as the
    session's own OrtValues between calls. ``capacity``: the most positions (prompt width plus new tokens) the
    calls will reach, the size of a shared buffer (default: the model's maximum).

    Example:
        >>> cache = KVCache(model, describe(model), batch=1, capacity=2 + 8)
        >>> logits = cache.prefill(np.array([[464, 3290]]), np.ones((1, 2), dtype=np.int64))  # (1, vocabulary)
        >>> logits = cache.step(logits.argmax(-1))
    """

    def __init__(self, model: OnnxModel, graph: DecoderGraph, batch: int, capacity: int | None = None):
        import onnxruntime as ort

        self.model, self.graph = model, graph
        self.device = "cuda" if model.device == "cuda" else "cpu"
        self.capacity = int(capacity or model.manifest.max_length)
        if graph.shared_buffer:
            # Zeroed, one per tensor: slots past the current length are never attended (the operator's own
            # lengths), but zeros keep them finite whatever a kernel reads.
            shape = (batch, graph.kv_heads, self.capacity, graph.head_dim)
            self._buffers: list[np.ndarray] = [np.zeros(shape, dtype=graph.kv_type) for _ in graph.past]
            self.past: list[Any] = [ort.OrtValue.ortvalue_from_numpy(b, self.device, 0) for b in self._buffers]
        else:
            empty: np.ndarray = np.zeros((batch, graph.kv_heads, 0, graph.head_dim), dtype=graph.kv_type)
            self.past = [ort.OrtValue.ortvalue_from_numpy(empty, self.device, 0)] * len(graph.past)
        self.binding = model.session.io_binding()
        # Bound first, so that it stays the first output; rebound every call (its shape changes).
        self.binding.bind_output("logits", "cpu")
        if graph.shared_buffer:  # bound once: the same buffers every call (rebinding cost ~100 us per step)
            for name, present, value in zip(graph.past, graph.present, self.past):
                self.binding.bind_ortvalue_input(name, value)
                self.binding.bind_ortvalue_output(present, value)  # written in place
        self.mask = np.zeros((batch, 0), dtype=np.int64)
        self._keep: list[np.ndarray] = []  # numpy inputs bound by reference: alive until the run is over

    def _run(self, ids: np.ndarray, positions: np.ndarray) -> np.ndarray:
        b = self.binding
        feeds = {"input_ids": np.ascontiguousarray(ids, dtype=np.int64), "attention_mask": self.mask}
        if self.graph.position_ids:
            feeds["position_ids"] = np.ascontiguousarray(positions, dtype=np.int64)
        self._keep = list(feeds.values())
        for name, value in feeds.items():
            b.bind_cpu_input(name, value)
        b.bind_output("logits", "cpu")  # read by numpy every step; only the last position is used
        if not self.graph.shared_buffer:  # the last call's presents are this call's past
            for name, present, value in zip(self.graph.past, self.graph.present, self.past):
                b.bind_ortvalue_input(name, value)
                b.bind_output(present, self.device)
        if self.mask.shape[1] > self.capacity:
            raise InputTooLongError(
                f"the cache holds {self.capacity} positions and this call needs {self.mask.shape[1]}; "
                "create the KVCache with capacity = prompt length + max_new_tokens"
            )
        outputs = self.model.run_bound(b, ids.shape)
        if not self.graph.shared_buffer:
            self.past = outputs[1:]
        logits: np.ndarray = outputs[0].numpy()[:, -1, :]
        return logits.astype(np.float32)  # a copy: the sampler may modify it

    def prefill(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Run the (left-padded) prompt; return the next-token logits, (batch, vocabulary)."""
        self.mask = np.ascontiguousarray(mask, dtype=np.int64)
        positions = np.cumsum(self.mask, axis=1) - 1
        positions[self.mask == 0] = 1  # padding: any valid position (masked out), as transformers does
        return self._run(ids, positions)

    def step(self, tokens: np.ndarray) -> np.ndarray:
        """Feed one token per row; return the next-token logits."""
        self.mask = np.concatenate([self.mask, np.ones((len(self.mask), 1), dtype=np.int64)], axis=1)
        positions = self.mask.sum(axis=1, keepdims=True) - 1
        return self._run(np.asarray(tokens, dtype=np.int64).reshape(-1, 1), positions)

    def arrays(self) -> list[np.ndarray]:
        """The cache as numpy copies, one (batch, kv_heads, width, head_dim) array per past input, where
        ``width`` is the mask's: both layouts keep a row's left padding inside the cache, position i of the
        cache being column i of the mask. With ``from_arrays``, rows can be merged or dropped between steps."""
        width = self.mask.shape[1]
        if self.graph.shared_buffer:
            return [b[:, :, :width].copy() for b in self._buffers]
        return [np.asarray(v.numpy()) for v in self.past]

    @classmethod
    def from_arrays(
        cls, model: OnnxModel, graph: DecoderGraph, arrays: Sequence[np.ndarray], mask: np.ndarray, capacity: int
    ) -> KVCache:
        """A cache holding ``arrays`` (as ``arrays()`` returns them) under ``mask``, ready for ``step``;
        ``capacity``: the most positions the following steps will reach."""
        import onnxruntime as ort

        cache = cls(model, graph, len(mask), capacity=capacity)
        width = mask.shape[1]
        if graph.shared_buffer:
            for buffer, array in zip(cache._buffers, arrays):
                buffer[:, :, :width] = array
        else:
            cache._buffers = [np.ascontiguousarray(a, dtype=graph.kv_type) for a in arrays]  # alive while bound
            cache.past = [ort.OrtValue.ortvalue_from_numpy(a, cache.device, 0) for a in cache._buffers]
        cache.mask = np.ascontiguousarray(mask, dtype=np.int64)
        return cache


def check_room(prompt_length: int, max_new_tokens: int, max_positions: int) -> None:
    if prompt_length + max_new_tokens > max_positions:
        raise InputTooLongError(
            f"a prompt of {prompt_length} tokens plus max_new_tokens={max_new_tokens} needs "
            f"{prompt_length + max_new_tokens} positions; the model has {max_positions}. "
            f"Shorten the prompt or lower max_new_tokens to at most {max(max_positions - prompt_length, 0)}."
        )


def generate_tokens(
    model: OnnxModel,
    graph: DecoderGraph,
    ids: np.ndarray,
    mask: np.ndarray,
    max_new_tokens: int,
    sampling: Sampling,
    eos_ids: Sequence[int],
    pad_id: int,
    rng: np.random.Generator | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(tokens, done)`` per step: one new token per row (``pad_id`` for rows already finished) and the
    rows finished so far. Rows finish on an eos id; the caller may set ``done[i] = True`` to stop a row (stop
    strings), and the loop ends when every row is done or after ``max_new_tokens`` steps.

    Example:
        >>> for tokens, done in generate_tokens(model, describe(model), ids, mask, 8, Sampling(), [50256], 50256):
        ...     print(tokens)
    """
    cache = KVCache(model, graph, len(ids), capacity=ids.shape[1] + max(max_new_tokens, 1))
    done = np.zeros(len(ids), dtype=bool)
    seen = None
    if sampling.repetition_penalty != 1.0:  # which tokens each row has seen (prompt and output)
        seen = np.zeros((len(ids), model_vocab(model)), dtype=bool)
        rows, cols = np.nonzero(mask)
        seen[rows, ids[rows, cols]] = True
    eos = np.asarray(list(eos_ids), dtype=np.int64)
    if max_new_tokens <= 0:
        return
    logits = cache.prefill(ids, mask)
    for step in range(max_new_tokens):
        if seen is not None:
            penalize(logits, seen, sampling.repetition_penalty)
        tokens = np.where(done, pad_id, choose(logits, sampling, rng)).astype(np.int64)
        if seen is not None:
            seen[np.arange(len(tokens)), tokens] = True
        done |= np.isin(tokens, eos)
        yield tokens, done
        if done.all() or step == max_new_tokens - 1:
            return
        logits = cache.step(tokens)


def model_vocab(model: OnnxModel) -> int:
    shape = next(o.shape for o in model.session.get_outputs() if o.name == "logits")
    if not isinstance(shape[-1], int):
        raise ManifestError(f"{model.manifest.folder}: logits have no static vocabulary size ({shape}); re-export")
    return int(shape[-1])
