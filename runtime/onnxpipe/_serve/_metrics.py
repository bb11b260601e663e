"""Prometheus text-format metrics, written by hand: a counter, a gauge and a histogram with labels.

A client library would be one more dependency for ~80 lines; the exposition format is plain text and stable.
Every update happens on the event loop or under the batcher's lock, so plain dicts suffice.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable

# Request latency in seconds: sub-millisecond steps matter here (a batch-1 request takes ~2 ms on a laptop).
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
TOKEN_BUCKETS = (16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)


def _labels(names: tuple[str, ...], values: tuple[str, ...]) -> str:
    if not names:
        return ""
    pairs = ",".join(
        f'{n}="{str(v).replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
        for n, v in zip(names, values)
    )
    return "{" + pairs + "}"


class _Metric:
    kind = ""

    def __init__(self, name: str, help: str, labels: Iterable[str] = ()):
        self.name, self.help, self.label_names = name, help, tuple(labels)
        self.values: dict[tuple[str, ...], float] = {}

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]

    def render(self) -> list[str]:
        return self.header() + [f"{self.name}{_labels(self.label_names, k)} {v:g}" for k, v in self.values.items()]


class Counter(_Metric):
    """A monotonic count. ``Counter("x_total", "...", ["model"]).inc("m")``"""

    kind = "counter"

    def inc(self, *labels: str, amount: float = 1.0) -> None:
        self.values[labels] = self.values.get(labels, 0.0) + amount


class Gauge(_Metric):
    """A value that goes up and down. ``g.set(3, "m")``"""

    kind = "gauge"

    def set(self, value: float, *labels: str) -> None:
        self.values[labels] = float(value)

    def add(self, amount: float, *labels: str) -> None:
        self.values[labels] = self.values.get(labels, 0.0) + amount


class Histogram(_Metric):
    """Cumulative buckets, sum and count per label set. ``h.observe(0.003, "/predict")``"""

    kind = "histogram"

    def __init__(self, name: str, help: str, labels: Iterable[str] = (), buckets: tuple[float, ...] = LATENCY_BUCKETS):
        super().__init__(name, help, labels)
        self.buckets = tuple(buckets)
        self.series: dict[tuple[str, ...], list[float]] = {}  # per-bucket counts (not cumulative), then sum

    def observe(self, value: float, *labels: str) -> None:
        row = self.series.get(labels)
        if row is None:
            row = self.series[labels] = [0.0] * (len(self.buckets) + 2)
        row[bisect.bisect_left(self.buckets, value)] += 1  # the last slot before the sum is +Inf
        row[-1] += value

    def render(self) -> list[str]:
        lines = self.header()
        names = (*self.label_names, "le")
        for labels, row in self.series.items():
            total = 0.0
            for bound, n in zip((*[f"{b:g}" for b in self.buckets], "+Inf"), row[:-1]):
                total += n
                lines.append(f"{self.name}_bucket{_labels(names, (*labels, bound))} {total:g}")
            lines.append(f"{self.name}_sum{_labels(self.label_names, labels)} {row[-1]:g}")
            lines.append(f"{self.name}_count{_labels(self.label_names, labels)} {total:g}")
        return lines


class Metrics:
    """Every metric the server exports; ``render()`` is the body of ``GET /metrics``.

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
        self.in_flight.set(0)

    def render(self) -> str:
        metrics = (
            self.requests,
            self.latency,
            self.in_flight,
            self.rejected,
            self.queue_depth,
            self.batches,
            self.batch_size,
            self.batch_tokens,
            self.tokens,
        )
        return "\n".join(line for m in metrics for line in m.render()) + "\n"
