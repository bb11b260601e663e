"""Request and response shapes per endpoint, as data: ``ENDPOINTS[path] = Endpoint(task, parse, render)``.

``parse`` turns a JSON body into a ``Call`` (which model, the inputs, the pipeline's keyword arguments);
``render`` turns the pipeline's per-input results into the JSON that clients of text-embeddings-inference,
OpenAI or the Hugging Face Inference API expect. Everything between the two is the shared handler.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._limits import RequestError


@dataclass
class Call:
    """One parsed request: the model asked for (None: the first serving the task), the inputs, the kwargs."""

    model: Any
    single: bool
    items: list[Any]
    params: dict[str, Any]
    extra: dict[str, Any]  # response options that are not pipeline arguments (encoding_format)


@dataclass(frozen=True)
class Endpoint:
    task: str
    parse: Callable[[Any], Call]
    render: Callable[[Call, list[Any], str, int], Any]


def _object(body: Any, allowed: set[str], required: str) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise RequestError(422, f"the body must be a JSON object with {required!r}, got {type(body).__name__}")
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise RequestError(422, f"unknown fields {unknown}; this endpoint takes {sorted(allowed)}")
    if required not in body:
        raise RequestError(422, f'missing field {required!r}; e.g. {{{required!r}: "I love this!"}}')
    return body


def _flag(body: dict[str, Any], key: str, default: bool) -> bool:
    value = body.get(key, default)
    if not isinstance(value, bool):
        raise RequestError(422, f"{key}={value!r}; use true or false")
    return value


def _inputs(value: Any, key: str, single_types: tuple[type, ...] = (str,)) -> tuple[bool, list[Any]]:
    """(single, items): one input, or a non-empty list of them; the items' own types are the pipeline's to check."""
    if isinstance(value, single_types):
        return True, [value]
    if isinstance(value, list):
        if not value:
            raise RequestError(422, f"{key} is an empty list; send at least one input")
        return False, value
    raise RequestError(422, f"{key} must be a string or a list of strings, got {type(value).__name__} ({value!r:.60})")


def _vector(v: np.ndarray, fmt: str) -> Any:
    # OpenAI's base64 format: little-endian float32 bytes, which its clients decode with numpy.frombuffer.
    return base64.b64encode(np.asarray(v, dtype="<f4").tobytes()).decode() if fmt == "base64" else v.tolist()


# -- TEI: /predict, /embed ----------------------------------------------------------------------------------
def parse_predict(body: Any) -> Call:
    body = _object(body, {"inputs", "raw_scores", "truncate", "model"}, "inputs")
    single, items = _inputs(body["inputs"], "inputs", (str, dict))
    # A pair is [text, text_pair] inside the list (TEI's batch-of-pairs shape) or {"text": ..., "text_pair": ...}.
    items = [{"text": x[0], "text_pair": x[1]} if isinstance(x, list) and len(x) == 2 else x for x in items]
    params = {
        "top_k": None,
        "truncation": _flag(body, "truncate", False),
        "function_to_apply": "none" if _flag(body, "raw_scores", False) else None,
    }
    return Call(body.get("model"), single, items, params, {})


def parse_embed(body: Any) -> Call:
    body = _object(body, {"inputs", "normalize", "truncate", "model"}, "inputs")
    single, items = _inputs(body["inputs"], "inputs")
    params = {"normalize": _flag(body, "normalize", True), "truncation": _flag(body, "truncate", False)}
    return Call(body.get("model"), single, items, params, {})


def render_list(call: Call, results: list[Any], model: str, tokens: int) -> Any:
    """A single input gets its result, a list of inputs the list of results (TEI's /predict shape)."""
    return results[0] if call.single else results


def render_embed(call: Call, results: list[Any], model: str, tokens: int) -> Any:
    return [_vector(v, "float") for v in results]  # TEI: always a list of vectors


# -- OpenAI: /v1/embeddings -------------------------------------------------------------------------------
def parse_openai(body: Any) -> Call:
    body = _object(body, {"input", "model", "encoding_format", "user", "dimensions"}, "input")
    single, items = _inputs(body["input"], "input")
    fmt = body.get("encoding_format", "float")
    if fmt not in ("float", "base64"):
        raise RequestError(422, f"encoding_format={fmt!r}; use 'float' or 'base64'")
    if body.get("dimensions") is not None:
        raise RequestError(422, "dimensions is not supported: these models have one output size; leave it out")
    return Call(body.get("model"), single, items, {"truncation": False}, {"encoding_format": fmt})


def render_openai(call: Call, results: list[Any], model: str, tokens: int) -> Any:
    fmt = call.extra["encoding_format"]
    return {
        "object": "list",
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        "data": [{"object": "embedding", "index": i, "embedding": _vector(v, fmt)} for i, v in enumerate(results)],
    }


# -- Hugging Face Inference API shape: {"inputs": ..., "parameters": {pipeline kwargs}} ----------------------
def parse_task(body: Any) -> Call:
    body = _object(body, {"inputs", "parameters", "model"}, "inputs")
    single, items = _inputs(body["inputs"], "inputs", (str, dict))
    params = body.get("parameters") or {}
    if not isinstance(params, dict):
        raise RequestError(422, f"parameters must be an object of the pipeline's arguments, got {params!r:.60}")
    return Call(body.get("model"), single, items, dict(params), {})


ENDPOINTS: dict[str, Endpoint] = {
    "/predict": Endpoint("text-classification", parse_predict, render_list),
    "/embed": Endpoint("sentence-embeddings", parse_embed, render_embed),
    "/v1/embeddings": Endpoint("sentence-embeddings", parse_openai, render_openai),
    "/fill-mask": Endpoint("fill-mask", parse_task, render_list),
    "/ner": Endpoint("token-classification", parse_task, render_list),
    "/question-answering": Endpoint("question-answering", parse_task, render_list),
    "/zero-shot-classification": Endpoint("zero-shot-classification", parse_task, render_list),
}


def parse_tokenize(body: Any) -> Call:
    body = _object(body, {"inputs", "add_special_tokens", "truncate", "model"}, "inputs")
    single, items = _inputs(body["inputs"], "inputs")
    params = {"add_special_tokens": _flag(body, "add_special_tokens", True), "truncate": _flag(body, "truncate", False)}
    return Call(body.get("model"), single, items, params, {})


def render_tokens(encoding: Any) -> list[dict[str, Any]]:
    """TEI's /tokenize shape: id, text, special, and the character span (null for special tokens)."""
    out = []
    for tid, text, special, (start, stop) in zip(
        encoding.ids, encoding.tokens, encoding.special_tokens_mask, encoding.offsets
    ):
        out.append(
            {
                "id": tid,
                "text": text,
                "special": bool(special),
                "start": None if special else start,
                "stop": None if special else stop,
            }
        )
    return out
