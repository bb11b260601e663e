"""text2text-generation: transformers' Text2TextGenerationPipeline on an encoder-decoder folder (T5, BART,
Marian); summarization and translation are this pipeline with another output key and task settings.

Like text-generation, a call is a loop of model calls per batch, so this pipeline overrides ``iter``. Inputs are
tokenized with the model's prefix (``config.prefix``, or the task's ``task_specific_params`` prefix: T5's
"summarize: "), padded into batches, encoded once, then decoded by greedy search, sampling (``_seq2seq``) or
beam search (``_beam``). Settings resolve as in transformers (``_seq2seq_config``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from .._beam import beam_search
from .._inputs import clean_text, int_option
from .._manifest import Manifest
from .._model import OnnxModel
from .._sampling import generator
from .._seq2seq import Seq2SeqModel, sample_or_greedy
from .._seq2seq_config import GLOBAL_DEFAULTS, GenerationSettings, merged_config, resolve
from .._session_options import SessionOptions
from .._tokenizer import AutoTokenizer
from ..errors import ManifestError
from ._base import DEFAULT_BATCH_TOKENS, Pipeline, _is_stream
from ._text import Decoder

_CALL_ARGS = ("return_tensors", "return_text", "clean_up_tokenization_spaces", "truncation")
_GENERATE_ARGS = (*GLOBAL_DEFAULTS, "eos_token_id", "pad_token_id", "decoder_start_token_id", "bos_token_id")


class Text2TextGenerationPipeline(Pipeline):
    """Generate a text from each input text: ``[{"generated_text": ...}]`` per input.

    Example:
        >>> t2t = pipeline("text2text-generation", model="models/t5-small")
        >>> t2t("translate English to German: How old are you?", num_beams=4)
        [{'generated_text': 'Wie alt sind Sie?'}]
    """

    task = "text2text-generation"
    return_name = "generated"
    output_names = ("last_hidden_state",)

    def __init__(
        self,
        model: OnnxModel | Seq2SeqModel,
        tokenizer: AutoTokenizer,
        batch_size: int = 8,
        max_batch_tokens: int = DEFAULT_BATCH_TOKENS,
        chunk_size: int = 2048,
    ):
        # an encoder alone gets its decoder opened here; a Seq2SeqModel (load_model) is shared as it is
        seq2seq, encoder = (model, model.encoder) if isinstance(model, Seq2SeqModel) else (None, model)
        super().__init__(
            encoder, tokenizer, batch_size=batch_size, max_batch_tokens=max_batch_tokens, chunk_size=chunk_size
        )
        g = encoder.manifest.generation
        if not isinstance(g, dict) or "decoder_start_token_id" not in g:
            raise ManifestError(
                f"{encoder.manifest.folder}/manifest.json has no encoder-decoder 'generation' entry; it was not "
                f"exported for {self.task}. {encoder.manifest.hint()}"
            )
        self.seq2seq = seq2seq or Seq2SeqModel(encoder)
        self.info: dict[str, Any] = g
        self.ids = {k: g.get(k) for k in ("eos_token_id", "pad_token_id", "decoder_start_token_id", "bos_token_id")}
        self.requested_task = self.task
        self.prefix: str = g.get("prefix") or ""
        self.task_params: dict[str, Any] = {}
        self.use_task(self.task)

    @classmethod
    def load_model(cls, manifest: Manifest, options: SessionOptions) -> Seq2SeqModel:
        return Seq2SeqModel.load(manifest, options)

    def use_task(self, task: str) -> None:
        """The task name ``pipeline()`` was called with (``translation_en_to_de``...): its task_specific_params
        and prefix apply, as in transformers; plain ``translation`` takes the model's first translation entry."""
        params: dict[str, dict[str, Any]] = self.info.get("task_params") or {}
        if task == "translation":
            task = next((k for k in params if k.startswith("translation")), task)
        self.requested_task = task
        self.task_params = dict(params.get(task) or {})
        self.prefix = self.task_params.get("prefix", self.info.get("prefix") or "") or ""

    # -- arguments --------------------------------------------------------------------------------------
    def _split(self, kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """(call arguments, generation arguments); an unknown argument is a TypeError naming the valid ones."""
        unknown = sorted(set(kwargs) - {*_CALL_ARGS, *_GENERATE_ARGS, "src_lang", "tgt_lang"})
        if unknown:
            raise TypeError(
                f"unexpected arguments {unknown}; {self.task} takes {', '.join(_CALL_ARGS)} and the generation "
                f"settings {', '.join(sorted(_GENERATE_ARGS))}"
            )
        call = {k: v for k, v in kwargs.items() if k in _CALL_ARGS}
        return call, {k: v for k, v in kwargs.items() if k in _GENERATE_ARGS}

    def settings(self, **kwargs: Any) -> GenerationSettings:
        """The resolved generation settings of a call with ``kwargs`` (checked: GenerationArgumentError)."""
        _, construction = self._split({k: v for k, v in self._defaults.items() if k != "batch_size"})
        _, call = self._split(kwargs)
        config = merged_config(dict(self.info.get("config") or {}), self.task_params, construction, call)
        return resolve(config, self.ids)

    def set_defaults(self, **kwargs: Any) -> None:
        self._defaults = dict(kwargs)
        self._split({k: v for k, v in kwargs.items() if k != "batch_size"})
        self.settings()  # checked now, as transformers checks construction arguments

    # -- generation -------------------------------------------------------------------------------------
    def _generate(
        self, texts: list[str], s: GenerationSettings, truncation: bool, offset: int, rng: Any
    ) -> list[list[list[int]]]:
        encodings = self.tokenizer.encode_batch([self.prefix + t for t in texts], truncation=truncation)
        if not truncation:
            self._check_lengths(encodings, offset)
        width = max(len(e.ids) for e in encodings)
        ids = np.full((len(encodings), width), self.tokenizer.pad_token_id or 0, dtype=np.int64)
        mask = np.zeros_like(ids)
        for r, e in enumerate(encodings):  # right padding, as the encoders' tokenizers pad
            ids[r, : len(e.ids)], mask[r, : len(e.ids)] = e.ids, 1
        hidden = self.seq2seq.encode(ids, mask)
        if s.num_beams > 1:
            return beam_search(self.seq2seq, hidden, mask, s)
        n = s.num_return_sequences
        rows = sample_or_greedy(self.seq2seq, np.repeat(hidden, n, axis=0), np.repeat(mask, n, axis=0), s, rng)
        return [rows[i * n : (i + 1) * n] for i in range(len(texts))]

    def _record(self, tokens: list[int], call: dict[str, Any], s: GenerationSettings) -> dict[str, Any]:
        ids = [s.decoder_start_token_id, *tokens]  # transformers decodes the start token too (special: skipped)
        if call.get("return_tensors") and not call.get("return_text"):
            return {f"{self.return_name}_token_ids": ids}
        decoder = Decoder(self.tokenizer.backend, bool(call.get("clean_up_tokenization_spaces")))
        return {f"{self.return_name}_text": decoder.decode(ids, skip_special_tokens=True)}

    def iter(self, inputs: Iterable[Any], **kwargs: Any) -> Iterator[list[dict[str, Any]]]:
        """Yield one result (a list of num_return_sequences dicts) per input, in order, batch by batch."""
        defaults = dict(self._defaults)
        batch_size = kwargs.pop("batch_size", defaults.pop("batch_size", self.batch_size))
        batch_size = int_option("batch_size", batch_size)
        call = {**self._split(defaults)[0], **self._split(kwargs)[0]}
        s = self.settings(**kwargs)
        truncation = bool(call.get("truncation") or False)
        rng = generator(s.sampling.seed) if s.sampling.do_sample else None
        if isinstance(inputs, str):
            inputs = [inputs]
        rows = 1 if self.model.execution == "alone" else batch_size  # dynamic int8: alone (see _session)
        batch: list[str] = []
        offset = 0
        for item in inputs:
            batch.append(clean_text(item, offset + len(batch)))
            if len(batch) == rows:
                for seqs in self._generate(batch, s, truncation, offset, rng):
                    yield [self._record(t, call, s) for t in seqs]
                offset, batch = offset + len(batch), []
        if batch:
            for seqs in self._generate(batch, s, truncation, offset, rng):
                yield [self._record(t, call, s) for t in seqs]

    def __call__(self, inputs: Any, **kwargs: Any) -> Any:
        """One text -> a list of dicts; a list of texts -> a list of dicts (one sequence each) or of lists of
        dicts (num_return_sequences > 1), as transformers."""
        if _is_stream(inputs):
            return self.iter(inputs, **kwargs)
        if isinstance(inputs, str):
            return next(iter(self.iter([inputs], **kwargs)))
        if not isinstance(inputs, (list, tuple)):
            raise TypeError(f"inputs is {type(inputs).__name__}; pass a str or a list of str")
        results = list(self.iter(list(inputs), **kwargs))
        if all(len(r) == 1 for r in results):
            return [r[0] for r in results]
        return results
