"""Prometheus metrics through ``prometheus_client`` (the serve extra), in a registry of the app's own.

The names are those of the hand-written exposition before it, so dashboards keep working; values are now
exact (``1234567`` reads back as 1234567, where ``%g`` printed ``1.23457e+06``). Thin wrappers keep the call
sites short (``counter.inc("model")``) and cache each label set's child, one dict lookup per update on the
event loop instead of prometheus_client's ``labels()`` checks.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import prometheus_client as prom

# Request latency in seconds: sub-millisecond steps matter here (a batch-1 request takes ~2 ms on a laptop).
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
TOKEN_BUCKETS = (16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)
CONTENT_TYPE = prom.CONTENT_TYPE_LATEST


class _Metric:
    def __init__(self, metric: Any, labels: Iterable[str]):
        self.metric, self.labelled = metric, bool(tuple(labels))
        self._children: dict[tuple[str, ...], Any] = {}

    def child(self, labels: tuple[str, ...]) -> Any:
        if not self.labelled:
            return self.metric
        child = self._children.get(labels)
        if child is None:
            child = self._children[labels] = self.metric.labels(*labels)
        return child


class Counter(_Metric):
    """A monotonic count. ``Counter(registry, "x_total", "...", ["model"]).inc("m")``"""

    def __init__(self, registry: prom.CollectorRegistry, name: str, help: str, labels: Iterable[str] = ()):
        super().__init__(prom.Counter(name, help, tuple(labels), registry=registry), labels)

    def inc(self, *labels: str, amount: float = 1) -> None:
        self.child(labels).inc(amount)


class Gauge(_Metric):
    """A value that goes up and down. ``g.set(3, "m")``, ``g.add(-1, "m")``"""

    def __init__(self, registry: prom.CollectorRegistry, name: str, help: str, labels: Iterable[str] = ()):
        super().__init__(prom.Gauge(name, help, tuple(labels), registry=registry), labels)

    def set(self, value: float, *labels: str) -> None:
        self.child(labels).set(value)

    def add(self, amount: float, *labels: str) -> None:
        self.child(labels).inc(amount)


class Histogram(_Metric):
    """Cumulative buckets, sum and count per label set. ``h.observe(0.003, "/predict")``"""

    def __init__(
        self,
        registry: prom.CollectorRegistry,
        name: str,
        help: str,
        labels: Iterable[str] = (),
        buckets: tuple[float, ...] = LATENCY_BUCKETS,
    ):
        super().__init__(prom.Histogram(name, help, tuple(labels), registry=registry, buckets=buckets), labels)

    def observe(self, value: float, *labels: str) -> None:
        self.child(labels).observe(value)


class Metrics:
    """Every metric the server exports; ``render()`` is the body of ``GET /metrics``.

    Example:
        >>> m = Metrics()
        >>> m.batches.inc("minilm-sst2")
        >>> "onnxpipe_batches_total" in m.render()
        True
    """

    def __init__(self) -> None:
        self.registry = r = prom.CollectorRegistry()
        self.requests = Counter(
            r, "onnxpipe_requests_total", "HTTP requests by endpoint and status", ["endpoint", "status"]
        )
        self.latency = Histogram(r, "onnxpipe_request_duration_seconds", "Time from request to response", ["endpoint"])
        self.in_flight = Gauge(r, "onnxpipe_requests_in_flight", "Requests admitted and not yet answered")
        self.rejected = Counter(
            r, "onnxpipe_requests_rejected_total", "Requests refused before any work, by reason", ["reason"]
        )
        self.queue_depth = Gauge(r, "onnxpipe_queue_depth", "Inputs tokenized and waiting for a batch", ["model"])
        self.batches = Counter(r, "onnxpipe_batches_total", "Model calls (one per batch)", ["model"])
        self.batch_size = Histogram(r, "onnxpipe_batch_size", "Rows per model call", ["model"], SIZE_BUCKETS)
        self.batch_tokens = Histogram(
            r, "onnxpipe_batch_tokens", "Padded tokens per model call", ["model"], TOKEN_BUCKETS
        )
        self.tokens = Counter(r, "onnxpipe_input_tokens_total", "Tokens of the inputs served", ["model"])

    def render(self) -> str:
        return prom.generate_latest(self.registry).decode()
