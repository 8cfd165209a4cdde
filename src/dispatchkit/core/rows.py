"""One finished ``map`` job, as workers hand it back, and what ``map`` yields for it."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

from dispatchkit.errors import JobCancelled

from .status import JobStatus

__all__ = ["ResultRow", "RowBlock", "cancelled_rows", "map_result"]


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


class RowBlock:
    """The rows of several jobs delivered as one, turned into what ``map`` yields only
    when yielded.

    A front end whose workers hand back many results at once (a remote chunk
    comes back as one outcome) delivers one block instead of a row per job:
    the window orders and counts it as one unit, and per-job work is left to
    :meth:`results`, the one loop over the jobs. A block's jobs are admitted
    with :meth:`~dispatchkit.core.MapWindow.admit_block`.

    Attributes:
        seqs: its jobs' sequence numbers, in input order (consecutive when the
            window is ordered).
    """

    __slots__ = ("seqs",)

    def __init__(self, seqs: Sequence[int]) -> None:
        self.seqs = seqs

    def results(self, outcomes: bool) -> Iterator[Any]:
        """What ``map`` yields for each job, in order (as :func:`map_result`: the value,
        an :class:`~dispatchkit.Outcome`, or the job's exception raised)."""
        raise NotImplementedError


def cancelled_rows(
    seqs: Sequence[int], submitted_at: float | None, finished_at: float | None
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
