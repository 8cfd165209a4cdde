"""Prometheus metrics of the ingest service, summed over its server processes.

Request counters are plain int64s in this process's row of a
:class:`~.board.CounterBoard`, updated by the event loop; job counts and the
queue depth are read from the dispatcher's ``stats()`` (the sink's counts from
the sink) and copied into the row when scraped and every
:data:`~.board.PUBLISH_INTERVAL`, so the hot path pays nothing for them.
``/metrics`` on any process reports the sum of every row.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Iterator
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

from .board import BUCKETS, REJECT_REASONS, CounterBoard, Slot

if TYPE_CHECKING:
    from .redis_queue import RedisPayloadQueue as RemoteQueue
    from .sink import SegmentSink

__all__ = ["CONTENT_TYPE", "REJECT_REASONS", "ServiceMetrics"]

#: Content type of the Prometheus text format.
CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"

#: The counters that are one slot of the summed rows each: (name, help, slot).
_REQUEST_COUNTERS: Final = (
    (
        "dispatchkit_payloads_accepted",
        "Payloads answered 202: stored by the sink, queued as jobs or held by Redis.",
        Slot.PAYLOADS,
    ),
    ("dispatchkit_requests_accepted", "Requests answered 202.", Slot.REQUESTS),
)
_SINK_COUNTERS: Final = (
    (
        "dispatchkit_sink_lines_written",
        "Payloads written to the sink's segments (each answered 202).",
        Slot.SINK_LINES,
    ),
    (
        "dispatchkit_sink_unstored",
        "Payloads answered 202 whose fsync failed: perhaps not on disk.",
        Slot.SINK_UNSTORED,
    ),
)
_JOB_COUNTERS: Final = (
    ("dispatchkit_jobs_succeeded", "Payload jobs that ran.", Slot.SUCCEEDED),
    ("dispatchkit_jobs_failed", "Payload jobs that raised.", Slot.FAILED),
)


def _counters(table: Iterable[tuple[str, str, int]], totals: list[int]) -> Iterator[Metric]:
    """One counter per row of ``table``, its value read from ``totals``."""
    for name, documentation, slot in table:
        yield CounterMetricFamily(name, documentation, value=totals[slot])


def _histogram(
    name: str, documentation: str, totals: list[int], first: int, sum_slot: int
) -> Metric:
    """The histogram whose bucket counts start at slot ``first`` of ``totals``."""
    cumulative = list(accumulate(totals[first : first + len(BUCKETS) + 1]))
    return HistogramMetricFamily(
        name,
        documentation,
        buckets=[
            *zip(map(floatToGoString, BUCKETS), cumulative, strict=False),
            ("+Inf", cumulative[-1]),
        ],
        sum_value=totals[sum_slot] / 1e9,
    )


class _Collector(Collector):
    """Sums every process's row when scraped, this process's own counts fresh."""

    def __init__(self, metrics: ServiceMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        metrics = self._metrics
        metrics.publish()
        totals = metrics.board.totals()
        yield from _counters(_REQUEST_COUNTERS, totals)
        rejected = CounterMetricFamily(
            "dispatchkit_requests_rejected", "Requests refused, by reason.", labels=["reason"]
        )
        for index, reason in enumerate(REJECT_REASONS):
            rejected.add_metric([reason], totals[Slot.REJECTED + index])
        yield rejected
        yield from self._jobs(totals)
        yield _histogram(
            "dispatchkit_request_duration_seconds",
            "Time from request to response, in seconds.",
            totals,
            Slot.LATENCY,
            Slot.LATENCY_SUM_NS,
        )
        if metrics.sink is not None:
            yield from _counters(_SINK_COUNTERS, totals)
            yield _histogram(
                "dispatchkit_sink_fsync_duration_seconds",
                "Time each flush of the sink spent in fsync, in seconds: with --ack "
                "durable, a 202 waits for one or two of them.",
                totals,
                Slot.FSYNC,
                Slot.FSYNC_SUM_NS,
            )

    def _jobs(self, totals: list[int]) -> Iterator[Metric]:
        if self._metrics.remote:
            # Remote workers run and count the jobs; here, the backlog seen last.
            yield GaugeMetricFamily(
                "dispatchkit_queue_depth",
                "Payload jobs in the Redis stream, not yet acknowledged by a worker "
                "(as of the last request).",
                value=totals[Slot.BACKLOG],
            )
            return
        done = totals[Slot.SUCCEEDED] + totals[Slot.FAILED] + totals[Slot.CANCELLED]
        yield GaugeMetricFamily(
            "dispatchkit_queue_depth",
            "Payload jobs accepted and not finished yet (queued or running).",
            value=max(0, totals[Slot.SUBMITTED] - done),
        )
        yield from _counters(_JOB_COUNTERS, totals)


class ServiceMetrics:
    """The service's metrics, in a registry of their own.

    Args:
        dispatcher: whose counters the job metrics report.
        sink: whose counts the sink metrics report (None: no sink).
        board: the counters of every server process (None: this one's only).
        process: this process's row on ``board`` (0-based).
    """

    def __init__(
        self,
        dispatcher: AsyncDispatcher | Dispatcher | RemoteQueue,
        sink: SegmentSink | None = None,
        *,
        board: CounterBoard | None = None,
        process: int = 0,
    ) -> None:
        self.board = board if board is not None else CounterBoard(1)
        #: This process's counters, added to in place by the event loop's thread
        #: (indices in :class:`~.board.Slot`): a prometheus Counter or Histogram
        #: takes a lock per update, which shows at 30k requests/s.
        self.row = self.board.row(process)
        self.dispatcher = dispatcher
        self.sink = sink
        self.remote = not isinstance(dispatcher, AsyncDispatcher | Dispatcher)
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(_Collector(self))

    @property
    def payloads_accepted(self) -> int:
        """Payloads this process answered 202."""
        return int(self.row[Slot.PAYLOADS])

    def observe_latency(self, seconds: float) -> None:
        """Count one request that took ``seconds`` to answer."""
        row = self.row
        row[Slot.LATENCY + bisect_left(BUCKETS, seconds)] += 1
        row[Slot.LATENCY_SUM_NS] += int(seconds * 1e9)

    def observe_fsync(self, seconds: float) -> None:
        """Count one flush of the sink that spent ``seconds`` in fsync (the sink's thread)."""
        # Its own slots, written by one thread at a time (the sink's flush lock).
        row = self.row
        row[Slot.FSYNC + bisect_left(BUCKETS, seconds)] += 1
        row[Slot.FSYNC_SUM_NS] += int(seconds * 1e9)

    def publish(self) -> None:
        """Copy this process's job and sink counts into its row, for the others to sum."""
        row = self.row
        dispatcher = self.dispatcher
        if isinstance(dispatcher, AsyncDispatcher | Dispatcher):
            stats = dispatcher.stats()
            row[Slot.SUBMITTED] = stats.submitted
            row[Slot.SUCCEEDED] = stats.succeeded
            row[Slot.FAILED] = stats.failed
            row[Slot.CANCELLED] = stats.cancelled
        else:
            row[Slot.BACKLOG] = dispatcher.backlog
        if self.sink is not None:
            row[Slot.SINK_LINES] = self.sink.lines_written
            row[Slot.SINK_UNSTORED] = self.sink.unstored

    def render(self) -> bytes:
        """The metrics in the Prometheus text format."""
        return generate_latest(self.registry)
