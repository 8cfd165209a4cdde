"""Prometheus metrics of the ingest service.

Request counters are updated by the event loop; job counts and the queue depth
are read from ``Dispatcher.stats()`` when scraped, so the workers' hot path
pays nothing for them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
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


class _DispatcherCollector(Collector):
    def __init__(self, dispatcher: Dispatcher) -> None:
        self._dispatcher = dispatcher

    def collect(self) -> Iterator[Metric]:
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
        self.registry = CollectorRegistry(auto_describe=True)
        self.payloads_accepted = Counter(
            "dispatchkit_payloads_accepted",
            "Payloads answered 202 and queued as jobs.",
            registry=self.registry,
        )
        self.requests_accepted = Counter(
            "dispatchkit_requests_accepted",
            "Requests answered 202.",
            registry=self.registry,
        )
        rejected = Counter(
            "dispatchkit_requests_rejected",
            "Requests refused, by reason.",
            ["reason"],
            registry=self.registry,
        )
        # Children bound once: a label lookup per request would cost more than the count.
        self.rejected = {reason: rejected.labels(reason) for reason in REJECT_REASONS}
        self.latency = Histogram(
            "dispatchkit_request_duration_seconds",
            "Time from request to response, in seconds.",
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_DispatcherCollector(dispatcher))

    def render(self) -> bytes:
        """The metrics in the Prometheus text format."""
        return generate_latest(self.registry)
