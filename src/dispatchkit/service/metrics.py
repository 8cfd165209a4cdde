"""Prometheus metrics of the ingest service.

Request counters are updated by the event loop; job counts and the queue depth
are read from ``Dispatcher.stats()`` when scraped, so the workers' hot path
pays nothing for them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from dispatchkit.dispatcher import Dispatcher

__all__ = ["CONTENT_TYPE", "REJECT_REASONS", "ServiceMetrics"]

#: Content type of the Prometheus text format.
CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"

#: Labels of the rejected-requests counter.
REJECT_REASONS: Final = (
    "malformed",
    "invalid",
    "too_large",
    "queue_full",
    "closing",
    "unauthorized",
    "not_found",
    "method_not_allowed",
)

#: Latency buckets in seconds: the target is a p99 under 50 ms.
_BUCKETS: Final = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


class _Collector(Collector):
    """Reads the plain counters and the dispatcher's stats when scraped."""

    def __init__(self, metrics: ServiceMetrics, dispatcher: Dispatcher) -> None:
        self._metrics = metrics
        self._dispatcher = dispatcher

    def collect(self) -> Iterator[Metric]:
        metrics = self._metrics
        yield CounterMetricFamily(
            "dispatchkit_payloads_accepted",
            "Payloads answered 202 and queued as jobs.",
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
        stats = self._dispatcher.stats()
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
    """

    def __init__(self, dispatcher: Dispatcher) -> None:
        # Plain ints, updated only by the event loop's thread: a prometheus
        # Counter takes a lock per increment, which shows at 20k requests/s.
        #: Payloads answered 202.
        self.payloads_accepted = 0
        #: Requests answered 202.
        self.requests_accepted = 0
        #: Requests refused, by reason (one of :data:`REJECT_REASONS`).
        self.rejected = dict.fromkeys(REJECT_REASONS, 0)
        self.registry = CollectorRegistry(auto_describe=True)
        self.latency = Histogram(
            "dispatchkit_request_duration_seconds",
            "Time from request to response, in seconds.",
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_Collector(self, dispatcher))

    def render(self) -> bytes:
        """The metrics in the Prometheus text format."""
        return generate_latest(self.registry)
