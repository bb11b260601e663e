"""Continuous batching of generation requests: one thread runs one decoder's KV loop for every request at once.

Requests join and leave the running batch between decode steps. A joining request is prefilled alone (its
prompt, once, its ``n`` rows copied from it), and its cache rows are merged into the batch's: both cache
layouts keep each row's left padding inside the cache (column i of the mask is position i of the cache), so
merging left-pads the narrower side with masked zeros, and positions, read from the mask, stay each row's own.
A row that ends (an eos token, a stop string, its token budget, or its client gone) is dropped before the
next step, and leading columns no row attends any more are cut. Greedy output is each request's output alone:
the masked padding adds exact zeros to attention.

Each step chooses every row's token with the row's own request settings (greedy, or sampling with its own
seeded generator), so requests with different settings share a batch.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._generate import KVCache, model_vocab
from .._pipelines.text_generation import TextGenerationPipeline
from .._sampling import Sampling, choose, generator, penalize
from .._stream import TextStream

log = logging.getLogger("onnxpipe.serve")

# The most rows (sequences) decoded together; a request waits while the batch is full.
MAX_ROWS = 16


@dataclass
class Token:
    """A new token of sequence ``index``, the text it completes (``""`` while a character is incomplete) and,
    for a request that asked (``Request.logprobs``), its log-probability under the model's logits (before the
    repetition penalty and the sampling settings reshape them)."""

    index: int
    id: int
    text: str
    logprob: float | None = None
    top: tuple[tuple[int, str, float], ...] = ()  # the Request.top_n likeliest (id, text, log-probability)


@dataclass
class Finished:
    """Sequence ``index`` ended: ``reason`` is "stop" (eos or a stop string) or "length"; ``text`` is its
    whole generated text (a stop string included), ``tokens`` how many tokens it generated."""

    index: int
    reason: str
    text: str
    tokens: int


@dataclass
class Failed:
    message: str


Event = Token | Finished | Failed


@dataclass
class Request:
    """One client request: ``n`` sequences continuing ``ids``. ``emit`` is called on the decoding thread with
    each Event; it must not block."""

    ids: list[int]
    max_new_tokens: int
    sampling: Sampling
    emit: Callable[[Event], None]
    n: int = 1
    stop: tuple[str, ...] = ()
    repetition_penalty: float = 1.0
    logprobs: bool = False  # each Token carries its log-probability (a log-softmax over the vocabulary per step)
    top_n: int = 0  # and the top_n likeliest tokens of its step (TGI's top_n_tokens)
    cancelled: bool = False  # set by the client's side when it goes away; read between steps
    rng: np.random.Generator | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.rng = generator(self.sampling.seed) if self.sampling.do_sample else None


@dataclass
class _Row:
    request: Request
    index: int
    stream: TextStream
    seen: np.ndarray | None
    tokens: int = 0


class Decoder:
    """The decoding thread of one text-generation pipeline. ``submit`` from any thread; ``close`` to stop.

    Example:
        >>> decoder = Decoder(pipe)
        >>> decoder.submit(Request(ids, 16, Sampling(), emit=print))
    """

    def __init__(self, pipe: TextGenerationPipeline, max_rows: int = MAX_ROWS, name: str = "onnxpipe-generation"):
        self.pipe, self.max_rows = pipe, max_rows
        # A low-bit decoder rounds a row differently beside other rows (dynamic int8's batch-wide activation
        # scales, int4's kernels), and greedy decoding turns that into other tokens: such a variant (execution
        # "alone", _session.batch_dependent) decodes one request at a time, so no request's text depends on others.
        self.alone = pipe.model.execution == "alone"
        if self.alone:
            log.warning(
                "generation: the %s variant decodes one request at a time (a low-bit decoder's rounding of a row "
                "depends on its batch-mates); serve --precision fp32 to decode requests together",
                pipe.model.precision,
            )
        self.waiting: queue.SimpleQueue[Request | None] = queue.SimpleQueue()
        self.max_positions = pipe.model.manifest.max_length
        self.vocab = model_vocab(pipe.model)
        added = pipe.tokenizer.backend.get_added_tokens_decoder()
        self.special_ids = frozenset(i for i, t in added.items() if t.special)  # TGI's "special" per token
        self.tokens_generated = 0
        self.steps = 0
        self._closed = False
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(self, request: Request) -> None:
        self.waiting.put(request)

    def close(self) -> None:
        self._closed = True
        self.waiting.put(None)
        if self._thread.is_alive():
            self._thread.join(30)

    # -- the loop ---------------------------------------------------------------------------------------
    def _serve(self) -> None:
        rows: list[_Row] = []
        cache: KVCache | None = None
        logits = np.zeros((0, self.vocab), dtype=np.float32)
        held: Request | None = None  # the first waiting request, when it does not fit yet (order is kept)
        while not self._closed:
            try:
                if not rows and held is None:
                    first = self.waiting.get()
                    if first is None:
                        return
                    held = first
                rows, cache, logits, held = self._admit(rows, cache, logits, held)
                if not rows:
                    continue
                rows, cache, logits = self._step(rows, cache, logits)
            except Exception as e:  # a bug or a failed model call: every request in the batch gets the error
                log.exception("generation failed")
                for request in {id(r.request): r.request for r in rows}.values():
                    request.emit(Failed(f"generation failed ({type(e).__name__}: {e}); see the server log"))
                if held is not None:
                    held.emit(Failed(f"generation failed ({type(e).__name__}); see the server log"))
                rows, cache, held = [], None, None
                logits = np.zeros((0, self.vocab), dtype=np.float32)

    def _fits(self, rows: list[_Row], cache: KVCache | None, joining: list[Request], request: Request) -> bool:
        """Whether ``request`` can join now: room for its rows, and every row's remaining tokens within the
        model's positions at the batch's width."""
        if len(rows) + sum(j.n for j in joining) + request.n > self.max_rows:
            return False
        if self.alone and (rows or joining):
            return False
        if cache is not None and self.pipe.graph.shared_buffer and len(request.ids) > cache.mask.shape[1]:
            return False
        width = max([cache.mask.shape[1] if cache is not None else 0] + [len(j.ids) for j in [*joining, request]])
        remaining = max(
            [r.request.max_new_tokens - r.tokens for r in rows] + [j.max_new_tokens for j in [*joining, request]]
        )
        return width + remaining <= self.max_positions

    def _admit(
        self, rows: list[_Row], cache: KVCache | None, logits: np.ndarray, held: Request | None
    ) -> tuple[list[_Row], KVCache | None, np.ndarray, Request | None]:
        joining: list[Request] = []
        while True:
            if held is None:
                try:
                    held = self.waiting.get_nowait()
                except queue.Empty:
                    break
                if held is None:  # close() was called
                    self._closed = True
                    break
            if held.cancelled:
                held = None
                continue
            if not self._fits(rows, cache, joining, held):
                break
            joining.append(held)
            held = None
        if not joining:
            return rows, cache, logits, held
        # The joiners' prompts are prefilled together, left-padded to one width: the running batch's for the
        # shared-buffer layout (its keys are rotated by cache slot, so the running rows cannot be shifted; a
        # longer prompt waits until the batch is that wide, or empty), else the longest prompt's.
        width = max(len(j.ids) for j in joining)
        if cache is not None and self.pipe.graph.shared_buffer:
            width = cache.mask.shape[1]
        prompts = [j.ids for j in joining for _ in range(j.n)]
        ids = np.full((len(prompts), width), self.pipe.info.pad_token_id, dtype=np.int64)
        new_mask = np.zeros_like(ids)
        for r, prompt in enumerate(prompts):
            ids[r, width - len(prompt) :] = prompt
            new_mask[r, width - len(prompt) :] = 1
        alone = KVCache(self.pipe.model, self.pipe.graph, len(prompts), capacity=width)
        first = alone.prefill(ids, new_mask)
        if cache is None:
            arrays, mask = alone.arrays(), new_mask
        else:
            arrays, mask = _merge(cache.arrays(), cache.mask, alone.arrays(), new_mask)
        logits = np.concatenate([logits, first])
        rows = rows + [row for j in joining for row in self._rows_of(j)]
        cache = KVCache.from_arrays(self.pipe.model, self.pipe.graph, arrays, mask, self._capacity(rows, mask))
        return rows, cache, logits, held

    def _rows_of(self, request: Request) -> list[_Row]:
        pipe = self.pipe
        out = []
        for i in range(request.n):
            seen = None
            if request.repetition_penalty != 1.0:
                seen = np.zeros(self.vocab, dtype=bool)
                seen[np.asarray(request.ids, dtype=np.int64)] = True
            stream = TextStream(lambda t: pipe.decoder.decode(t, skip_special_tokens=True), request.stop, pipe.clean_up)
            out.append(_Row(request, i, stream, seen))
        return out

    def _top(self, logprobs: np.ndarray, n: int) -> tuple[tuple[int, str, float], ...]:
        best = np.argpartition(-logprobs, n - 1)[:n]
        best = best[np.argsort(-logprobs[best], kind="stable")]
        text = self.pipe.decoder.decode
        return tuple((int(i), text([int(i)], skip_special_tokens=False), float(logprobs[i])) for i in best)

    def _capacity(self, rows: list[_Row], mask: np.ndarray) -> int:
        return int(mask.shape[1] + max(r.request.max_new_tokens - r.tokens for r in rows))

    def _step(
        self, rows: list[_Row], cache: KVCache | None, logits: np.ndarray
    ) -> tuple[list[_Row], KVCache | None, np.ndarray]:
        assert cache is not None
        eos = set(self.pipe.info.eos_token_id)
        tokens = np.zeros(len(rows), dtype=np.int64)
        keep: list[int] = []
        for r, row in enumerate(rows):
            request = row.request
            if request.cancelled:
                continue
            row_logits = logits[r : r + 1]
            # the normaliser of the model's own distribution, taken before the penalty edits the row in place
            raw = _log_normalised(row_logits[0]) if request.logprobs or request.top_n else None
            if row.seen is not None:
                penalize(row_logits, row.seen[None], request.repetition_penalty)
            token = int(choose(row_logits, request.sampling, request.rng)[0])
            logprob = None if raw is None else float(raw[token])
            top = self._top(raw, request.top_n) if raw is not None and request.top_n else ()
            tokens[r] = token
            row.tokens += 1
            if row.seen is not None:
                row.seen[token] = True
            piece = row.stream.add(token)
            reason = None
            if token in eos or row.stream.stopped:
                reason = "stop"
            elif row.tokens >= request.max_new_tokens:
                reason = "length"
            if reason is None:
                request.emit(Token(row.index, token, piece, logprob, top))
                keep.append(r)
            else:
                rest = row.stream.finish()
                request.emit(Token(row.index, token, piece + rest, logprob, top))
                request.emit(Finished(row.index, reason, row.stream.text, row.tokens))
        self.tokens_generated += sum(not row.request.cancelled for row in rows)
        self.steps += 1
        dropped = {id(rows[r].request) for r in range(len(rows)) if rows[r].request.cancelled}
        if dropped:
            log.info("generation: dropped %d request(s) whose client went away", len(dropped))
        if len(keep) < len(rows):
            if not keep:
                return [], None, np.zeros((0, self.vocab), dtype=np.float32)
            arrays, mask = _select(cache.arrays(), cache.mask, keep, trim=not self.pipe.graph.shared_buffer)
            rows = [rows[r] for r in keep]
            cache = KVCache.from_arrays(self.pipe.model, self.pipe.graph, arrays, mask, self._capacity(rows, mask))
            tokens = tokens[keep]
        return rows, cache, cache.step(tokens)


def _log_normalised(row: np.ndarray) -> np.ndarray:
    """log_softmax of one row of logits, in float64 (a copy: the row itself is left as it was)."""
    x = row.astype(np.float64)
    x -= x.max()
    x -= np.log(np.exp(x).sum())
    return x


def _merge(
    arrays: list[np.ndarray], mask: np.ndarray, new: list[np.ndarray], new_mask: np.ndarray
) -> tuple[list[np.ndarray], np.ndarray]:
    """Rows of two caches in one: the narrower side left-padded (masked zeros) to the wider's width."""
    width = max(mask.shape[1], new_mask.shape[1])

    def pad(a: np.ndarray, axis_width: int) -> np.ndarray:
        if axis_width == width:
            return a
        spec: list[tuple[int, int]] = [(0, 0)] * a.ndim
        spec[2 if a.ndim == 4 else 1] = (width - axis_width, 0)
        return np.pad(a, spec)

    merged = [np.concatenate([pad(a, mask.shape[1]), pad(b, new_mask.shape[1])]) for a, b in zip(arrays, new)]
    return merged, np.concatenate([pad(mask, mask.shape[1]), pad(new_mask, new_mask.shape[1])])


def _select(
    arrays: list[np.ndarray], mask: np.ndarray, keep: list[int], trim: bool
) -> tuple[list[np.ndarray], np.ndarray]:
    """The rows ``keep``; with ``trim``, without the leading columns none of them attends (not for a cache
    whose keys are rotated by slot: cutting columns would move them)."""
    mask = mask[keep]
    used = np.nonzero(mask.any(axis=0))[0]
    start = int(used[0]) if trim and len(used) else 0
    return [a[keep][:, :, start:] for a in arrays], mask[:, start:]


def describe_rows(decoder: Decoder) -> dict[str, Any]:
    return {"max_rows": decoder.max_rows, "tokens_generated": decoder.tokens_generated, "steps": decoder.steps}
