"""Encoder-decoder generation in numpy around two onnxruntime sessions: the encoder, and Optimum's merged decoder
(``use_cache_branch`` false: the first step, which also computes the cross-attention keys and values from the
encoder's output; true: every later step, fed the cache).

The cross-attention cache is computed once per input and kept as it is: later steps return placeholders in its
place (the merged graph's with-past branch has no cross-attention outputs), and beam search reorders only the
self-attention cache, since a beam always continues a beam of its own input, whose cross-attention rows are
identical. The caches stay in onnxruntime's OrtValues between steps (an IO binding, as the decoder-only loop's
``_generate.KVCache``); only beam search's row reordering goes through numpy.

Greedy and sampling are transformers' ``_sample``; beam search is ``_beam.py``; the logits processors
``_logits.py``; the settings ``_seq2seq_config.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._logits import LogitsProcessors
from ._manifest import Manifest
from ._model import OnnxModel
from ._sampling import choose
from ._seq2seq_config import GenerationSettings
from ._session_options import SessionOptions
from .errors import ManifestError

_KV_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}


@dataclass(frozen=True)
class DecoderNames:
    """The merged decoder's cache inputs and outputs, layer by layer, read from its session."""

    self_past: tuple[str, ...]  # past_key_values.N.decoder.key / .value
    cross_past: tuple[str, ...]  # past_key_values.N.encoder.key / .value
    heads: int
    head_dim: int
    kv_type: type

    def present(self, past: str) -> str:
        return past.replace("past_key_values.", "present.")


def _names(decoder: OnnxModel) -> DecoderNames:
    inputs = {i.name: i for i in decoder.session.get_inputs()}
    outputs = {o.name for o in decoder.session.get_outputs()}

    def layer_order(n: str) -> tuple[int, bool]:
        return int(n.split(".")[1]), n.endswith(".value")

    self_past = tuple(sorted((n for n in inputs if n.endswith((".decoder.key", ".decoder.value"))), key=layer_order))
    cross_past = tuple(sorted((n for n in inputs if n.endswith((".encoder.key", ".encoder.value"))), key=layer_order))
    needed = {"input_ids", "encoder_hidden_states", "encoder_attention_mask", "use_cache_branch"}
    missing = sorted(needed - set(inputs)) + [
        n
        for n in ["logits", *(p.replace("past_key_values.", "present.") for p in self_past + cross_past)]
        if n not in outputs
    ]
    if not self_past or len(self_past) != len(cross_past) or missing:
        raise ManifestError(
            f"{decoder.manifest.folder}: the decoder graph is not a merged encoder-decoder decoder with past key "
            f"values (missing {missing or ['past_key_values.N.decoder/encoder']}). Re-export the folder: "
            "onnxpipe export SOURCE --task text2text-generation --out DIR --force"
        )
    first = inputs[self_past[0]]
    heads, dim = first.shape[1], first.shape[3]
    if not isinstance(heads, int) or not isinstance(dim, int) or first.type not in _KV_TYPES:
        raise ManifestError(f"{decoder.manifest.folder}: {self_past[0]} has shape {first.shape}; re-export the folder")
    return DecoderNames(self_past, cross_past, heads, dim, _KV_TYPES[first.type])


class Seq2SeqModel:
    """An encoder-decoder folder's two sessions: ``encoder`` (the variant's file) and ``decoder`` (its decoder
    graph, opened through ``Manifest.decoder_view`` by the same session factory, same device and precision).
    ``load`` opens both, the decoder first; given an open encoder, the decoder is opened beside it.

    Example:
        >>> s2s = Seq2SeqModel.load(load_manifest("models/t5-small"), SessionOptions(precision="int8"))
        >>> hidden = s2s.encode(ids, mask)
    """

    def __init__(self, encoder: OnnxModel, decoder: OnnxModel | None = None):
        self.encoder = encoder
        self.decoder = decoder or OnnxModel(
            encoder.manifest.decoder_view(),
            device=encoder.device,
            precision=encoder.precision,
            threads=encoder.threads,
            profile=encoder.profile,
        )
        self.names = _names(self.decoder)

    @classmethod
    def load(cls, manifest: Manifest, options: SessionOptions | None = None, **settings: Any) -> Seq2SeqModel:
        """Both sessions of ``manifest``'s variant (``options`` and ``settings`` as ``OnnxModel`` takes them).

        The decoder is opened first because the process's peak memory is set while a session loads: onnxruntime
        holds a graph's parsed file and its weight tensors at once, and the merged decoder is the larger graph.
        Loaded second, the encoder's transient fits in the heap the decoder's load freed; the other way round the
        decoder's transient comes on top of the loaded encoder (bench/results/seq2seq.md)."""
        # the decoder graph has no ORT-format copy (Manifest.decoder_view); the encoder's may
        decoder = OnnxModel(manifest.decoder_view(), options, **{**settings, "format": "onnx"})
        encoder = OnnxModel(
            manifest,
            options,
            **{**settings, "device": decoder.device, "precision": decoder.precision, "threads": decoder.threads},
        )
        return cls(encoder, decoder)

    def encode(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        feeds = {"input_ids": ids.astype(np.int64), "attention_mask": mask.astype(np.int64)}
        hidden: np.ndarray = self.encoder.run(feeds, ["last_hidden_state"])[0]
        return hidden


class DecoderCache:
    """One batch's decoder calls: ``first`` (the start tokens; computes the cross-attention cache), then
    ``step`` with one token per row; ``reorder`` picks the rows the next step continues (beam search).

    The caches stay onnxruntime's OrtValues between calls (an IO binding): a step's self-attention presents are
    the next step's past as they are, and the cross-attention cache and the encoder's output are bound once,
    so no cache tensor passes through numpy unless beam search reorders rows.
    """

    def __init__(self, model: Seq2SeqModel, hidden: np.ndarray, mask: np.ndarray):
        import onnxruntime as ort

        self._ort = ort
        self.model, self.names = model, model.names
        self.rows = len(hidden)
        self.binding = model.decoder.session.io_binding()
        # numpy arrays bound by reference: kept alive as long as the binding may read them
        self._keep = [np.ascontiguousarray(hidden), np.ascontiguousarray(mask, dtype=np.int64)]
        self.binding.bind_cpu_input("encoder_hidden_states", self._keep[0])
        self.binding.bind_cpu_input("encoder_attention_mask", self._keep[1])
        self._step_inputs: list[np.ndarray] = []
        self.self_kv: list[Any] = []  # OrtValues, (rows, heads, steps so far, head_dim)
        self.cross_kv: list[Any] = []  # OrtValues, (rows, heads, encoder length, head_dim)

    def _run(self, tokens: np.ndarray, first: bool) -> np.ndarray:
        n, b = self.names, self.binding
        ids = np.ascontiguousarray(tokens, dtype=np.int64).reshape(self.rows, -1)
        self._step_inputs = [ids, np.array([not first])]
        b.bind_cpu_input("input_ids", ids)
        b.bind_cpu_input("use_cache_branch", self._step_inputs[1])
        b.clear_binding_outputs()
        b.bind_output("logits", "cpu")
        if first:  # the no-cache branch reads none of them; empty tensors of the declared rank
            empty: np.ndarray = np.zeros((self.rows, n.heads, 0, n.head_dim), dtype=n.kv_type)
            self._step_inputs.append(empty)
            for name in n.self_past + n.cross_past:
                b.bind_cpu_input(name, empty)
        else:
            for name, value in zip(n.self_past + n.cross_past, self.self_kv + self.cross_kv):
                b.bind_ortvalue_input(name, value)
        for name in n.self_past + (n.cross_past if first else ()):
            b.bind_output(n.present(name), "cpu")
        outputs = self.model.decoder.run_bound(b, ids.shape)
        k = len(n.self_past)
        self.self_kv = outputs[1 : 1 + k]
        if first:
            self.cross_kv = outputs[1 + k :]
        logits: np.ndarray = outputs[0].numpy()[:, -1, :]
        if not np.isfinite(logits).all():
            rows = np.flatnonzero(~np.isfinite(logits).all(axis=1)).tolist()
            raise self.model.decoder.non_finite_error("logits", rows)
        return logits.astype(np.float32)  # a copy: the processors modify it

    def first(self, tokens: np.ndarray) -> np.ndarray:
        return self._run(tokens, first=True)

    def step(self, tokens: np.ndarray) -> np.ndarray:
        return self._run(tokens, first=False)

    def reorder(self, rows: np.ndarray) -> None:
        """Keep rows ``rows`` of the self-attention cache (each a row of the same input's beams)."""
        if np.array_equal(rows, np.arange(self.rows)):
            return
        from_numpy = self._ort.OrtValue.ortvalue_from_numpy
        self.self_kv = [from_numpy(np.ascontiguousarray(kv.numpy()[rows])) for kv in self.self_kv]


def start_ids(settings: GenerationSettings, rows: int) -> np.ndarray:
    return np.full((rows, 1), settings.decoder_start_token_id, dtype=np.int64)


def sample_or_greedy(
    model: Seq2SeqModel,
    hidden: np.ndarray,
    mask: np.ndarray,
    settings: GenerationSettings,
    rng: np.random.Generator | None = None,
) -> list[list[int]]:
    """transformers' greedy search or sampling (``settings.sampling.do_sample``), one sequence per row: the
    generated tokens after the start token, up to and including eos."""
    rows = len(hidden)
    cache = DecoderCache(model, hidden, mask)
    seqs = start_ids(settings, rows)
    processors = LogitsProcessors(settings)
    eos = np.asarray(settings.eos_token_id, dtype=np.int64)
    unfinished = np.ones(rows, dtype=bool)
    logits = cache.first(seqs)
    while True:
        scores = processors(seqs, logits)
        tokens = choose(scores, settings.sampling, rng).astype(np.int64)
        tokens = np.where(unfinished, tokens, settings.pad_token_id)
        seqs = np.concatenate([seqs, tokens[:, None]], axis=1)
        unfinished &= ~np.isin(tokens, eos)
        if not unfinished.any() or seqs.shape[1] >= settings.max_length:
            break
        logits = cache.step(tokens)
    return [trim(row[1:], settings.eos_token_id) for row in seqs]


def trim(tokens: Sequence[int] | np.ndarray, eos: Sequence[int]) -> list[int]:
    """``tokens`` up to and including the first eos (what follows is padding)."""
    out: list[int] = []
    for t in tokens:
        out.append(int(t))
        if int(t) in eos:
            break
    return out
