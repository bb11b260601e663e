"""An encoder-decoder call's generation settings, resolved as transformers resolves them, and checked.

Precedence (transformers' text2text pipelines): the pipeline's defaults (``max_new_tokens=256, num_beams=4``),
where they are transformers' global defaults the checkpoint's generation config, the arguments given to
``pipeline(...)``, the task's ``task_specific_params`` (``summarization``, ``translation_en_to_de``...), the
checkpoint's settings again wherever a value is still the global default (``generate`` does so: a task's
``max_length=20`` is the global default, so a checkpoint's own max_length wins over it), then the call's
arguments. ``max_new_tokens`` wins over ``max_length``; both count the decoder start token in
``max_length``, as transformers does for encoder-decoders.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, cast

from ._sampling import Sampling, from_config
from .errors import GenerationArgumentError

# transformers' GenerationConfig defaults of the settings implemented here.
GLOBAL_DEFAULTS: dict[str, Any] = {
    "max_length": 20,
    "max_new_tokens": None,
    "min_length": 0,
    "min_new_tokens": None,
    "early_stopping": False,
    "do_sample": False,
    "num_beams": 1,
    "temperature": 1.0,
    "top_k": 50,
    "top_p": 1.0,
    "repetition_penalty": 1.0,
    "length_penalty": 1.0,
    "no_repeat_ngram_size": 0,
    "bad_words_ids": None,
    "forced_bos_token_id": None,
    "forced_eos_token_id": None,
    "num_return_sequences": 1,
    "seed": None,
}
PIPELINE_DEFAULTS = {"max_new_tokens": 256, "num_beams": 4}
# Ids the manifest's generation entry holds; a call may override eos_token_id as transformers' generate does.
_IDS = ("eos_token_id", "pad_token_id", "decoder_start_token_id", "bos_token_id")


@dataclass(frozen=True)
class GenerationSettings:
    """Everything one generation needs, resolved and checked (``resolve``)."""

    decoder_start_token_id: int
    eos_token_id: tuple[int, ...]
    pad_token_id: int
    max_length: int  # counts the decoder start token
    min_length: int = 0
    min_new_tokens: int = 0
    num_beams: int = 1
    num_return_sequences: int = 1
    length_penalty: float = 1.0
    early_stopping: bool | str = False
    no_repeat_ngram_size: int = 0
    bad_words_ids: tuple[tuple[int, ...], ...] = ()
    forced_bos_token_id: int | None = None
    forced_eos_token_id: tuple[int, ...] = ()
    sampling: Sampling = field(default_factory=Sampling)


def _refuse(name: str, value: Any, valid: str) -> GenerationArgumentError:
    return GenerationArgumentError(f"{name}={value!r} is invalid; use {valid}")


def _int(config: dict[str, Any], name: str, low: int) -> int:
    value = config.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise _refuse(name, value, f"an int >= {low}")
    return value


def merged_config(
    model_config: dict[str, Any],
    task_params: dict[str, Any] | None,
    construction: dict[str, Any],
    call: dict[str, Any],
    pipeline_defaults: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The generation settings of one call as transformers' pipeline (or, with ``pipeline_defaults={}``,
    ``model.generate``) merges them; see the module docstring."""
    config = {**GLOBAL_DEFAULTS, **(PIPELINE_DEFAULTS if pipeline_defaults is None else pipeline_defaults)}
    _model_defaults(config, model_config)
    config.update(construction)
    default_new = (pipeline_defaults if pipeline_defaults is not None else PIPELINE_DEFAULTS).get("max_new_tokens")
    if default_new is not None and config.get("max_new_tokens") == default_new and config["max_length"] != 20:
        config["max_new_tokens"] = None  # a checkpoint's own max_length beats the pipeline's length default
    config.update({k: v for k, v in (task_params or {}).items() if k != "prefix"})
    _model_defaults(config, model_config)  # generate() applies them once more, before the call's arguments
    config.update(call)
    return config


def _model_defaults(config: dict[str, Any], model_config: dict[str, Any]) -> None:
    """The checkpoint's generation settings wherever ``config`` holds transformers' global default."""
    for key, value in model_config.items():
        if config.get(key, GLOBAL_DEFAULTS.get(key)) == GLOBAL_DEFAULTS.get(key) and value != GLOBAL_DEFAULTS.get(key):
            config[key] = value


def resolve(config: dict[str, Any], ids: dict[str, Any]) -> GenerationSettings:
    """Check ``config`` (from ``merged_config``) and the folder's token ``ids``; GenerationArgumentError (a
    ValueError) names a bad setting and its valid range, where transformers raises ValueError too."""
    ids = {**ids, **{k: config[k] for k in _IDS if config.get(k) is not None}}
    eos = ids.get("eos_token_id")
    eos_ids = tuple(int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos] if eos is not None else []))
    beams = _int(config, "num_beams", 1)
    n = _int(config, "num_return_sequences", 1)
    sampling = from_config(config, seed=config.get("seed"))
    if sampling.do_sample and beams > 1:
        raise GenerationArgumentError(
            f"do_sample=True with num_beams={beams} (beam sampling) is not implemented; pass num_beams=1 to "
            "sample, or do_sample=False for beam search"
        )
    if n > 1 and beams == 1 and not sampling.do_sample:
        raise GenerationArgumentError(
            f"num_return_sequences={n} with greedy decoding would repeat one text; pass num_beams >= {n} or "
            "do_sample=True"
        )
    if n > beams and not sampling.do_sample:
        raise _refuse("num_return_sequences", n, f"at most num_beams ({beams})")
    if config.get("max_new_tokens") is not None:
        max_length = _int(config, "max_new_tokens", 1) + 1
    else:
        max_length = _int(config, "max_length", 2)  # the start token and at least one new token
    min_new = config.get("min_new_tokens")
    # transformers takes any int here (a negative one is no minimum)
    min_new = 0 if min_new is None else max(_int(config, "min_new_tokens", -(2**62)), 0)
    penalty = config.get("length_penalty", 1.0)
    if isinstance(penalty, bool) or not isinstance(penalty, (int, float)) or not math.isfinite(penalty):
        raise _refuse("length_penalty", penalty, "a finite number (> 0 favours longer sequences)")
    early = config.get("early_stopping", False)
    if early not in (True, False, "never"):
        raise _refuse("early_stopping", early, "True, False or 'never'")
    ngram = _int(config, "no_repeat_ngram_size", 0) if config.get("no_repeat_ngram_size") else 0
    bad = config.get("bad_words_ids") or []
    if not isinstance(bad, list) or not all(isinstance(w, list) and w and all(_is_id(t) for t in w) for w in bad):
        raise _refuse("bad_words_ids", bad, "a list of non-empty lists of token ids")
    forced_eos = config.get("forced_eos_token_id")
    forced_eos_ids = () if forced_eos is None else tuple(forced_eos if isinstance(forced_eos, list) else [forced_eos])
    start = ids.get("decoder_start_token_id")
    if not _is_id(start):
        raise _refuse("decoder_start_token_id", start, "a token id (the folder's generation entry names one)")
    min_length = config.get("min_length") or 0
    return GenerationSettings(
        decoder_start_token_id=int(cast(int, start)),
        eos_token_id=eos_ids,
        pad_token_id=int(ids.get("pad_token_id") or 0),
        max_length=max_length,
        min_length=int(min_length),
        min_new_tokens=min_new,
        num_beams=beams,
        num_return_sequences=n,
        length_penalty=float(penalty),
        early_stopping=early,
        no_repeat_ngram_size=ngram,
        # transformers drops a bad word that is exactly an eos token (eos must stay reachable)
        bad_words_ids=tuple(tuple(w) for w in bad if not (len(w) == 1 and w[0] in eos_ids)),
        forced_bos_token_id=config.get("forced_bos_token_id"),
        forced_eos_token_id=tuple(int(e) for e in forced_eos_ids),
        sampling=sampling,
    )


def _is_id(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0
