"""Dynamic batching: encodings from many requests share model calls, and each request gets its own results.

Handlers tokenize on the event loop (``pipe.preprocess``) and ``submit`` the encodings. One inference thread
takes everything queued at that moment and runs it with the pipeline's own ``execute_batch`` (the runtime's batch
planner under the token budget), then ``gather`` per input, and hands each request its results in its own order.
Requests that arrive meanwhile wait for the next round: the thread never waits for a batch to fill, so one lone
client pays no batching delay.

A model that runs each input alone on its worker lanes (dynamic int8 on several threads: ``execute_batch``
would give every encoding its own 1-row call on the model's lane pool) skips that thread: lane workers here take
encodings from one queue and run the same model call (``run_batch`` of one encoding on the lane session), so
an encoding goes from the event loop to a lane and its answer straight back: one thread hand-off each way
instead of three (profiled at 32 wrk connections, the inference thread's wake-ups and the lane futures took
~0.1 ms of CPU per request, about 6 % of it). The answer is the same 1-row call on the same session.

Answers reach the event loop through one outbox: a worker appends and schedules a drain only when none is
pending, so a burst of answers costs the loop one wake-up.

Work nobody waits for is not done: a request whose handler was cancelled (uvicorn cancels what is still
running when ``--graceful-timeout`` runs out) is skipped when a thread takes it, and a round stops between
batches once all its requests are gone. ``aclose`` drops what is still queued and waits a bounded time for
the batch on the model.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
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

    # Lane workers share a job's encodings: they change ``remaining`` and ``done`` under the lane lock.
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


def _set(future: asyncio.Future[list[Any]], result: Any, error: BaseException | None) -> None:
    if future.done():  # the client went away and its handler was cancelled
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def _lanes_for(pipe: Pipeline) -> int:
    """How many lane workers run ``pipe``'s encodings one by one (0: the inference thread's batches). The
    model's ``map_batches`` uses its lane pool exactly then: each input alone, on more than one thread."""
    model = pipe.model
    return int(model.threads) if model.execution == "alone" and model.threads > 1 else 0


# What a worker hands the event loop: (model, encodings dequeued, width of their model call or 0, [(job, result,
# error) for the requests that are finished]).
_Delivery = tuple[str, int, int, list[tuple[_Job, "list[Any] | None", "Exception | None"]]]


class Batcher:
    """The queue, the inference thread and the lane workers behind every model endpoint.

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
        # Lane mode: (job, encoding index) slots, taken one at a time by the lane workers.
        self._lane_cond = threading.Condition()
        self._lane_queue: deque[tuple[_Job, int]] = deque()
        self._lane_threads: list[threading.Thread] = []
        self._lane_ready: set[int] = set()  # id(model) whose lane session exists
        # Answers for the loop, drained in one callback per wake-up.
        self._outbox: deque[_Delivery] = deque()
        self._drain_scheduled = False
        self._outbox_lock = threading.Lock()

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread.start()

    def close(self, timeout: float | None = 30.0) -> None:
        """Finish what is queued, then stop the threads (for callers outside a server's shutdown)."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        with self._lane_cond:
            self._lane_cond.notify_all()
        for thread in [self._thread, *self._lane_threads]:
            if thread.is_alive():
                thread.join(timeout)

    async def aclose(self, timeout: float = STOP_WAIT_S) -> None:
        """Stop at shutdown, on the event loop: what is still queued is dropped (its requests, if any still
        wait, get 503), and the threads are given ``timeout`` seconds to finish what they run. The loop
        keeps running meanwhile, so cancelled requests still write their answers."""
        with self._cond:
            self._closed = True
            dropped, self._pending = self._pending, []
            self._cond.notify()
        with self._lane_cond:
            slots, self._lane_queue = list(self._lane_queue), deque()
            self._lane_cond.notify_all()
        for job in dropped:
            self.metrics.queue_depth.add(-len(job.encodings), job.model)
            _set(job.future, None, shutting_down())
        for job, _ in slots:
            self.metrics.queue_depth.add(-1, job.model)
            _set(job.future, None, shutting_down())
        threads = [t for t in [self._thread, *self._lane_threads] if t.is_alive()]
        if threads:
            await asyncio.to_thread(_join_all, threads, timeout)
            if any(t.is_alive() for t in threads):
                log.warning("the inference threads still run a batch after %.0f s; exiting without them", timeout)

    async def submit(self, model: str, pipe: Pipeline, prepared: list[Any], post: dict[str, Any]) -> list[Any]:
        """Queue one request's preprocessed inputs; return one result per input, in input order."""
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        job = _Job(model, pipe, prepared, post, future)
        if not job.encodings:
            return job.results()
        lanes = _lanes_for(pipe)
        if lanes:
            self._ensure_lanes(pipe, lanes)
            with self._lane_cond:
                if self._closed:
                    raise shutting_down()
                self._lane_queue.extend((job, i) for i in range(len(job.encodings)))
                self._lane_cond.notify(len(job.encodings))
        else:
            with self._cond:
                if self._closed:
                    raise shutting_down()
                self._pending.append(job)
                self._cond.notify()
        self.metrics.queue_depth.add(len(job.encodings), model)
        return await future

    # -- delivery to the event loop --------------------------------------------------------------------------
    def _post(self, delivery: _Delivery) -> None:
        """From a worker thread: queue ``delivery`` for the loop; wake the loop only if no drain is pending."""
        loop = self._loop
        assert loop is not None, "start() sets the loop before any thread runs"
        with self._outbox_lock:
            self._outbox.append(delivery)
            if self._drain_scheduled:
                return
            self._drain_scheduled = True
        loop.call_soon_threadsafe(self._drain)

    def _drain(self) -> None:
        with self._outbox_lock:
            self._drain_scheduled = False
            deliveries, self._outbox = self._outbox, deque()
        for model, rows, width, finished in deliveries:
            self._deliver(model, rows, width, finished)

    # -- lane workers: each encoding alone ------------------------------------------------------------------
    def _ensure_lanes(self, pipe: Pipeline, lanes: int) -> None:
        """Lane workers enough for ``pipe``'s model, and its lane session made (on the loop: once per model)."""
        model = pipe.model
        if id(model) not in self._lane_ready:
            # map_batches of two items makes the model's lane pool and 1-thread session if warm_up has not.
            for _ in model.map_batches(lambda item, lane: None, range(2)):
                pass
            self._lane_ready.add(id(model))
        while len(self._lane_threads) < lanes:
            thread = threading.Thread(
                target=self._lane, name=f"onnxpipe-serve-lane-{len(self._lane_threads)}", daemon=True
            )
            self._lane_threads.append(thread)
            thread.start()

    def _lane(self) -> None:
        while True:
            with self._lane_cond:
                while not self._lane_queue and not self._closed:
                    self._lane_cond.wait()
                if not self._lane_queue:
                    return
                job, i = self._lane_queue.popleft()
            if job.done or job.abandoned():  # failed already, or nobody waits: not run
                self._post((job.model, 1, 0, []))
                continue
            try:
                self._run_one(job, i)
            except Exception as e:  # a bug here must not end the worker: every request after it would hang
                with self._lane_cond:
                    fail = not job.done
                    job.done = True
                if fail:
                    self._post((job.model, 1, 0, [(job, None, e)]))

    def _run_one(self, job: _Job, i: int) -> None:
        _, width, rows = job.pipe.run_batch(job.encodings, [i], lane=True)
        finished: list[tuple[_Job, list[Any] | None, Exception | None]] = []
        if isinstance(rows, Exception):  # the model call failed: the request fails (once), its other rows skip
            with self._lane_cond:
                fail, job.done = not job.done, True
            if fail:
                finished.append((job, None, rows))
            self._post((job.model, 1, width, finished))
            return
        job.rows[i] = rows[0]
        with self._lane_cond:
            job.remaining -= 1
            last = job.remaining == 0 and not job.done
            if last:
                job.done = True
        if last:
            try:
                finished.append((job, job.results(), None))
            except Exception as e:  # gather refused the rows: that request fails alone
                finished.append((job, None, e))
        self._post((job.model, 1, width, finished))

    # -- the inference thread: batches ------------------------------------------------------------------------
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
            # The pipeline's own execution: padded batches under the token budget, so a request's answer never
            # depends on the others in the queue.
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
                self._post((model, len(members), width, finished))
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
            _set(job.future, None, error)

    def _deliver(
        self, model: str, rows: int, width: int, finished: list[tuple[_Job, list[Any] | None, Exception | None]]
    ) -> None:
        """On the loop: ``rows`` encodings left the queue, in one model call ``width`` tokens wide (0: none ran,
        a lane skipped or failed them); ``finished`` requests get their answers."""
        m = self.metrics
        if width:
            m.batches.inc(model)
            m.batch_size.observe(rows, model)
            m.batch_tokens.observe(rows * width, model)
        m.queue_depth.add(-rows, model)
        for job, result, error in finished:
            _set(job.future, result, error)


def _join_all(threads: list[threading.Thread], timeout: float) -> None:
    for thread in threads:
        thread.join(timeout)
