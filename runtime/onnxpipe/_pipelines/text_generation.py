"""text-generation: transformers' TextGenerationPipeline on a decoder graph with a key/value cache.

Generation's call shape differs from the encoder tasks' (a loop of model calls per batch, not one), so this
pipeline overrides ``__call__``/``iter`` and adds ``stream``; the loop itself is ``onnxpipe._generate``.
Defaults as transformers' pipeline: max_new_tokens=256, do_sample=True, temperature=0.7, then the folder's
generation_config.json, then the call's arguments.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._chat import is_chat, render
from .._generate import DecoderGraph, check_room, describe, generate_tokens
from .._inputs import clean_text, int_option
from .._manifest import Manifest, safe_path
from .._model import OnnxModel
from .._sampling import from_config, generator
from .._stream import TextStream
from .._tokenizer import AutoTokenizer
from ..errors import GenerationArgumentError, ManifestError
from ._base import DEFAULT_BATCH_TOKENS, Pipeline, _is_stream
from ._text import Decoder, tokenizer_config

_PIPELINE_DEFAULTS = {"max_new_tokens": 256, "do_sample": True, "temperature": 0.7}
_SAMPLING_ARGS = ("do_sample", "temperature", "top_k", "top_p", "repetition_penalty", "seed")


@dataclass(frozen=True)
class GenerationInfo:
    """The manifest's "generation" entry (docs/model-folder.md)."""

    eos_token_id: tuple[int, ...]
    pad_token_id: int
    config: dict[str, Any]
    chat_template: str | None


def generation_info(manifest: Manifest) -> GenerationInfo:
    """Read what generation needs from the manifest's ``generation`` entry, in this one place."""
    g = manifest.generation
    if not isinstance(g, dict) or not isinstance(g.get("eos_token_id"), list):
        raise ManifestError(
            f"{manifest.folder}/manifest.json has no valid 'generation' entry (eos ids, pad id, "
            f"generation config); it was not exported for text-generation. {manifest.hint()}"
        )
    template = None
    if g.get("chat_template"):
        template = safe_path(manifest.folder, str(g["chat_template"])).read_text(encoding="utf-8")
    return GenerationInfo(
        tuple(int(e) for e in g["eos_token_id"]), int(g.get("pad_token_id") or 0), dict(g.get("config") or {}), template
    )


def _int_argument(name: str, value: Any) -> int:
    try:
        return int_option(name, value, 1)
    except ValueError as e:
        raise GenerationArgumentError(str(e)) from None


class TextGenerationPipeline(Pipeline):
    """Continue prompts (or chat conversations) with a causal LM: ``[{"generated_text": ...}]`` per input.

    Example:
        >>> generator = pipeline("text-generation", model="models/gpt2")
        >>> generator("Hello, I'm a language model,", max_new_tokens=8, do_sample=False)
        [{'generated_text': "Hello, I'm a language model, and I'm not..."}]
        >>> for piece in generator.stream("Once upon a time", max_new_tokens=20):
        ...     print(piece, end="", flush=True)
    """

    task = "text-generation"
    output_names = ("logits",)

    def __init__(
        self,
        model: OnnxModel,
        tokenizer: AutoTokenizer,
        batch_size: int = 8,
        max_batch_tokens: int = DEFAULT_BATCH_TOKENS,
        chunk_size: int = 2048,
    ):
        super().__init__(
            model, tokenizer, batch_size=batch_size, max_batch_tokens=max_batch_tokens, chunk_size=chunk_size
        )
        self.graph: DecoderGraph = describe(model)
        self.info = generation_info(model.manifest)
        config = tokenizer_config(model.manifest)
        self.clean_up = bool(config.get("clean_up_tokenization_spaces", False))
        self.decoder = Decoder(tokenizer.backend, self.clean_up)
        self.specials: dict[str, str | None] = {"bos_token": None, "eos_token": None}
        for name, ids in (
            ("bos_token", (model.manifest.generation or {}).get("bos_token_id")),
            ("eos_token", self.info.eos_token_id[0] if self.info.eos_token_id else None),
        ):
            if ids is not None:
                self.specials[name] = tokenizer.backend.id_to_token(int(ids))

    # -- arguments --------------------------------------------------------------------------------------
    def _settings(
        self,
        max_new_tokens: int | None = None,
        num_return_sequences: int = 1,
        return_full_text: bool = True,
        stop_strings: str | Sequence[str] | None = None,
        skip_special_tokens: bool = True,
        **kwargs: Any,
    ) -> dict[str, Any]:
        unknown = sorted(set(kwargs) - set(_SAMPLING_ARGS))
        if unknown:
            hints = {
                "max_length": "max_length counts the prompt too; pass max_new_tokens, the tokens to add",
                "num_beams": "beam search is not implemented; sampling (do_sample=True) or greedy are",
            }
            hint = "".join(f" ({hints[k]})" for k in unknown if k in hints)
            raise TypeError(
                f"unexpected arguments {unknown}{hint}; text-generation takes max_new_tokens, "
                f"num_return_sequences, return_full_text, stop_strings, skip_special_tokens, "
                f"{', '.join(_SAMPLING_ARGS)}"
            )
        merged = {**_PIPELINE_DEFAULTS, **self.info.config}
        new_tokens = max_new_tokens if max_new_tokens is not None else merged.get("max_new_tokens", 256)
        sampling = from_config(merged, **kwargs)
        n = _int_argument("num_return_sequences", num_return_sequences)
        if n > 1 and not sampling.do_sample:
            raise GenerationArgumentError(
                f"num_return_sequences={n} with greedy decoding would repeat one text {n} times; "
                "pass do_sample=True, or num_return_sequences=1"
            )
        stops = [stop_strings] if isinstance(stop_strings, str) else list(stop_strings or [])
        if not all(isinstance(s, str) and s for s in stops):
            raise GenerationArgumentError(f"stop_strings={stop_strings!r}; use a non-empty string or a list of them")
        return {
            # At least 1, as transformers (which raises ValueError for 0): an empty result is no answer.
            "max_new_tokens": _int_argument("max_new_tokens", new_tokens),
            "sampling": sampling,
            "num_return_sequences": n,
            "return_full_text": bool(return_full_text),
            "stop_strings": stops,
            "skip_special_tokens": bool(skip_special_tokens),
        }

    def _prompt(self, item: Any, index: int) -> tuple[str, bool]:
        """(prompt text, whether special tokens are to be added): a chat is rendered by its template, which
        already writes them, as transformers does."""
        if is_chat(item):
            return render(self.info.chat_template, item, self.specials, self.model.manifest.folder), False
        return clean_text(item, index), True

    # -- generation -------------------------------------------------------------------------------------
    def _generate(
        self, prompts: list[tuple[str, bool]], s: dict[str, Any], rng: np.random.Generator | None
    ) -> Iterator[tuple[int, list[TextStream], np.ndarray, np.ndarray]]:
        """For one batch of prompts (each repeated num_return_sequences times): yield per step the row count,
        the rows' streams, the new tokens and which rows are done."""
        n = s["num_return_sequences"]
        encodings: list[tuple[int, Any]] = []
        for add_specials in (True, False):
            texts = [p for p, a in prompts if a == add_specials]
            if texts:
                encodings.extend(
                    zip(
                        [i for i, (_, a) in enumerate(prompts) if a == add_specials],
                        self.tokenizer.encode_batch(texts, truncation=False, add_special_tokens=add_specials),
                    )
                )
        ids_list = [e.ids for _, e in sorted(encodings, key=lambda x: x[0]) for _ in range(n)]
        width = max(len(x) for x in ids_list)
        check_room(width, s["max_new_tokens"], self.model.manifest.max_length)
        ids = np.full((len(ids_list), width), self.info.pad_token_id, dtype=np.int64)
        mask = np.zeros_like(ids)
        for r, row in enumerate(ids_list):  # left padding: every row's newest token in the last column
            if row:
                ids[r, width - len(row) :] = row
                mask[r, width - len(row) :] = 1
        if width == 0 or not mask[:, -1].all():
            raise ValueError(
                "a prompt encodes to no tokens and the tokenizer adds no start token; give a non-empty prompt"
            )
        skip = s["skip_special_tokens"]
        streams = [
            TextStream(lambda t: self.decoder.decode(t, skip_special_tokens=skip), s["stop_strings"], self.clean_up)
            for _ in ids_list
        ]
        for tokens, done in generate_tokens(
            self.model,
            self.graph,
            ids,
            mask,
            s["max_new_tokens"],
            s["sampling"],
            self.info.eos_token_id,
            self.info.pad_token_id,
            rng,
        ):
            yield len(ids_list), streams, tokens, done

    def _step_streams(
        self, streams: list[TextStream], tokens: np.ndarray, done: np.ndarray, was_done: np.ndarray
    ) -> list[str]:
        pieces = []
        for r, stream in enumerate(streams):
            piece = ""
            if not was_done[r]:  # an eos token is added too: decoding skips it unless skip_special_tokens=False
                piece = stream.add(int(tokens[r]))
                if stream.stopped:
                    done[r] = True  # stop strings end the row; its text keeps the token that completed it
            pieces.append(piece)
        return pieces

    def _run_batch(
        self, items: list[Any], offset: int, s: dict[str, Any], rng: np.random.Generator | None
    ) -> list[list[dict[str, Any]]]:
        prompts = [self._prompt(item, offset + i) for i, item in enumerate(items)]
        streams: list[TextStream] = []
        was_done = None
        for _, streams, tokens, done in self._generate(prompts, s, rng):
            was_done = np.zeros_like(done) if was_done is None else was_done
            self._step_streams(streams, tokens, done, was_done)
            was_done = done.copy()
        n = s["num_return_sequences"]
        results = []
        for i, item in enumerate(items):
            rows = []
            for stream in streams[i * n : (i + 1) * n]:
                stream.finish()
                rows.append({"generated_text": self._full(item, prompts[i][0], stream.text, s["return_full_text"])})
            results.append(rows)
        return results

    @staticmethod
    def _full(item: Any, prompt: str, new_text: str, full: bool) -> Any:
        if not full:
            return new_text
        if is_chat(item):
            return [*item, {"role": "assistant", "content": new_text}]
        return prompt + new_text

    def _rng(self, s: dict[str, Any]) -> np.random.Generator | None:
        return generator(s["sampling"].seed) if s["sampling"].do_sample else None

    # -- public API -------------------------------------------------------------------------------------
    def set_defaults(self, **kwargs: Any) -> None:
        """Arguments given to pipeline(...): every call's defaults, checked now (as transformers takes them)."""
        self._settings(**{k: v for k, v in kwargs.items() if k != "batch_size"})
        self._defaults = dict(kwargs)

    def iter(self, inputs: Iterable[Any], **kwargs: Any) -> Iterator[Any]:
        """Yield one result (a list of num_return_sequences dicts) per input, in order, batch by batch."""
        kwargs = {**self._defaults, **kwargs}
        batch_size = int_option("batch_size", kwargs.pop("batch_size")) if "batch_size" in kwargs else self.batch_size
        s = self._settings(**kwargs)
        rng = self._rng(s)
        if isinstance(inputs, str) or is_chat(inputs):
            inputs = [inputs]
        batch: list[Any] = []
        offset = 0
        rows = max(1, batch_size // s["num_return_sequences"])
        if self.model.execution == "alone":  # dynamic int8: a row's activation scales would depend on its batch-mates
            rows = 1
        for item in inputs:
            batch.append(item)
            if len(batch) == rows:
                yield from self._run_batch(batch, offset, s, rng)
                offset, batch = offset + len(batch), []
        if batch:
            yield from self._run_batch(batch, offset, s, rng)

    def __call__(self, inputs: Any, **kwargs: Any) -> Any:
        """One prompt (str) or conversation (list of {"role", "content"}) -> a list of dicts; a list of them ->
        a list of such lists, as transformers."""
        if _is_stream(inputs):  # a generator, a datasets column...: an iterator of results, as transformers
            return self.iter(inputs, **kwargs)
        single = isinstance(inputs, str) or is_chat(inputs)
        if not single and not isinstance(inputs, (list, tuple)):
            raise TypeError(
                f"inputs is {type(inputs).__name__}; pass a str, a chat (list of role/content dicts) or a list of those"
            )
        results = list(self.iter([inputs] if single else list(inputs), **kwargs))
        return results[0] if single else results

    def stream(self, inputs: Any, **kwargs: Any) -> Iterator[str]:
        """Yield the new text of one prompt or conversation piece by piece as it is generated; the pieces join
        to the text ``__call__(..., return_full_text=False)`` gives (same seed).

        Example:
            >>> "".join(generator.stream("Once upon a time", max_new_tokens=16, do_sample=False))
            ' there was a ...'
        """
        defaults = {k: v for k, v in self._defaults.items() if k != "batch_size"}
        s = self._settings(**{**defaults, **kwargs})
        if s["num_return_sequences"] != 1:
            raise ValueError("stream() yields one sequence; pass num_return_sequences=1")
        if not (isinstance(inputs, str) or is_chat(inputs)):
            raise TypeError(f"stream() takes one prompt (str) or one conversation, not {type(inputs).__name__}")
        streams: list[TextStream] = []
        was_done = None
        for _, streams, tokens, done in self._generate([self._prompt(inputs, 0)], s, self._rng(s)):
            was_done = np.zeros_like(done) if was_done is None else was_done
            piece = self._step_streams(streams, tokens, done, was_done)[0]
            was_done = done.copy()
            if piece:
                yield piece
        rest = streams[0].finish() if streams else ""
        if rest:
            yield rest
