"""Prometheus metrics of the ingest service.

Request counters are updated by the event loop; job counts and the queue depth
are read from the dispatcher's ``stats()`` when scraped, so the workers' hot path
pays nothing for them.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator
from itertools import accumulate
from typing import TYPE_CHECKING, Final

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from dispatchkit.async_dispatcher import AsyncDispatcher
from dispatchkit.dispatcher import Dispatcher

if TYPE_CHECKING:
    from .redis_queue import RedisPayloadQueue as RemoteQueue
    from .sink import SegmentSink

__all__ = ["CONTENT_TYPE", "REJECT_REASONS", "ServiceMetrics"]

#: Content type of the Prometheus text format.
CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"

#: Labels of the rejected-requests counter.
REJECT_REASONS: Final = (
    "malformed",
    "too_deep",
    "invalid",
    "too_large",
    "queue_full",
    "closing",
    "unauthorized",
    "not_found",
    "method_not_allowed",
    "unavailable",
    "sink_failed",
)

#: Latency buckets in seconds: the target is a p99 under 50 ms.
_BUCKETS: Final = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


class _Collector(Collector):
    """Reads the plain counters and the dispatcher's stats when scraped."""

    def __init__(
        self,
        metrics: ServiceMetrics,
        dispatcher: AsyncDispatcher | Dispatcher | RemoteQueue,
        sink: SegmentSink | None,
    ) -> None:
        self._metrics = metrics
        self._dispatcher = dispatcher
        self._sink = sink

    def collect(self) -> Iterator[Metric]:
        metrics = self._metrics
        yield CounterMetricFamily(
            "dispatchkit_payloads_accepted",
            "Payloads answered 202: stored by the sink, queued as jobs or held by Redis.",
            value=metrics.payloads_accepted,
        )
        yield CounterMetricFamily(
            "dispatchkit_requests_accepted",
            "Requests answered 202.",
            value=metrics.requests_accepted,
        )
        rejected = CounterMetricFamily(
            "dispatchkit_requests_rejected", "Requests refused, by reason.", labels=["reason"]
        )
        for reason, count in metrics.rejected.items():
            rejected.add_metric([reason], count)
        yield rejected
        yield from self._jobs()
        if self._sink is not None:
            yield CounterMetricFamily(
                "dispatchkit_sink_lines_written",
                "Payloads written to the sink's segments (each answered 202).",
                value=self._sink.lines_written,
            )
            yield CounterMetricFamily(
                "dispatchkit_sink_unstored",
                "Payloads answered 202 whose fsync failed: perhaps not on disk.",
                value=self._sink.unstored,
            )
        cumulative = list(accumulate(metrics.latency_counts))
        yield HistogramMetricFamily(
            "dispatchkit_request_duration_seconds",
            "Time from request to response, in seconds.",
            buckets=[
                *zip(map(floatToGoString, _BUCKETS), cumulative, strict=False),
                ("+Inf", cumulative[-1]),
            ],
            sum_value=metrics.latency_sum,
        )

    def _jobs(self) -> Iterator[Metric]:
        dispatcher = self._dispatcher
        if not isinstance(dispatcher, AsyncDispatcher | Dispatcher):
            # Remote workers run and count the jobs; here, the backlog seen last.
            yield GaugeMetricFamily(
                "dispatchkit_queue_depth",
                "Payload jobs in the Redis stream, not yet acknowledged by a worker "
                "(as of the last request).",
                value=dispatcher.backlog,
            )
            return
        stats = dispatcher.stats()
        done = stats.succeeded + stats.failed + stats.cancelled
        yield GaugeMetricFamily(
            "dispatchkit_queue_depth",
            "Payload jobs accepted and not finished yet (queued or running).",
            value=max(0, stats.submitted - done),
        )
        yield CounterMetricFamily(
            "dispatchkit_jobs_succeeded", "Payload jobs that ran.", value=stats.succeeded
        )
        yield CounterMetricFamily(
            "dispatchkit_jobs_failed", "Payload jobs that raised.", value=stats.failed
        )


class ServiceMetrics:
    """The service's metrics, in a registry of their own.

    Args:
        dispatcher: whose counters the job metrics report.
        sink: whose counts the sink metrics report (None: no sink).
    """

    def __init__(
        self,
        dispatcher: AsyncDispatcher | Dispatcher | RemoteQueue,
        sink: SegmentSink | None = None,
    ) -> None:
        # Plain numbers, updated only by the event loop's thread: a prometheus
        # Counter or Histogram takes a lock per update, which shows at 30k
        # requests/s. The collector turns them into metrics when scraped.
        #: Payloads answered 202.
        self.payloads_accepted = 0
        #: Requests answered 202.
        self.requests_accepted = 0
        #: Requests refused, by reason (one of :data:`REJECT_REASONS`).
        self.rejected = dict.fromkeys(REJECT_REASONS, 0)
        #: Requests by latency bucket (the last: slower than every bucket).
        self.latency_counts = [0] * (len(_BUCKETS) + 1)
        #: Seconds spent answering, all requests together.
        self.latency_sum = 0.0
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(_Collector(self, dispatcher, sink))

    def observe_latency(self, seconds: float) -> None:
        """Count one request that took ``seconds`` to answer."""
        self.latency_counts[bisect_left(_BUCKETS, seconds)] += 1
        self.latency_sum += seconds

    def render(self) -> bytes:
        """The metrics in the Prometheus text format."""
        return generate_latest(self.registry)
