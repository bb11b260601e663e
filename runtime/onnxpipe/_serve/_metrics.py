"""Prometheus metrics: plain counts kept on the event loop, written out by ``prometheus_client`` (the serve extra).

The names are those of the hand-written exposition before it, so dashboards keep working; values are exact
(``1234567`` reads back as 1234567). Every update happens on the event loop (the worker threads hand their
figures over with ``call_soon_threadsafe``), so an update is a dict lookup and an addition, where
prometheus_client's own metric objects take a lock and check their state on every call (ten updates per
request). A scrape turns the counts into metric families for ``generate_latest``, the same exposition.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Iterable, Iterator
from typing import Any

import prometheus_client as prom
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

# Request latency in seconds: sub-millisecond steps matter here (a batch-1 request takes ~2 ms on a laptop).
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
TOKEN_BUCKETS = (16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)
CONTENT_TYPE = prom.CONTENT_TYPE_LATEST


class _Metric:
    def __init__(self, name: str, help: str, labels: Iterable[str]):
        self.name, self.help, self.labels = name, help, tuple(labels)

    def family(self) -> Metric:
        raise NotImplementedError


class Counter(_Metric):
    """A monotonic count. ``Counter("x_total", "...", ["model"]).inc("m")``"""

    def __init__(self, name: str, help: str, labels: Iterable[str] = ()):
        super().__init__(name, help, labels)
        self.values: dict[tuple[str, ...], float] = {}
        self.created: dict[tuple[str, ...], float] = {}

    def inc(self, *labels: str, amount: float = 1) -> None:
        values = self.values
        if labels in values:
            values[labels] += amount
        else:
            values[labels] = amount
            self.created[labels] = time.time()

    def family(self) -> Metric:
        f = CounterMetricFamily(self.name, self.help, labels=self.labels)
        for labels, value in self.values.items():
            f.add_metric(list(labels), value, created=self.created[labels])
        return f


class Gauge(_Metric):
    """A value that goes up and down. ``g.set(3, "m")``, ``g.add(-1, "m")``"""

    def __init__(self, name: str, help: str, labels: Iterable[str] = ()):
        super().__init__(name, help, labels)
        self.values: dict[tuple[str, ...], float] = {} if self.labels else {(): 0.0}

    def set(self, value: float, *labels: str) -> None:
        self.values[labels] = value

    def add(self, amount: float, *labels: str) -> None:
        self.values[labels] = self.values.get(labels, 0.0) + amount

    def family(self) -> Metric:
        f = GaugeMetricFamily(self.name, self.help, labels=self.labels)
        for labels, value in self.values.items():
            f.add_metric(list(labels), value)
        return f


class Histogram(_Metric):
    """Cumulative buckets, sum and count per label set. ``h.observe(0.003, "/predict")``"""

    def __init__(self, name: str, help: str, labels: Iterable[str] = (), buckets: tuple[float, ...] = LATENCY_BUCKETS):
        super().__init__(name, help, labels)
        self.bounds = tuple(float(b) for b in buckets)
        # per label set: [count in each bucket (not cumulative) ..., count above the last bound, sum]
        self.values: dict[tuple[str, ...], list[float]] = {}
        self.created: dict[tuple[str, ...], float] = {}

    def observe(self, value: float, *labels: str) -> None:
        row = self.values.get(labels)
        if row is None:
            row = self.values[labels] = [0.0] * (len(self.bounds) + 2)
            self.created[labels] = time.time()
        row[bisect_left(self.bounds, value)] += 1  # a bucket counts values <= its bound, as Prometheus
        row[-1] += value

    def family(self) -> Metric:
        f = HistogramMetricFamily(self.name, self.help, labels=self.labels)
        for labels, row in self.values.items():
            cumulative, buckets = 0.0, []
            for bound, count in zip([*self.bounds, float("inf")], row):
                cumulative += count
                buckets.append((floatToGoString(bound), cumulative))  # type: ignore[no-untyped-call]
            f.add_metric(list(labels), buckets, row[-1])
            # as prometheus_client's own histogram: a _created sample beside the buckets
            f.samples.append(Sample(self.name + "_created", dict(zip(self.labels, labels)), self.created[labels]))
        return f


class _Collector:
    def __init__(self, metrics: list[_Metric]):
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        for m in self.metrics:
            yield m.family()


class Metrics:
    """Every metric the server exports; ``render()`` is the body of ``GET /metrics``. Updated on the event loop.

    Example:
        >>> m = Metrics()
        >>> m.batches.inc("minilm-sst2")
        >>> "onnxpipe_batches_total" in m.render()
        True
    """

    def __init__(self) -> None:
        self.requests = Counter(
            "onnxpipe_requests_total", "HTTP requests by endpoint and status", ["endpoint", "status"]
        )
        self.latency = Histogram("onnxpipe_request_duration_seconds", "Time from request to response", ["endpoint"])
        self.in_flight = Gauge("onnxpipe_requests_in_flight", "Requests admitted and not yet answered")
        self.rejected = Counter(
            "onnxpipe_requests_rejected_total", "Requests refused before any work, by reason", ["reason"]
        )
        self.queue_depth = Gauge("onnxpipe_queue_depth", "Inputs tokenized and waiting for a batch", ["model"])
        self.batches = Counter("onnxpipe_batches_total", "Model calls (one per batch)", ["model"])
        self.batch_size = Histogram("onnxpipe_batch_size", "Rows per model call", ["model"], SIZE_BUCKETS)
        self.batch_tokens = Histogram("onnxpipe_batch_tokens", "Padded tokens per model call", ["model"], TOKEN_BUCKETS)
        self.tokens = Counter("onnxpipe_input_tokens_total", "Tokens of the inputs served", ["model"])
        self.registry = prom.CollectorRegistry()
        every: list[Any] = [v for v in vars(self).values() if isinstance(v, _Metric)]
        self.registry.register(_Collector(every))

    def render(self) -> str:
        return prom.generate_latest(self.registry).decode()
