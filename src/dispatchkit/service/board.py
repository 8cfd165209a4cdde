"""The counters of every server process, in one shared memory map, summed when scraped.

    serve (main process)              server process 1        server process N
    creates counters.bin:  ─ mmap ─▶  row 1: += per request   row N: += per request
    N rows of SLOTS int64s            │                        │
                                      └── GET /metrics on any process sums the N rows

Each server process adds to its own row only, with a plain memoryview item
update (no lock, no call into prometheus-client): one process writes a row,
and an aligned 8-byte store is read whole by the others. What a process
cannot count as it goes (its dispatcher's job counts, its sink's lines) it
copies into its row every :data:`PUBLISH_INTERVAL` and when scraped, so the
other processes' share of those is at most that old; request counts are exact.
"""

from __future__ import annotations

import mmap
import os
from pathlib import Path
from typing import Final

__all__ = ["BUCKETS", "PUBLISH_INTERVAL", "REJECT_REASONS", "CounterBoard", "Slot"]

#: Seconds between two copies of a process's job and sink counts into its row.
PUBLISH_INTERVAL: Final = 0.1

#: Latency buckets in seconds (of requests and of the sink's fsyncs): the
#: target is a p99 under 50 ms.
BUCKETS: Final = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)

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


class Slot:
    """Where each count sits in a row (int64 indices)."""

    PAYLOADS: Final = 0
    REQUESTS: Final = 1
    LATENCY_SUM_NS: Final = 2
    SUBMITTED: Final = 3
    SUCCEEDED: Final = 4
    FAILED: Final = 5
    CANCELLED: Final = 6
    BACKLOG: Final = 7
    SINK_LINES: Final = 8
    SINK_UNSTORED: Final = 9
    #: Requests refused, one slot per reason of :data:`REJECT_REASONS`.
    REJECTED: Final = 10
    #: Requests by latency bucket, the last slower than every bucket.
    LATENCY: Final = REJECTED + len(REJECT_REASONS)
    #: The sink's flushes by fsync time, in the same buckets; then their sum.
    FSYNC: Final = LATENCY + len(BUCKETS) + 1
    FSYNC_SUM_NS: Final = FSYNC + len(BUCKETS) + 1
    #: Slots in a row.
    COUNT: Final = FSYNC_SUM_NS + 1


_ITEM: Final = 8  # bytes of an int64


class CounterBoard:
    """``rows`` rows of :class:`Slot` counters, shared through a file or private.

    Args:
        rows: how many server processes count on it.
        path: the file that holds them, mapped shared (None: anonymous memory,
            for one process).
    """

    def __init__(self, rows: int, path: Path | None = None) -> None:
        size = rows * Slot.COUNT * _ITEM
        if path is None:
            self._map = mmap.mmap(-1, size)
        else:
            fd = os.open(path, os.O_RDWR)
            try:
                if os.fstat(fd).st_size < size:
                    raise ValueError(f"{path} holds fewer than {rows} rows of counters")
                self._map = mmap.mmap(fd, size, mmap.MAP_SHARED)
            finally:
                os.close(fd)  # the map keeps its own reference
        self.rows = rows
        self._all = memoryview(self._map).cast("q")

    @staticmethod
    def create(path: Path, rows: int) -> None:
        """Make the file of ``rows`` zeroed rows (before the processes map it)."""
        with open(path, "wb") as out:
            out.truncate(rows * Slot.COUNT * _ITEM)

    def row(self, index: int) -> memoryview:
        """The counters of process ``index`` (0-based), to add to in place."""
        start = index * Slot.COUNT
        return self._all[start : start + Slot.COUNT]

    def totals(self) -> list[int]:
        """Every slot summed over the rows."""
        values = self._all.tolist()
        count = Slot.COUNT
        return [sum(values[slot::count]) for slot in range(count)]
