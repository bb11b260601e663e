"""Dynamic batching: encodings from many requests share model calls, and each request gets its own results.

Handlers tokenize on the event loop (``pipe.preprocess``) and ``submit`` the encodings. One inference thread
takes everything queued at that moment and runs it with the pipeline's own ``execute_batch`` (the runtime's batch
planner under the token budget, or each input alone for dynamic int8), then ``gather`` per input,
and hands each request its results in its own order. Requests that arrive meanwhile wait for the next round:
the thread never waits for a batch to fill, so one lone client pays no batching delay.

Work nobody waits for is not done: a request whose handler was cancelled (uvicorn cancels what is still
running when ``--graceful-timeout`` runs out) is skipped when the thread takes it, and a round stops between
batches once all its requests are gone. ``aclose`` drops what is still queued and waits a bounded time for
the batch on the model.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

from .._pipelines import Pipeline
from ._limits import shutting_down
from ._metrics import Metrics

log = logging.getLogger("onnxpipe.serve")
# How long shutdown waits for the batch on the model once the requests are answered: one batch is bounded by
# --max-batch-tokens (or is one input), well under a second on a CPU; past this the thread is left behind.
STOP_WAIT_S = 10.0


class _Job:
    """One request's encodings, where its rows land, and the future its handler awaits."""

    __slots__ = ("model", "pipe", "encodings", "groups", "post", "rows", "remaining", "future", "done")

    def __init__(
        self, model: str, pipe: Pipeline, prepared: list[Any], post: dict[str, Any], future: asyncio.Future[list[Any]]
    ):
        self.model, self.pipe, self.post, self.future = model, pipe, post, future
        # The pipeline protocol (_pipelines/_base.py): (info, [Encoding, ...]) per input.
        self.groups: list[tuple[Any, int]] = [(info, len(group)) for info, group in prepared]
        self.encodings = [e for _, group in prepared for e in group]
        self.rows: list[Any] = [None] * len(self.encodings)
        self.remaining = len(self.encodings)
        self.done = False

    def abandoned(self) -> bool:
        """Its handler is gone (cancelled): nobody will read the result. Read from the inference thread: the
        future's state is set once, on the loop, and only read here."""
        return self.future.cancelled()

    def results(self) -> list[Any]:
        out, start = [], 0
        for info, n in self.groups:
            out.append(
                self.pipe.gather(info, self.encodings[start : start + n], self.rows[start : start + n], **self.post)
            )
            start += n
        return out


def settle(future: asyncio.Future[list[Any]], result: Any, error: BaseException | None) -> None:
    """Resolve a waiting request's future, unless its client went away (its handler cancelled it)."""
    if future.done():  # the client went away and its handler was cancelled
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class Batcher:
    """The queue and the one inference thread behind every model endpoint.

    Example (inside the server's event loop):
        >>> batcher = Batcher(Metrics(), max_batch_tokens=1024); batcher.start()
        >>> rows = await batcher.submit("minilm-sst2", pipe, pipe.preprocess(["I love it"], 0), post)
        >>> batcher.close()
    """

    def __init__(self, metrics: Metrics, max_batch_tokens: int):
        self.metrics = metrics
        self.max_batch_tokens = max_batch_tokens
        self._cond = threading.Condition()
        self._pending: list[_Job] = []
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._run, name="onnxpipe-inference", daemon=True)

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread.start()

    def close(self, timeout: float | None = 30.0) -> None:
        """Finish what is queued, then stop the thread (for callers outside a server's shutdown)."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join(timeout)

    async def aclose(self, timeout: float = STOP_WAIT_S) -> None:
        """Stop at shutdown, on the event loop: what is still queued is dropped (its requests, if any still
        wait, get 503), and the thread is given ``timeout`` seconds to finish the batch it is running. The loop
        keeps running meanwhile, so cancelled requests still write their answers."""
        with self._cond:
            self._closed = True
            dropped, self._pending = self._pending, []
            self._cond.notify()
        for job in dropped:
            self.metrics.queue_depth.add(-len(job.encodings), job.model)
            settle(job.future, None, shutting_down())
        if self._thread.is_alive():
            await asyncio.to_thread(self._thread.join, timeout)
            if self._thread.is_alive():
                log.warning("the inference thread is still running a batch after %.0f s; exiting without it", timeout)

    async def submit(self, model: str, pipe: Pipeline, prepared: list[Any], post: dict[str, Any]) -> list[Any]:
        """Queue one request's preprocessed inputs; return one result per input, in input order."""
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        job = _Job(model, pipe, prepared, post, future)
        if not job.encodings:
            return job.results()
        with self._cond:
            if self._closed:
                raise shutting_down()
            self._pending.append(job)
            self._cond.notify()
        self.metrics.queue_depth.add(len(job.encodings), model)
        return await future

    # -- the inference thread ----------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if not self._pending:
                    return
                jobs, self._pending = self._pending, []
            by_pipe: dict[int, list[_Job]] = {}
            for job in jobs:
                by_pipe.setdefault(id(job.pipe), []).append(job)
            for group in by_pipe.values():
                self._serve(group)

    def _serve(self, jobs: list[_Job]) -> None:
        pipe, model = jobs[0].pipe, jobs[0].model
        loop = self._loop
        assert loop is not None, "start() sets the loop before the thread runs"
        queued = sum(len(job.encodings) for job in jobs)
        jobs = [job for job in jobs if not job.abandoned()]
        slots = [(job, i) for job in jobs for i in range(len(job.encodings))]
        delivered = 0
        try:
            # The pipeline's own execution: padded batches under the token budget, or (dynamic int8) each input
            # alone on the model's worker pool, so a request's answer never depends on the others in the queue.
            encodings = [job.encodings[i] for job, i in slots]
            for batch, width, rows in pipe.execute_batch(encodings, pipe.batch_size, self.max_batch_tokens):
                members = [slots[k] for k in batch]
                finished: list[tuple[_Job, list[Any] | None, Exception | None]] = []
                if isinstance(rows, Exception):  # the batch failed: every request with a row in it gets the error
                    finished = [(job, None, rows) for job in {id(j): j for j, _ in members}.values() if not job.done]
                    for job, _, _ in finished:
                        job.done = True
                else:
                    for (job, i), row in zip(members, rows):
                        job.rows[i] = row
                    for job, _ in members:
                        job.remaining -= 1
                        if job.remaining == 0 and not job.done:
                            job.done = True
                            try:
                                finished.append((job, job.results(), None))
                            except Exception as e:  # gather refused the rows: that request fails alone
                                finished.append((job, None, e))
                delivered += len(members)
                loop.call_soon_threadsafe(self._deliver, model, len(members), width, finished)
                if all(job.done or job.abandoned() for job in jobs):
                    break  # the rest of this round is for requests nobody waits for (closing execute_batch stops it)
        except Exception as e:  # a bug here must not end the thread: every request after it would hang
            failed = [job for job in jobs if not job.done]
            for job in failed:
                job.done = True
            loop.call_soon_threadsafe(self._fail, failed, e)
        finally:
            if queued > delivered:  # rows dropped (abandoned) or failed: out of the queue-depth gauge
                loop.call_soon_threadsafe(self.metrics.queue_depth.add, delivered - queued, model)

    @staticmethod
    def _fail(jobs: list[_Job], error: Exception) -> None:
        for job in jobs:
            settle(job.future, None, error)

    def _deliver(
        self, model: str, rows: int, width: int, finished: list[tuple[_Job, list[Any] | None, Exception | None]]
    ) -> None:
        m = self.metrics
        m.batches.inc(model)
        m.batch_size.observe(rows, model)
        m.batch_tokens.observe(rows * width, model)
        m.queue_depth.add(-rows, model)
        for job, result, error in finished:
            settle(job.future, result, error)
