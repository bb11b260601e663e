"""``/summarization``, ``/translation`` and ``/text2text-generation`` in the Hugging Face Inference API's shapes,
so that ``huggingface_hub.InferenceClient.summarization`` / ``.translation`` work unchanged.

Request: ``{"inputs": str | [str], "parameters": {"clean_up_tokenization_spaces", "truncation",
"generate_parameters": {...}, "src_lang", "tgt_lang", ...generation settings}, "model"?}``; answer: one list of
``{"summary_text" | "translation_text" | "generated_text": ...}`` per input (a single input: that list). A
request runs the pipeline whole on a worker thread: generation is a loop of model calls, which the encoder
batcher's one-call protocol does not describe (requests are not batched together yet).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from ._endpoints import Call, _inputs, _object, _parameters
from ._limits import RequestError

PATHS = {
    "/summarization": "summarization",
    "/translation": "translation",
    "/text2text-generation": "text2text-generation",
}


def parse(body: Any) -> Call:
    body = _object(body, {"inputs", "parameters", "model"}, "inputs")
    single, items = _inputs(body["inputs"], "inputs")
    params = _parameters(body)
    generate = params.pop("generate_parameters", None) or {}
    if not isinstance(generate, dict):
        raise RequestError(422, f"generate_parameters must be an object, got {generate!r:.60}")
    if params.get("truncation") in ("do_not_truncate", "only_first", "longest_first", "only_second"):
        params["truncation"] = params["truncation"] != "do_not_truncate"  # the hub's TruncationStrategy names
    params = {k: v for k, v in params.items() if v is not None}
    return Call(body.get("model"), single, items, {**params, **generate}, {})


def handlers(
    find: Callable[[str, Any], Any],
    body_of: Callable[[Any], Awaitable[tuple[Any, bool]]],
    dumps: Callable[[Any], bytes],
) -> dict[str, Callable[[Any], Awaitable[bytes]]]:
    """One request handler per path; ``find(task, model)`` is the model set's lookup."""

    def make(task: str) -> Callable[[Any], Awaitable[bytes]]:
        async def handle(receive: Any) -> bytes:
            body, _ = await body_of(receive)
            call = parse(body)
            pipe = find(task, call.model).pipelines[task]
            results = await asyncio.to_thread(lambda: list(pipe.iter(call.items, **call.params)))
            return dumps(results[0] if call.single else results)

        return handle

    return {path: make(task) for path, task in PATHS.items()}
