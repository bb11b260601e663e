"""Request and response shapes per endpoint, as data: ``ENDPOINTS[path] = Endpoint(task, parse, render)``.

``parse`` turns a JSON body into a ``Call`` (which model, the inputs, the pipeline's keyword arguments);
``render`` turns the pipeline's per-input results into the JSON that clients of text-embeddings-inference,
OpenAI or the Hugging Face Inference API expect. Everything between the two is the shared handler.
"""

from __future__ import annotations

import base64
import contextvars
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._limits import RequestError
from ._token_ids import is_ids

# The request's User-Agent, set by the guard for the handler's task: the one answer whose shape differs
# between huggingface_hub's versions (zero-shot) is rendered for the version that asked.
USER_AGENT: contextvars.ContextVar[str] = contextvars.ContextVar("onnxpipe_user_agent", default="")
# huggingface_hub's own User-Agent reads "unknown/None; hf_hub/2.4.0; python/3.11.7" (its build_hf_headers);
# "huggingface_hub/X" is accepted too. Its major version picks the zero-shot shape.
_HUB_MAJOR = re.compile(r"(?:^|[;\s])(?:hf_hub|huggingface_hub)/(\d+)\.")


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
def _parameters(body: dict[str, Any], allowed: set[str] | None = None) -> dict[str, Any]:
    """The Hugging Face clients' ``parameters`` object (huggingface_hub sends it, often empty)."""
    params = body.get("parameters") or {}
    if not isinstance(params, dict):
        raise RequestError(422, f"parameters must be an object of the pipeline's arguments, got {params!r:.60}")
    unknown = sorted(set(params) - allowed) if allowed is not None else []
    if unknown:
        raise RequestError(422, f"unknown parameters {unknown}; this endpoint takes {sorted(allowed or ())}")
    return dict(params)


def _truncate(body: dict[str, Any], key: str = "truncate") -> bool | None:
    """The request's truncate flag; None (absent) means the server's --auto-truncate."""
    return None if body.get(key) is None else _flag(body, key, False)


def parse_predict(body: Any) -> Call:
    body = _object(body, {"inputs", "raw_scores", "truncate", "model", "parameters"}, "inputs")
    single, items = _inputs(body["inputs"], "inputs", (str, dict))
    # A pair is [text, text_pair] inside the list (TEI's batch-of-pairs shape) or {"text": ..., "text_pair": ...}.
    items = [{"text": x[0], "text_pair": x[1]} if isinstance(x, list) and len(x) == 2 else x for x in items]
    hub = _parameters(body, {"function_to_apply", "top_k", "truncation"})
    params = {
        "top_k": hub.get("top_k"),
        "truncation": _truncate(body) if hub.get("truncation") is None else hub["truncation"],
        "function_to_apply": "none" if _flag(body, "raw_scores", False) else hub.get("function_to_apply"),
    }
    # huggingface_hub reads one text's answer as a list holding its list of labels (the Inference API's shape).
    return Call(body.get("model"), single, items, params, {"nested": "parameters" in body})


def _dimensions(body: dict[str, Any]) -> int | None:
    dims = body.get("dimensions")
    if dims is not None and (isinstance(dims, bool) or not isinstance(dims, int) or dims < 1):
        raise RequestError(422, f"dimensions={dims!r}; use a positive integer, at most the model's output size")
    return dims


_EMBED_FIELDS = {"inputs", "normalize", "truncate", "model", "parameters", "dimensions"}
# huggingface_hub's feature_extraction sends these beside inputs (at the top level, not under parameters).
_HUB_EMBED_FIELDS = {"prompt_name", "truncation_direction", "encoding_format"}


def _embed_options(body: dict[str, Any]) -> dict[str, Any]:
    if body.get("prompt_name") is not None:
        raise RequestError(
            422, "prompt_name is not supported: the folder records no prompts; put the prompt in the text"
        )
    direction = body.get("truncation_direction")
    if direction is not None and str(direction).lower() != "right":
        raise RequestError(422, f"truncation_direction={direction!r}; only 'right' (keep the text's start) is served")
    if body.get("encoding_format") not in (None, "float"):
        raise RequestError(422, f"encoding_format={body['encoding_format']!r}; this endpoint answers floats")
    _parameters(body, set())
    return {"normalize": _flag(body, "normalize", True), "truncation": _truncate(body)}


def parse_embed(body: Any) -> Call:
    body = _object(body, _EMBED_FIELDS | _HUB_EMBED_FIELDS, "inputs")
    single, items = _inputs(body["inputs"], "inputs")
    return Call(body.get("model"), single, items, _embed_options(body), {"dimensions": _dimensions(body)})


def parse_similarity(body: Any) -> Call:
    """TEI's and the Hub's sentence similarity: ``{"inputs": {"source_sentence": s, "sentences": [...]}}``."""
    body = _object(body, _EMBED_FIELDS | _HUB_EMBED_FIELDS, "inputs")
    inputs = body["inputs"]
    if not isinstance(inputs, dict) or not isinstance(inputs.get("source_sentence"), str):
        raise RequestError(422, 'inputs must be {"source_sentence": "...", "sentences": ["...", ...]}')
    _, sentences = _inputs(inputs.get("sentences"), "inputs.sentences")
    options = {**_embed_options(body), "normalize": True}
    return Call(body.get("model"), False, [inputs["source_sentence"], *sentences], options, {"dimensions": None})


def render_similarity(call: Call, results: list[Any], model: str, tokens: int) -> Any:
    source = np.asarray(results[0], dtype=np.float32)
    return [float(np.dot(source, np.asarray(v, dtype=np.float32))) for v in results[1:]]


def shorten(v: Any, dims: int | None) -> np.ndarray:
    """Matryoshka-style: the first ``dims`` values, renormalised to unit length (422 past the output size)."""
    v = np.asarray(v, dtype=np.float32)
    if dims is None or dims == v.shape[-1]:
        return v  # type: ignore[no-any-return]
    if dims > v.shape[-1]:
        raise RequestError(422, f"dimensions={dims} is over this model's output size {v.shape[-1]}")
    cut: np.ndarray = v[:dims] / max(float(np.linalg.norm(v[:dims])), 1e-12)
    return cut


def render_list(call: Call, results: list[Any], model: str, tokens: int) -> Any:
    """A single input gets its result, a list of inputs the list of results (TEI's /predict shape)."""
    return results[0] if call.single and not call.extra.get("nested") else results


def render_embed(call: Call, results: list[Any], model: str, tokens: int) -> Any:
    dims = call.extra["dimensions"]
    return [_vector(shorten(v, dims), "float") for v in results]  # TEI: always a list of vectors


def parse_embed_all(body: Any) -> Call:
    """TEI's /embed_all: every token's last hidden state."""
    body = _object(body, {"inputs", "truncate", "model", "truncation_direction", "prompt_name"}, "inputs")
    single, items = _inputs(body["inputs"], "inputs")
    options = _embed_options(body)
    return Call(body.get("model"), single, items, {"truncation": options["truncation"], "return_tensors": True}, {})


def render_embed_all(call: Call, results: list[Any], model: str, tokens: int) -> Any:
    return [np.asarray(r, dtype=np.float32)[0].tolist() for r in results]  # per input: [tokens][hidden]


# -- TEI: /rerank, for a cross-encoder (a text-classification export with one label) --------------------------
def parse_rerank(body: Any) -> Call:
    fields = {"query", "texts", "return_text", "raw_scores", "truncate", "truncation_direction", "model"}
    body = _object(body, fields, "texts")
    query = body.get("query")
    if not isinstance(query, str):
        raise RequestError(422, f'query must be a string, got {type(query).__name__}; e.g. {{"query": "What is"}}')
    _, texts = _inputs(body["texts"], "texts")
    if body.get("truncation_direction") not in (None, "right", "Right"):
        raise RequestError(422, f"truncation_direction={body['truncation_direction']!r}; only 'right' is served")
    items = [{"text": query, "text_pair": t} for t in texts]
    params = {"top_k": None, "function_to_apply": "none", "truncation": _truncate(body)}
    extra = {"texts": texts, "return_text": _flag(body, "return_text", False), "raw": _flag(body, "raw_scores", False)}
    return Call(body.get("model"), False, items, params, extra)


def render_rerank(call: Call, results: list[Any], model: str, tokens: int) -> Any:
    """TEI's shape: ``[{"index", "score", "text"?}]``, best first; scores through a sigmoid unless raw."""
    out = []
    for i, labels in enumerate(results):
        logit = float(labels[0]["score"])
        row: dict[str, Any] = {"index": i, "score": logit if call.extra["raw"] else float(1 / (1 + np.exp(-logit)))}
        if call.extra["return_text"]:
            row["text"] = call.extra["texts"][i]
        out.append(row)
    return sorted(out, key=lambda r: -r["score"])


def render_zero_shot(call: Call, results: list[Any], model: str, tokens: int) -> Any:
    """transformers' ``{sequence, labels, scores}`` (which huggingface_hub 0.x parses), or for huggingface_hub
    1.x and later, which parse the Inference API's current shape, a list of ``{label, score}``."""
    hub = _HUB_MAJOR.search(USER_AGENT.get())
    if hub is not None and int(hub.group(1)) >= 1:
        results = [[{"label": lab, "score": sc} for lab, sc in zip(r["labels"], r["scores"])] for r in results]
    return results[0] if call.single else results


# -- OpenAI: /v1/embeddings -------------------------------------------------------------------------------
# OpenAI's own limit on inputs per /v1/embeddings request (its clients, LangChain's among them, send up to it).
OPENAI_MAX_INPUTS = 2048


def parse_openai(body: Any) -> Call:
    body = _object(body, {"input", "model", "encoding_format", "user", "dimensions", "truncate"}, "input")
    value = body["input"]
    if is_ids(value):  # one input as token ids: [101, 2023, 102]
        value = [value]
    single, items = _inputs(value, "input")
    ids = any(isinstance(x, list) for x in items)
    if ids and not all(is_ids(x) for x in items):
        raise RequestError(
            422, "input mixes texts and token-id lists, or holds an empty or non-integer list; send one kind", "input"
        )
    fmt = body.get("encoding_format", "float")
    if fmt not in ("float", "base64"):
        raise RequestError(422, f"encoding_format={fmt!r}; use 'float' or 'base64'", param="encoding_format")
    params = {"truncation": _truncate(body)}
    extra = {"encoding_format": fmt, "dimensions": _dimensions(body), "ids": ids}
    return Call(body.get("model"), single, items, params, extra)


def render_openai(call: Call, results: list[Any], model: str, tokens: int) -> Any:
    fmt, dims = call.extra["encoding_format"], call.extra["dimensions"]
    return {
        "object": "list",
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        "data": [
            {"object": "embedding", "index": i, "embedding": _vector(shorten(v, dims), fmt)}
            for i, v in enumerate(results)
        ],
    }


# -- Hugging Face Inference API shape: {"inputs": ..., "parameters": {pipeline kwargs}} ----------------------
def parse_task(body: Any) -> Call:
    body = _object(body, {"inputs", "parameters", "model"}, "inputs")
    single, items = _inputs(body["inputs"], "inputs", (str, dict))
    return Call(body.get("model"), single, items, _parameters(body), {})


ENDPOINTS: dict[str, Endpoint] = {
    "/predict": Endpoint("text-classification", parse_predict, render_list),
    "/embed": Endpoint("sentence-embeddings", parse_embed, render_embed),
    "/v1/embeddings": Endpoint("sentence-embeddings", parse_openai, render_openai),
    "/fill-mask": Endpoint("fill-mask", parse_task, render_list),
    "/ner": Endpoint("token-classification", parse_task, render_list),
    "/question-answering": Endpoint("question-answering", parse_task, render_list),
    "/zero-shot-classification": Endpoint("zero-shot-classification", parse_task, render_zero_shot),
    "/similarity": Endpoint("sentence-embeddings", parse_similarity, render_similarity),
    "/embed_all": Endpoint("feature-extraction", parse_embed_all, render_embed_all),
    "/rerank": Endpoint("rerank", parse_rerank, render_rerank),
}

# What ``POST /`` and ``POST /invocations`` run (TEI's routing): the served model's main task.
MAIN_ENDPOINTS: dict[str, str] = {
    "text-classification": "/predict",
    "sentence-embeddings": "/embed",
    "fill-mask": "/fill-mask",
    "token-classification": "/ner",
    "question-answering": "/question-answering",
    "zero-shot-classification": "/zero-shot-classification",
    "rerank": "/rerank",
}


def main_endpoint(task: str, body: Any) -> Endpoint | None:
    """The endpoint ``POST /`` runs for a model of main ``task`` (sentence similarity by its inputs' shape)."""
    if task == "sentence-embeddings" and isinstance(body, dict) and isinstance(body.get("inputs"), dict):
        return ENDPOINTS["/similarity"]
    path = MAIN_ENDPOINTS.get(task)
    return None if path is None else ENDPOINTS[path]


def parse_tokenize(body: Any) -> Call:
    body = _object(body, {"inputs", "add_special_tokens", "truncate", "model"}, "inputs")
    single, items = _inputs(body["inputs"], "inputs")
    params = {"add_special_tokens": _flag(body, "add_special_tokens", True), "truncate": _flag(body, "truncate", False)}
    return Call(body.get("model"), single, items, params, {})


def parse_decode(body: Any) -> Call:
    """TEI's /decode: ``{"ids": [...] or [[...], ...], "skip_special_tokens": true}`` -> a text per row."""
    body = _object(body, {"ids", "skip_special_tokens", "model"}, "ids")
    ids = body["ids"]
    rows = ids if isinstance(ids, list) and ids and all(isinstance(r, list) for r in ids) else [ids]
    for i, row in enumerate(rows):
        if not isinstance(row, list) or not all(isinstance(t, int) and not isinstance(t, bool) for t in row):
            raise RequestError(422, f"ids row {i} must be a list of integers, got {row!r:.60}")
    skip = _flag(body, "skip_special_tokens", True)
    return Call(body.get("model"), False, rows, {"skip_special_tokens": skip}, {})


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
