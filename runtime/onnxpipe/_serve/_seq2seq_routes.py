"""``/summarization``, ``/translation`` and ``/text2text-generation`` in the Hugging Face Inference API's shapes,
so that ``huggingface_hub.InferenceClient.summarization`` / ``.translation`` work unchanged; ``POST /`` of an
encoder-decoder folder runs its main task the same way.

Request: ``{"inputs": str | [str], "parameters": {"clean_up_tokenization_spaces", "truncation",
"generate_parameters": {...}, "src_lang", "tgt_lang", ...generation settings}, "model"?}``; answer: one list of
``{"summary_text" | "translation_text" | "generated_text": ...}`` per input (a single input: that list).

Requests run off the event loop, and concurrent ones are batched: requests for the same pipeline with the same
settings that arrive while a call runs wait for it to end, then run as one ``pipe.iter`` over all their inputs
(the pipeline pads them into batches of its ``batch_size``). Only where that cannot change an answer: a float
variant (a low-bit model's rounding of a row depends on its batch-mates: each request then runs alone, as the
decoder loop does) without sampling (a seeded generator shared by batch-mates would draw differently). A
batched call that fails is rerun request by request, so one request's bad input fails only that request.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

from ._batcher import settle
from ._endpoints import Call, _inputs, _object, _parameters
from ._limits import RequestError

PATHS = {
    "/summarization": "summarization",
    "/translation": "translation",
    "/text2text-generation": "text2text-generation",
}
TASKS = frozenset(PATHS.values())
# The answer key of each task, for POST / of a text2text folder (below).
KEYS = {"summarization": "summary_text", "translation": "translation_text", "text2text-generation": "generated_text"}


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


class Seq2SeqBatcher:
    """Runs seq2seq calls on worker threads, merging concurrent requests of one pipeline and settings.

    Example (inside the server's event loop):
        >>> results = await Seq2SeqBatcher().run(pipe, ["A long text."], {"num_beams": 2})
    """

    def __init__(self) -> None:
        self._waiting: dict[tuple[int, str], list[tuple[list[Any], asyncio.Future[list[Any]]]]] = {}

    async def run(self, pipe: Any, items: list[Any], params: dict[str, Any]) -> list[Any]:
        """One result per item, as ``list(pipe.iter(items, **params))``."""
        if not self._mergeable(pipe, params):
            return await asyncio.to_thread(_call, pipe, items, params)
        key = (id(pipe), json.dumps(params, sort_keys=True, default=repr))
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        queue = self._waiting.get(key)
        self._waiting.setdefault(key, []).append((items, future))
        if queue is None:  # nothing runs for this key: this request starts the runner, which drains the key
            asyncio.get_running_loop().create_task(self._drain(key, pipe, params))
        return await future

    @staticmethod
    def _mergeable(pipe: Any, params: dict[str, Any]) -> bool:
        if pipe.model.execution == "alone":
            return False
        try:
            return not pipe.settings(**params).sampling.do_sample
        except Exception:  # bad settings: run alone, where the pipeline names the problem to this request only
            return False

    async def _drain(self, key: tuple[int, str], pipe: Any, params: dict[str, Any]) -> None:
        # The key stays in _waiting (possibly empty) while a call runs, so arrivals queue behind it.
        try:
            while self._waiting.get(key):
                waiting = [(items, f) for items, f in self._waiting[key] if not f.done()]
                self._waiting[key] = []
                if not waiting:
                    continue
                merged = [x for items, _ in waiting for x in items]
                try:
                    results = await asyncio.to_thread(_call, pipe, merged, params)
                except Exception as e:
                    if len(waiting) == 1:
                        settle(waiting[0][1], None, e)
                        continue
                    results = None
                if results is None:  # one request's input failed the batch: each request alone
                    for items, f in waiting:
                        try:
                            alone = await asyncio.to_thread(_call, pipe, items, params)
                        except Exception as e:
                            settle(f, None, e)
                        else:
                            settle(f, alone, None)
                    continue
                start = 0
                for items, f in waiting:
                    settle(f, results[start : start + len(items)], None)
                    start += len(items)
        finally:
            self._waiting.pop(key, None)


def _call(pipe: Any, items: list[Any], params: dict[str, Any]) -> list[Any]:
    return list(pipe.iter(items, **params))


def handlers(
    find: Callable[[str, Any], Any],
    body_of: Callable[[Any], Awaitable[tuple[Any, bool]]],
    dumps: Callable[[Any], bytes],
) -> tuple[dict[str, Callable[[Any], Awaitable[bytes]]], Callable[[str, Any], Awaitable[bytes]]]:
    """One request handler per path, and ``run_body(task, body)`` for ``POST /``; ``find(task, model)`` is the
    model set's lookup."""
    batcher = Seq2SeqBatcher()

    async def run_body(task: str, body: Any) -> bytes:
        call = parse(body)
        served = find(task, call.model)
        results = await batcher.run(served.pipelines[task], call.items, call.params)
        if task == "text2text-generation":
            # POST / of a text2text folder: huggingface_hub's summarization and translation post the same body
            # there and read summary_text / translation_text; the main task's text answers under those keys too.
            results = [[{**{k: row["generated_text"] for k in KEYS.values()}, **row} if "generated_text" in row else row
                        for row in r] for r in results]  # fmt: skip
        return dumps(results[0] if call.single else results)

    def make(task: str) -> Callable[[Any], Awaitable[bytes]]:
        async def handle(receive: Any) -> bytes:
            body, _ = await body_of(receive)
            call = parse(body)
            pipe = find(task, call.model).pipelines[task]
            results = await batcher.run(pipe, call.items, call.params)
            return dumps(results[0] if call.single else results)

        return handle

    return {path: make(task) for path, task in PATHS.items()}, run_body
