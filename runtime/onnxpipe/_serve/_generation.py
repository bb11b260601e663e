"""Generation over HTTP: OpenAI's ``/v1/chat/completions`` and ``/v1/completions``, TGI's ``/generate`` and
``/generate_stream`` (and ``POST /`` when the first served model generates, as TGI routes it), answered whole or
as server-sent events (``data: {...}`` then ``data: [DONE]``).

Requests go to the model's ``Decoder`` (``_decoding``), which decodes them continuously batched on its own
thread; its events come back to the request's task through an asyncio queue. A client that goes away
mid-answer has its task cancelled (the protocol's CANCEL hook), which marks its request cancelled: the decoder
drops its rows before the next step.

Errors on ``/v1/*`` have OpenAI's shape ``{"error": {"message", "type", "param", "code"}}``; TGI's routes
answer ``{"error", "error_type"}`` as TGI does (what huggingface_hub parses).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.types import Receive, Scope, Send

from .._chat import render
from .._generate import check_room
from .._pipelines.text_generation import TextGenerationPipeline
from .._sampling import Sampling
from ..errors import OnnxpipeError
from ._decoding import MAX_ROWS, Decoder, Failed, Finished, Request, Token
from ._limits import Limits, RequestError, parse_json, read_body
from ._models import ModelSet, ServedModel

log = logging.getLogger("onnxpipe.serve")
TASK = "text-generation"
DEFAULT_MAX_TOKENS = {"chat": 256, "completion": 16, "tgi": 100}  # OpenAI's completions and TGI's defaults
MAX_STOPS = 4
# OpenAI fields this server cannot honour: refused when set, never silently ignored.
_UNSUPPORTED = ("logprobs", "top_logprobs", "tools", "functions", "logit_bias", "best_of", "suffix")
_TGI_UNSUPPORTED = ("best_of", "grammar", "adapter_id", "truncate", "typical_p", "watermark")
# TGI's own default for --max-top-n-tokens: the most top_n_tokens a request may ask for.
MAX_TOP_N_TOKENS = 5

# Answers the whole response itself; returns the HTTP status it sent.
StreamHandler = Callable[[Scope, Receive, Send], Awaitable[int]]


class BadParameter(RequestError):
    def __init__(self, param: str | None, message: str, status: int = 400):
        super().__init__(status, message, "invalid_request_error")
        self.param = param


@dataclass
class Job:
    """A parsed request: prompts (token ids), what to generate and how to answer."""

    kind: str  # "chat", "completion" or "tgi"
    prompts: list[list[int]]
    prompt_texts: list[str]
    max_new_tokens: int
    sampling: Sampling
    n: int = 1
    stop: tuple[str, ...] = ()
    stream: bool = False
    include_usage: bool = False
    repetition_penalty: float = 1.0
    return_full_text: bool = False
    details: bool = False
    top_n_tokens: int = 0
    model: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def _get(body: dict[str, Any], name: str, kind: type | tuple[type, ...], default: Any = None) -> Any:
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, kind) or isinstance(value, bool):  # JSON true is no number
        raise BadParameter(name, f"{name}={value!r} has the wrong type; see the endpoint's documentation")
    return value


def _int(body: dict[str, Any], name: str, default: int | None, low: int, high: int | None = None) -> int | None:
    value = _get(body, name, int, default)
    if value is not None and (value < low or (high is not None and value > high)):
        bound = f"from {low} to {high}" if high is not None else f">= {low}"
        raise BadParameter(name, f"{name}={value} is out of range; use an integer {bound}")
    return value  # type: ignore[no-any-return]


def _stops(value: Any, name: str) -> tuple[str, ...]:
    stops = [value] if isinstance(value, str) else value if isinstance(value, list) else None
    if value is None:
        return ()
    if stops is None or not all(isinstance(s, str) and s for s in stops) or len(stops) > MAX_STOPS:
        raise BadParameter(name, f"{name}={value!r}; use a non-empty string or a list of at most {MAX_STOPS} of them")
    return tuple(stops)


def _sampling(body: dict[str, Any], openai: bool) -> Sampling:
    temperature = _get(body, "temperature", (int, float), 1.0 if openai else None)
    top_p = _get(body, "top_p", (int, float), None)
    top_k = _int(body, "top_k", None, 0) if not openai else None
    seed = _int(body, "seed", None, 0)
    if openai:
        do_sample = temperature != 0
    else:  # TGI samples when asked to, or when a sampling knob is set
        do_sample = bool(body.get("do_sample")) or any(v is not None for v in (temperature, top_p, top_k))
        do_sample = do_sample and temperature != 0
    if not do_sample:
        return Sampling(seed=seed)
    sampling = Sampling(
        do_sample=True,
        temperature=float(temperature if temperature is not None else 1.0),
        top_k=top_k or 0,
        top_p=float(top_p if top_p is not None else 1.0),
        seed=seed,
    )
    try:
        sampling.check()
    except ValueError as e:
        raise BadParameter(str(e).split("=")[0], str(e)) from None
    return sampling


def _message_text(content: Any, index: int) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text" for p in content):
        return "".join(str(p.get("text", "")) for p in content)
    raise BadParameter(f"messages[{index}].content", f"messages[{index}].content must be a string or text parts")


def _pipeline(served: ServedModel) -> TextGenerationPipeline:
    pipe = served.pipelines[TASK]
    assert isinstance(pipe, TextGenerationPipeline)
    return pipe


class GenerationRoutes:
    """The generation endpoints of a ModelSet, with one Decoder per text-generation model."""

    def __init__(self, models: ModelSet, limits: Limits, cancel_key: str):
        # cancel_key: where a request's scope takes the way to stop it when its client goes away (_app's)
        self.models, self.limits, self.cancel_key = models, limits, cancel_key
        self.decoders: dict[str, Decoder] = {
            m.name: Decoder(_pipeline(m)) for m in models.by_name.values() if TASK in m.pipelines
        }

    def routes(self) -> dict[str, StreamHandler]:
        if not self.decoders:
            return {}
        table: dict[str, StreamHandler] = {
            "/v1/chat/completions": self._handler("chat"),
            "/v1/completions": self._handler("completion"),
            "/generate": self._handler("tgi"),
            "/generate_stream": self._handler("tgi", stream=True),
        }
        first = next(iter(self.models.by_name.values()))
        if TASK in first.pipelines:  # TGI's compatibility route, what InferenceClient(url).text_generation posts
            table["/"] = self._handler("tgi", root=True)
        return table

    def start(self) -> None:
        for d in self.decoders.values():
            d.start()

    def close(self) -> None:
        for d in self.decoders.values():
            d.close()

    # -- parsing ----------------------------------------------------------------------------------------
    def _model(self, name: Any) -> ServedModel:
        if isinstance(name, str) and name in self.models.by_name:
            return self.models.find(TASK, name)
        if len(self.decoders) == 1:  # clients must name a model; with one generating model, any name is it
            return self.models.by_name[next(iter(self.decoders))]
        raise BadParameter(
            "model", f"model={name!r} is not served here; generation models: {sorted(self.decoders)}", 404
        )

    def _parse(self, kind: str, body: Any, stream: bool | None) -> tuple[Job, Decoder]:
        if not isinstance(body, dict):
            raise BadParameter(None, "the body must be a JSON object")
        openai = kind != "tgi"
        params: dict[str, Any] = body if openai else body.get("parameters") or {}
        if not isinstance(params, dict):
            raise BadParameter("parameters", "parameters must be a JSON object")
        served = self._model(body.get("model"))
        pipe = _pipeline(served)
        unsupported = _UNSUPPORTED if openai else _TGI_UNSUPPORTED
        for name in unsupported:
            if params.get(name) not in (None, False, 0, [], {}):
                raise BadParameter(name, f"{name} is not supported by this server; leave it out", 422)
        texts: Any
        if kind == "chat":
            messages = body.get("messages")
            if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
                raise BadParameter("messages", "messages must be a non-empty list of {role, content} objects")
            chat = [{**m, "content": _message_text(m.get("content"), i)} for i, m in enumerate(messages)]
            texts = [render(pipe.info.chat_template, chat, pipe.specials, served.name)]
            specials = False
        else:
            prompt = body.get("prompt") if kind == "completion" else body.get("inputs")
            texts = [prompt] if isinstance(prompt, str) else prompt
            name = "prompt" if kind == "completion" else "inputs"
            if not isinstance(texts, list) or not texts or not all(isinstance(t, str) and t for t in texts):
                raise BadParameter(name, f"{name} must be a non-empty string" + (" or list of them" if openai else ""))
            if kind == "tgi" and len(texts) != 1:
                raise BadParameter(name, "inputs must be one string")
            specials = True
        prompts = [e.ids for e in pipe.tokenizer.encode_batch(texts, truncation=False, add_special_tokens=specials)]
        if not all(prompts):
            raise BadParameter("prompt", "a prompt encodes to no tokens; send a non-empty prompt")
        n = _int(params, "n", 1, 1, MAX_ROWS) if openai else 1
        assert n is not None
        if len(prompts) * n > MAX_ROWS:
            raise BadParameter("n", f"{len(prompts)} prompts x n={n} sequences is over {MAX_ROWS}; send fewer")
        names = ("max_completion_tokens", "max_tokens") if kind == "chat" else ("max_tokens",)
        if not openai:
            names = ("max_new_tokens",)
        max_new = None
        for name in names:
            max_new = max_new if max_new is not None else _int(params, name, None, 1)
        room = served.manifest.max_length - max(len(p) for p in prompts)
        if max_new is None:
            max_new = max(1, min(DEFAULT_MAX_TOKENS[kind], room))
        try:
            check_room(max(len(p) for p in prompts), max_new, served.manifest.max_length)
        except OnnxpipeError as e:
            raise BadParameter(names[-1], str(e)) from None
        stream_options = body.get("stream_options") or {}
        penalty = _get(params, "repetition_penalty", (int, float), 1.0)
        job = Job(
            kind=kind,
            prompts=prompts,
            prompt_texts=texts,
            max_new_tokens=max_new,
            sampling=_sampling(params, openai),
            n=n,
            stop=_stops(params.get("stop"), "stop"),
            stream=bool(body.get("stream")) if stream is None else stream,
            include_usage=isinstance(stream_options, dict) and bool(stream_options.get("include_usage")),
            repetition_penalty=float(penalty),
            return_full_text=bool(params.get("return_full_text")),
            details=bool(params.get("details")),
            top_n_tokens=(_int(params, "top_n_tokens", 0, 0, MAX_TOP_N_TOKENS) or 0) if not openai else 0,
            model=served.name,
        )
        if not 1e-4 <= job.repetition_penalty <= 1e4:
            raise BadParameter("repetition_penalty", "repetition_penalty must be from 0.0001 to 10000 (1: none)")
        return job, self.decoders[served.name]

    # -- answering --------------------------------------------------------------------------------------
    def _handler(self, kind: str, stream: bool | None = None, root: bool = False) -> StreamHandler:
        async def handle(scope: Scope, receive: Receive, send: Send) -> int:
            try:
                raw = await read_body(receive, self.limits.payload_limit, self.limits.body_timeout)
                job, decoder = self._parse(kind, parse_json(raw), stream)
            except RequestError as e:
                return await _error(send, kind, e)
            except (OnnxpipeError, TypeError, ValueError) as e:
                return await _error(send, kind, BadParameter(None, str(e), 422))
            events: asyncio.Queue[tuple[int, Token | Finished | Failed]] = asyncio.Queue()
            loop = asyncio.get_running_loop()
            requests = []
            for p, ids in enumerate(job.prompts):

                def emit(event: Token | Finished | Failed, p: int = p) -> None:
                    loop.call_soon_threadsafe(events.put_nowait, (p, event))

                request = Request(ids, job.max_new_tokens, job.sampling, emit, job.n, job.stop, job.repetition_penalty)
                # TGI's answers carry each token's log-probability (OpenAI's logprobs are not offered)
                request.logprobs, request.top_n = job.kind == "tgi", job.top_n_tokens
                requests.append(request)
            task = asyncio.current_task()
            if task is not None:
                scope[self.cancel_key] = task.cancel
            for r in requests:
                decoder.submit(r)
            try:
                answer = _Answer(job, send, root, decoder.special_ids)
                return await answer.run(events)
            except asyncio.CancelledError:
                log.info("generation: the client went away (or the server stops); its decoding stops")
                return 499  # nothing more to write
            finally:
                for r in requests:
                    r.cancelled = True  # a no-op for finished requests; stops the decoding of unfinished ones
                scope.pop(self.cancel_key, None)

        return handle


async def _error(send: Send, kind: str, e: RequestError) -> int:
    body: dict[str, Any]
    if kind == "tgi":
        body = {"error": str(e), "error_type": "validation"}
    else:
        param = e.param if isinstance(e, BadParameter) else None
        error_type = "invalid_request_error" if e.status < 500 else "server_error"
        code = "model_not_found" if e.status == 404 else None
        body = {"error": {"message": str(e), "type": error_type, "param": param, "code": code}}
    data = json.dumps(body, ensure_ascii=False).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(data))]
    await send({"type": "http.response.start", "status": e.status, "headers": headers})
    await send({"type": "http.response.body", "body": data})
    return e.status


class _StopCut:
    """OpenAI leaves the stop string out of the text: the text released so far, holding back what may still
    become a stop string."""

    def __init__(self, stops: tuple[str, ...]):
        self.stops, self.text, self.released = stops, "", 0

    def cut(self) -> int:
        ends = [self.text.find(s) for s in self.stops]
        found = [e for e in ends if e >= 0]
        return min(found) if found else -1

    def add(self, piece: str) -> str:
        self.text += piece
        end = self.cut()
        if end < 0:
            end = len(self.text)
            for s in self.stops:  # hold back a tail that is the start of a stop string
                for k in range(min(len(s) - 1, len(self.text)), 0, -1):
                    if self.text.endswith(s[:k]):
                        end = min(end, len(self.text) - k)
                        break
        end = max(end, self.released)
        out = self.text[self.released : end]
        self.released = end
        return out

    def finish(self) -> str:
        end = self.cut()
        end = len(self.text) if end < 0 else max(end, self.released)
        out = self.text[self.released : end]
        self.released = end
        return out

    def final(self) -> str:
        end = self.cut()
        return self.text if end < 0 else self.text[:end]


_SSE = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]


class _Answer:
    """Collects one job's events and writes its answer in the job's shape, whole or streamed."""

    def __init__(self, job: Job, send: Send, root: bool, special_ids: frozenset[int] = frozenset()):
        self.job, self.send, self.root, self.special_ids = job, send, root, special_ids
        self.id = ("chatcmpl-" if job.kind == "chat" else "cmpl-") + uuid.uuid4().hex[:24]
        self.created = int(time.time())
        total = len(job.prompts) * job.n
        self.cuts = [_StopCut(job.stop) for _ in range(total)]
        self.finished: dict[int, Finished] = {}
        self.tokens: list[list[dict[str, Any]]] = [[] for _ in range(total)]
        self.top_tokens: list[list[list[dict[str, Any]]]] = [[] for _ in range(total)]  # per token, with top_n
        self.pending: dict[int, tuple[dict[str, Any], list[dict[str, Any]] | None]] = {}
        self.started = False

    async def _start(self) -> None:
        if not self.started:
            self.started = True
            await self.send({"type": "http.response.start", "status": 200, "headers": _SSE})

    async def _event(self, payload: Any) -> None:
        await self._start()
        data = payload if isinstance(payload, bytes) else json.dumps(payload, ensure_ascii=False).encode()
        await self.send({"type": "http.response.body", "body": b"data: " + data + b"\n\n", "more_body": True})

    def _usage(self) -> dict[str, int]:
        prompt = sum(len(p) for p in self.job.prompts)
        completion = sum(f.tokens for f in self.finished.values())
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    async def run(self, events: asyncio.Queue[tuple[int, Token | Finished | Failed]]) -> int:
        job = self.job
        total = len(job.prompts) * job.n
        if job.stream and job.kind == "chat":
            for i in range(total):
                await self._chunk(i, {"role": "assistant", "content": ""}, None)
        while len(self.finished) < total:
            p, event = await events.get()
            if isinstance(event, Failed):
                if self.started:
                    await self._event({"error": event.message, "error_type": "generation"})
                    break
                return await _error(self.send, job.kind, RequestError(500, event.message, "server_error"))
            i = p * job.n + event.index
            if isinstance(event, Token):
                await self._token(i, event)
            else:
                self.finished[i] = event
                await self._finish(i, event)
        if not job.stream:
            return await self._whole()
        if job.kind != "tgi" and job.include_usage:
            obj = "chat.completion.chunk" if job.kind == "chat" else "text_completion"
            await self._event(
                {
                    "id": self.id,
                    "object": obj,
                    "created": self.created,
                    "model": job.model,
                    "choices": [],
                    "usage": self._usage(),
                }
            )
        if job.kind != "tgi":  # OpenAI's end marker; TGI's stream just ends
            await self._event(b"[DONE]")
        await self._start()
        await self.send({"type": "http.response.body", "body": b""})
        return 200

    async def _chunk(self, i: int, content: dict[str, Any] | str, reason: str | None) -> None:
        job = self.job
        choice: dict[str, Any]
        if job.kind == "chat":
            choice = {"index": i, "delta": content, "logprobs": None, "finish_reason": reason}
            obj = "chat.completion.chunk"
        else:
            choice = {"index": i, "text": content, "logprobs": None, "finish_reason": reason}
            obj = "text_completion"
        await self._event(
            {"id": self.id, "object": obj, "created": self.created, "model": job.model, "choices": [choice]}
        )

    async def _token(self, i: int, token: Token) -> None:
        job = self.job
        special = token.id in self.special_ids
        entry = {"id": token.id, "text": token.text, "logprob": token.logprob, "special": special}
        self.tokens[i].append(entry)
        top = None
        if job.top_n_tokens:
            top = [{"id": t, "text": x, "logprob": lp, "special": t in self.special_ids} for t, x, lp in token.top]
            self.top_tokens[i].append(top)
        if not job.stream:
            self.cuts[i].text += token.text
            return
        if job.kind == "tgi":  # each token is sent once the next event shows whether it is the last
            if i in self.pending:
                sent, sent_top = self.pending[i]
                await self._event(
                    {
                        "index": len(self.tokens[i]) - 2,
                        "token": sent,
                        "generated_text": None,
                        "details": None,
                        "top_tokens": sent_top,
                    }
                )
            self.pending[i] = (entry, top)
            return
        piece = self.cuts[i].add(token.text)
        if piece:
            await self._chunk(i, {"content": piece} if job.kind == "chat" else piece, None)

    def _tgi_reason(self, f: Finished) -> str:
        if f.reason == "length":
            return "length"
        return "stop_sequence" if any(s in f.text for s in self.job.stop) else "eos_token"

    async def _finish(self, i: int, f: Finished) -> None:
        job = self.job
        if not job.stream:
            return
        if job.kind == "tgi":
            text = (job.prompt_texts[0] if job.return_full_text else "") + f.text
            details = {"finish_reason": self._tgi_reason(f), "generated_tokens": f.tokens, "seed": job.sampling.seed}
            sent, sent_top = self.pending.pop(i)
            await self._event(
                {
                    "index": len(self.tokens[i]) - 1,
                    "token": sent,
                    "generated_text": text,
                    "details": details,
                    "top_tokens": sent_top,
                }
            )
            return
        rest = self.cuts[i].finish()
        if rest:
            await self._chunk(i, {"content": rest} if job.kind == "chat" else rest, None)
        await self._chunk(i, {} if job.kind == "chat" else "", f.reason)

    async def _whole(self) -> int:
        job = self.job
        total = len(job.prompts) * job.n
        if job.kind == "tgi":
            f = self.finished[0]
            text = (job.prompt_texts[0] if job.return_full_text else "") + f.text
            out: Any = {"generated_text": text}
            if job.details:
                out["details"] = {
                    "finish_reason": self._tgi_reason(f),
                    "generated_tokens": f.tokens,
                    "seed": job.sampling.seed,
                    "prefill": [],
                    "tokens": self.tokens[0],
                }
                if job.top_n_tokens:
                    out["details"]["top_tokens"] = self.top_tokens[0]
            if self.root:
                out = [out]
        else:
            choices = []
            for i in range(total):
                text = self.cuts[i].final()
                reason = self.finished[i].reason
                if job.kind == "chat":
                    choices.append(
                        {
                            "index": i,
                            "message": {"role": "assistant", "content": text},
                            "logprobs": None,
                            "finish_reason": reason,
                        }
                    )
                else:
                    choices.append({"index": i, "text": text, "logprobs": None, "finish_reason": reason})
            obj = "chat.completion" if job.kind == "chat" else "text_completion"
            out = {
                "id": self.id,
                "object": obj,
                "created": self.created,
                "model": job.model,
                "choices": choices,
                "usage": self._usage(),
            }
        data = json.dumps(out, ensure_ascii=False).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(data))]
        await self.send({"type": "http.response.start", "status": 200, "headers": headers})
        await self.send({"type": "http.response.body", "body": data})
        return 200
