"""Snapshots of a dispatcher's counters, as frozen dataclasses."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

__all__ = ["DispatcherStats", "WorkerStats", "snapshot"]


class _Counters(Protocol):
    """A worker's live counters, as every worker kind keeps them."""

    index: int
    succeeded: int
    failed: int
    cancelled: int
    busy: float
    first_start: float | None

    def live_succeeded(self) -> int:
        """``succeeded``, with the jobs of a chunk still running that returned."""
        ...


@dataclass(frozen=True, slots=True)
class WorkerStats:
    """What one worker has done so far.

    Attributes:
        index: the worker's position, 0 to workers - 1.
        succeeded: jobs that returned.
        failed: jobs that raised.
        cancelled: jobs the worker had taken but dropped on ``stop(cancel=True)``.
        busy_seconds: time spent running jobs.
        first_start: seconds from the dispatcher's start to this worker's first
            job (how long it sat idle), or None if it has run none.
    """

    index: int
    succeeded: int
    failed: int
    cancelled: int
    busy_seconds: float
    first_start: float | None

    @property
    def jobs(self) -> int:
        """Jobs finished by this worker (succeeded or failed)."""
        return self.succeeded + self.failed


@dataclass(frozen=True, slots=True)
class DispatcherStats:
    """Totals of a dispatcher, and the stats of each worker.

    After ``join()`` or ``stop()``, ``submitted == succeeded + failed + cancelled``.
    """

    submitted: int
    succeeded: int
    failed: int
    cancelled: int
    workers: tuple[WorkerStats, ...]

    @property
    def finished(self) -> int:
        """Jobs that have ended, whichever way."""
        return self.succeeded + self.failed + self.cancelled

    @property
    def pending(self) -> int:
        """Jobs submitted but not yet ended (queued or running)."""
        return self.submitted - self.finished

    @property
    def first_start_spread(self) -> float | None:
        """Seconds between the first and the last worker starting its first job."""
        starts = [w.first_start for w in self.workers if w.first_start is not None]
        if not starts:
            return None
        return max(starts) - min(starts)

    @property
    def imbalance(self) -> float | None:
        """The busiest worker's busy time over the mean (1.0 is perfectly even)."""
        busy = [w.busy_seconds for w in self.workers]
        mean = sum(busy) / len(busy) if busy else 0.0
        if mean <= 0:
            return None
        return max(busy) / mean


def snapshot(
    counters: Iterable[_Counters], started_at: float, submitted: int, cancelled_in_queues: int
) -> DispatcherStats:
    """Freeze live worker counters into :class:`DispatcherStats`.

    ``started_at`` is the dispatcher's start (first starts are given relative
    to it); ``cancelled_in_queues`` counts the jobs cancelled before any
    worker took them.
    """
    workers = tuple(
        WorkerStats(
            index=c.index,
            succeeded=c.live_succeeded(),
            failed=c.failed,
            cancelled=c.cancelled,
            busy_seconds=c.busy,
            first_start=None if c.first_start is None else c.first_start - started_at,
        )
        for c in counters
    )
    return DispatcherStats(
        submitted=submitted,
        succeeded=sum(w.succeeded for w in workers),
        failed=sum(w.failed for w in workers),
        cancelled=cancelled_in_queues + sum(w.cancelled for w in workers),
        workers=workers,
    )
