"""One finished ``map`` job, as workers hand it back, and what ``map`` yields for it."""

from __future__ import annotations

from typing import Any, NamedTuple

from dispatchkit.errors import JobCancelled

from .status import JobStatus

__all__ = ["ResultRow", "cancelled_rows", "map_result"]


class ResultRow(NamedTuple):
    """How one job of a ``map`` call ended; ``value`` is the exception if it did not succeed.

    Timestamps are ``perf_counter()`` readings; ``started_at`` and ``worker``
    are None for a job cancelled before it started.
    """

    seq: int
    status: JobStatus
    value: Any
    worker: int | None
    submitted_at: float | None
    started_at: float | None
    finished_at: float | None
    attempts: int


def cancelled_rows(
    seqs: list[int], submitted_at: float | None, finished_at: float | None
) -> list[ResultRow]:
    """Rows of ``map`` jobs a stop dropped before they ran."""
    error = JobCancelled("cancelled by stop()")
    cancelled = JobStatus.CANCELLED
    return [
        ResultRow(seq, cancelled, error, None, submitted_at, None, finished_at, 0) for seq in seqs
    ]


def map_result(row: ResultRow, outcomes: bool) -> Any:
    """What ``map`` yields for a row: the value, an :class:`Outcome`, or the job's
    exception raised.

    Reads the row by position: a thread worker's hot loop delivers plain
    tuples in ResultRow's field order.
    """
    seq, status, value, worker, submitted_at, started_at, finished_at, attempts = row
    if outcomes:
        from dispatchkit.job import Outcome  # job.py builds on this package

        times = (submitted_at, started_at, finished_at)
        return Outcome.ended(seq, status, value, worker, times, attempts)
    if status is JobStatus.SUCCEEDED:
        return value
    raise value
