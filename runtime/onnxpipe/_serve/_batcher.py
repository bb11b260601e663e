"""Dynamic batching: encodings from many requests share model calls, and each request gets its own results.

Handlers tokenize on the event loop (``pipe.preprocess``) and ``submit`` the encodings. Worker threads run
them with the pipeline's own ``execute_batch``, ``gather`` each input's result and hand each request its
results in its own order, in one of two ways, by the model's execution:

- each input alone (dynamic int8: an answer never depends on the other requests): ``model.threads`` workers,
  one per core, each takes the next queued input and runs it on its own thread (``on_lane=True``, the
  1-thread session). The cores stay busy while requests keep coming: no round waits for its slowest input,
  and no thread sits between the queue and the model (the model's own worker pool would add two hand-offs
  per input). An input taken while nothing else is queued or running has the cores to itself: it runs on
  the model's main session, every core on the one input, as ``pipe(text)`` does (the lone client's latency),
  and the other workers wait for it (their 1-thread runs beside it would share its cores).
- padded batches: one round at a time takes everything queued for those models and runs the runtime's batch
  planner under the token budget.

Requests that arrive meanwhile wait for the next input or round: no worker waits for a batch to fill, so one
lone client pays no batching delay. Answers reach the event loop through one outbox: a worker schedules the
loop's flush only when the outbox was empty, so a busy loop is woken once for many answers.

Work nobody waits for is not done: a request whose handler was cancelled (uvicorn cancels what is still
running when ``--graceful-timeout`` runs out) is skipped when a worker takes it, and a round stops between
batches once all its requests are gone. ``aclose`` drops what is still queued and waits a bounded time for
the work on the model.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from .._pipelines import Pipeline
from ._limits import shutting_down
from ._metrics import Metrics

log = logging.getLogger("onnxpipe.serve")
# How long shutdown waits for the work on the model once the requests are answered: one batch is bounded by
# --max-batch-tokens (or is one input), well under a second on a CPU; past this the threads are left behind.
STOP_WAIT_S = 10.0


def runs_alone(pipe: Pipeline) -> bool:
    """Whether ``pipe``'s model runs every input alone (then the batcher's workers share it input by input)."""
    return getattr(pipe.model, "execution", None) == "alone"


def workers_for(pipes: Iterable[Pipeline]) -> int:
    """How many workers the batcher needs: one per core a model running inputs alone uses (1 without one)."""
    return max((int(getattr(p.model, "threads", 1)) for p in pipes if runs_alone(p)), default=1)


class _Job:
    """One request's encodings, where its rows land, and the future its handler awaits."""

    __slots__ = ("model", "pipe", "encodings", "groups", "post", "rows", "remaining", "taken", "future", "done")

    def __init__(
        self, model: str, pipe: Pipeline, prepared: list[Any], post: dict[str, Any], future: asyncio.Future[list[Any]]
    ):
        self.model, self.pipe, self.post, self.future = model, pipe, post, future
        # The pipeline protocol (_pipelines/_base.py): (info, [Encoding, ...]) per input.
        self.groups: list[tuple[Any, int]] = [(info, len(group)) for info, group in prepared]
        self.encodings = [e for _, group in prepared for e in group]
        self.rows: list[Any] = [None] * len(self.encodings)
        self.remaining = len(self.encodings)
        self.taken = 0  # encodings a worker has taken (inputs run alone), under the batcher's lock
        self.done = False

    def abandoned(self) -> bool:
        """Its handler is gone (cancelled): nobody will read the result. Read from the worker threads: the
        future's state is set once, on the loop, and only read there."""
        return self.future.cancelled()

    def results(self) -> list[Any]:
        out, start = [], 0
        for info, n in self.groups:
            out.append(
                self.pipe.gather(info, self.encodings[start : start + n], self.rows[start : start + n], **self.post)
            )
            start += n
        return out


# What a worker hands a request: (job, results, error), results None when it failed.
Finished = tuple[_Job, "list[Any] | None", "Exception | None"]


def settle(future: asyncio.Future[list[Any]], result: Any, error: BaseException | None) -> None:
    """Resolve a waiting request's future, unless its client went away (its handler cancelled it)."""
    if future.done():  # the client went away and its handler was cancelled
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class Batcher:
    """The queues and the worker threads behind every model endpoint.

    Example (inside the server's event loop):
        >>> batcher = Batcher(Metrics(), max_batch_tokens=1024, workers=2); batcher.start()
        >>> rows = await batcher.submit("minilm-sst2", pipe, pipe.preprocess(["I love it"], 0), post)
        >>> batcher.close()
    """

    def __init__(self, metrics: Metrics, max_batch_tokens: int, workers: int = 1):
        self.metrics = metrics
        self.max_batch_tokens = max_batch_tokens
        self._cond = threading.Condition()
        self._alone: deque[_Job] = deque()  # jobs whose inputs run one by one, on any worker
        self._pending: list[_Job] = []  # jobs for padded batches: the next round's
        self._round_running = False  # one round at a time: its batches use every core already
        self._running_alone = 0  # inputs the workers are running one by one
        self._solo = False  # one of them runs on every core: the other workers wait
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._outbox: list[tuple[Callable[..., None], tuple[Any, ...]]] = []
        self._outbox_lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._run, name="onnxpipe-inference", daemon=True) for _ in range(max(1, workers))
        ]

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        for thread in self._threads:
            thread.start()

    def close(self, timeout: float | None = 30.0) -> None:
        """Finish what is queued, then stop the threads (for callers outside a server's shutdown)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        for thread in self._threads:
            if thread.is_alive():
                thread.join(timeout)

    async def aclose(self, timeout: float = STOP_WAIT_S) -> None:
        """Stop at shutdown, on the event loop: what is still queued is dropped (its requests, if any still
        wait, get 503), and the threads are given ``timeout`` seconds to finish the work they are running. The
        loop keeps running meanwhile, so cancelled requests still write their answers."""
        with self._cond:
            self._closed = True
            dropped, self._pending = self._pending, []
            untaken = [(job, len(job.encodings) - job.taken) for job in self._alone if not job.done]
            for job, _ in untaken:
                job.done = True  # its inputs running now finish unanswered
            self._alone.clear()
            self._cond.notify_all()
        for job, rows in [(job, len(job.encodings)) for job in dropped] + untaken:
            self.metrics.queue_depth.add(-rows, job.model)
            settle(job.future, None, shutting_down())
        await asyncio.to_thread(self._join, timeout)
        if any(thread.is_alive() for thread in self._threads):
            log.warning("an inference thread is still running a batch after %.0f s; exiting without it", timeout)

    def _join(self, timeout: float) -> None:
        for thread in self._threads:
            thread.join(timeout)

    async def submit(self, model: str, pipe: Pipeline, prepared: list[Any], post: dict[str, Any]) -> list[Any]:
        """Queue one request's preprocessed inputs; return one result per input, in input order."""
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        job = _Job(model, pipe, prepared, post, future)
        if not job.encodings:
            return job.results()
        with self._cond:
            if self._closed:
                raise shutting_down()
            if runs_alone(pipe):
                self._alone.append(job)
                self._cond.notify(len(job.encodings))  # as many workers as it has inputs
            else:
                self._pending.append(job)
                self._cond.notify()
        self.metrics.queue_depth.add(len(job.encodings), model)
        return await future

    # -- the worker threads -------------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cond:
                work = self._next()
            if work is None:
                return
            if isinstance(work, list):
                self._round(work)
            else:
                self._serve_alone(*work)

    def _next(self) -> tuple[_Job, int, bool] | list[_Job] | None:
        """The next work, taken under the lock: an input to run alone, (job, index, whether it is the only
        one: queued or running); a round's jobs; or None once closed with nothing left for this worker."""
        while True:
            while self._alone and not self._solo:
                job = self._alone[0]
                if job.done or job.abandoned():  # failed already, or nobody waits: its untaken inputs are dropped
                    self._alone.popleft()
                    self._post(self.metrics.queue_depth.add, job.taken - len(job.encodings), job.model)
                    continue
                index = job.taken
                job.taken += 1
                if job.taken == len(job.encodings):
                    self._alone.popleft()
                self._solo = not self._alone and self._running_alone == 0
                self._running_alone += 1
                return job, index, self._solo
            if self._pending and not self._round_running:
                self._round_running = True
                jobs, self._pending = self._pending, []
                return jobs
            if self._closed:
                return None
            self._cond.wait()

    def _serve_alone(self, job: _Job, index: int, only: bool) -> None:
        """Run one input of ``job`` on this worker (``only``: on every core); the worker that runs its last
        input gathers and answers it."""
        width, rows = 0, None
        try:
            (batch,) = job.pipe.execute_batch([job.encodings[index]], on_lane=not only)
            width, rows = batch.width, batch.rows
        except Exception as e:  # a bug here must not end the thread: that request fails, the others go on
            rows = e
        with self._cond:
            self._running_alone -= 1
            if only:
                self._solo = False
                self._cond.notify_all()  # the workers that waited for the cores
            last = not job.done and (isinstance(rows, Exception) or job.remaining == 1)
            if not job.done and not isinstance(rows, Exception):
                job.rows[index] = rows[0]
                job.remaining -= 1
            job.done = job.done or last
        self._post(self._deliver, job.model, 1, width, [self._answer(job, rows)] if last else [])

    @staticmethod
    def _answer(job: _Job, rows: list[Any] | Exception | None) -> Finished:
        """A finished job's answer: its results, or the error of its failed input or of its ``gather``."""
        if isinstance(rows, Exception):
            return job, None, rows
        try:
            return job, job.results(), None
        except Exception as e:  # gather refused the rows: that request fails alone
            return job, None, e

    def _round(self, jobs: list[_Job]) -> None:
        try:
            by_pipe: dict[int, list[_Job]] = {}
            for job in jobs:
                by_pipe.setdefault(id(job.pipe), []).append(job)
            for group in by_pipe.values():
                self._serve(group)
        finally:
            with self._cond:
                self._round_running = False
                self._cond.notify()  # a worker may wait for the next round

    def _serve(self, jobs: list[_Job]) -> None:
        pipe, model = jobs[0].pipe, jobs[0].model
        queued = sum(len(job.encodings) for job in jobs)
        jobs = [job for job in jobs if not job.abandoned()]
        slots = [(job, i) for job in jobs for i in range(len(job.encodings))]
        delivered = 0
        try:
            # The runtime's batch planner: padded batches under the token budget.
            encodings = [job.encodings[i] for job, i in slots]
            for batch, width, rows in pipe.execute_batch(encodings, pipe.batch_size, self.max_batch_tokens):
                members = [slots[k] for k in batch]
                finished: list[Finished] = []
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
                self._post(self._deliver, model, len(members), width, finished)
                if all(job.done or job.abandoned() for job in jobs):
                    break  # the rest of this round is for requests nobody waits for (closing execute_batch stops it)
        except Exception as e:  # a bug here must not end the thread: every request after it would hang
            failed = [job for job in jobs if not job.done]
            for job in failed:
                job.done = True
            self._post(self._fail, failed, e)
        finally:
            if queued > delivered:  # rows dropped (abandoned) or failed: out of the queue-depth gauge
                self._post(self.metrics.queue_depth.add, delivered - queued, model)

    # -- answers, to the event loop ----------------------------------------------------------------------------
    def _post(self, fn: Callable[..., None], *args: Any) -> None:
        """Run ``fn(*args)`` on the event loop, after what was posted before it. The loop is woken only when
        the outbox was empty: otherwise a flush is on its way and takes this one too."""
        with self._outbox_lock:
            self._outbox.append((fn, args))
            if len(self._outbox) > 1:
                return
        loop = self._loop
        assert loop is not None, "start() sets the loop before the threads run"
        loop.call_soon_threadsafe(self._flush)

    def _flush(self) -> None:
        with self._outbox_lock:
            posted, self._outbox = self._outbox, []
        for fn, args in posted:
            fn(*args)

    @staticmethod
    def _fail(jobs: list[_Job], error: Exception) -> None:
        for job in jobs:
            settle(job.future, None, error)

    def _deliver(self, model: str, rows: int, width: int, finished: list[Finished]) -> None:
        m = self.metrics
        m.batches.inc(model)
        m.batch_size.observe(rows, model)
        m.batch_tokens.observe(rows * width, model)
        m.queue_depth.add(-rows, model)
        for job, result, error in finished:
            settle(job.future, result, error)
