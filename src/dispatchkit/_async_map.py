"""A ``map`` chunk that hands back its results as one block.

    inbox ──▶ worker task: BlockChunk._arun ──one ChunkResults per chunk──▶ MapRun
    map ◀── ChunkResults (results, or next_result per job) ◀── MapWindow

A worker keeps a chunk's values in one list instead of a row per job, and
reads the clock per job only when ``map`` yields :class:`~dispatchkit.Outcome` s
(which carry each job's times); otherwise the chunk's start and end are what
the adaptive chunk size is measured from. With one shared queue (``pull``,
``auto``) a chunk's jobs are consecutive, and the window orders and counts
whole blocks; otherwise each job's place in the window points at its block.
Fewer objects per job also means fewer and cheaper garbage collections, which
dominate a large ``map`` of short waits.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from functools import partial
from itertools import islice, repeat
from time import perf_counter
from typing import Any

from dispatchkit._async_work import AsyncChunk, job_failure, self_cancelled
from dispatchkit.core import (
    JobStatus,
    MapRun,
    ResultRow,
    RowBlock,
    WorkerState,
    cancelled_rows,
    map_result,
)
from dispatchkit.retry import RetryPolicy

__all__ = ["BlockChunk", "ChunkResults"]

_SUCCEEDED, _FAILED = JobStatus.SUCCEEDED, JobStatus.FAILED


class ChunkResults(RowBlock):
    """The results of one :class:`BlockChunk`, in its jobs' order.

    ``values[i]`` is job ``i``'s value, or its exception if ``i`` is in
    ``failed``; ``times``, when the clock was read, holds the chunk's start and each
    job's end (one reading more than there are values: a job starts where the one
    before it ended, a queue's bookkeeping apart). ``rows`` are the chunk's
    remaining jobs as plain rows: all of them after a retry policy or timeout ran
    them, the cancelled ones after a stop.
    """

    __slots__ = ("cursor", "failed", "rows", "submitted_at", "times", "values", "worker")

    def __init__(
        self,
        seqs: Sequence[int],
        worker: int | None,
        submitted_at: float,
        values: list[Any],
        failed: set[int] | None = None,
        times: list[float] | None = None,
        rows: list[ResultRow] | None = None,
    ) -> None:
        super().__init__(seqs)
        self.worker, self.submitted_at = worker, submitted_at
        self.values, self.failed, self.times, self.rows = values, failed, times, rows
        #: Where :meth:`next_result` is.
        self.cursor: Iterator[Any] | None = None

    def results(self, outcomes: bool) -> Iterator[Any]:
        if self.rows is None:  # the hot paths: every job of the chunk ran
            if not outcomes and self.failed is None:
                return iter(self.values)
            if outcomes:
                return self._outcomes(self.failed or ())
        return self._each(outcomes)

    def next_result(self, outcomes: bool) -> Any:
        """What ``map`` yields for the block's next job (its jobs taken one at a time,
        in order, as :meth:`~dispatchkit.core.MapWindow.release_spread` gives them)."""
        cursor = self.cursor
        if cursor is None:
            cursor = self.cursor = self.results(outcomes)
        return next(cursor)

    def _each(self, outcomes: bool) -> Iterator[Any]:
        failed = self.failed or ()
        if outcomes:
            yield from self._outcomes(failed)
        else:
            for position, value in enumerate(self.values):
                if position in failed:
                    raise value
                yield value
        for row in self.rows or ():
            yield map_result(row, outcomes)

    def _outcomes(self, failed: set[int] | tuple[()]) -> Iterator[Any]:
        """An :class:`~dispatchkit.Outcome` per job; built from its fields in order, not
        through ``Outcome.ended``, as this runs once per job of a ``map(outcomes=True)``:
        where every job succeeded, by C-level iteration alone (``zip`` of the fields,
        each tuple made an ``Outcome`` by ``tuple.__new__``), about 0.4 µs a job less
        than a generator's loop."""
        from dispatchkit.job import Outcome  # job.py builds on the core

        worker, submitted, times = self.worker, self.submitted_at, self.times
        # Each job's start and finish: the readings before and after it.
        starts = repeat(None) if times is None else times
        finishes = repeat(None) if times is None else islice(times, 1, None)
        if failed:  # the rare case: Outcome.ended sorts value from error
            return self._outcomes_with_failures(Outcome, failed, starts, finishes)
        # seqs runs on past values when a stop cancelled the chunk's rest (its rows):
        # zip ends with the shortest.
        fields = zip(
            self.seqs, repeat(_SUCCEEDED), self.values, repeat(None), repeat(worker),
            repeat(submitted), starts, finishes, repeat(1), repeat(None),
        )  # fmt: skip
        return map(partial(tuple.__new__, Outcome), fields)

    def _outcomes_with_failures(
        self,
        outcome: Any,
        failed: set[int],
        starts: Iterable[float | None],
        finishes: Iterable[float | None],
    ) -> Iterator[Any]:
        worker, submitted = self.worker, self.submitted_at
        jobs = zip(self.seqs, self.values, starts, finishes, strict=False)
        for position, (seq, value, started, finished) in enumerate(jobs):
            status = _FAILED if position in failed else _SUCCEEDED
            yield outcome.ended(seq, status, value, worker, (submitted, started, finished), 1)


class BlockChunk(AsyncChunk):
    """An :class:`AsyncChunk` of ``map`` whose consecutive jobs come back as one
    :class:`ChunkResults`; ``timed``: read the clock around each job."""

    __slots__ = ("timed",)

    def __init__(
        self,
        call: Callable[[Any], Awaitable[Any]],
        items: Sequence[Any],
        seqs: Sequence[int],
        run: MapRun,
        policy: RetryPolicy | None,
        timeout: float | None,
        timed: bool,
    ) -> None:
        super().__init__(call, items, seqs, run, policy, timeout)
        self.timed = timed

    def _deliver_cancelled(self, start: int) -> None:
        assert self.run is not None
        rows = cancelled_rows(self.seqs[start:], self.submitted_at, None)
        block = ChunkResults(self.seqs, None, self.submitted_at, [], rows=rows)
        self.run.deliver_measured([block], None, len(rows), None, None)

    def _hand_back(self, rows: list[Any], cancelled_from: int | None) -> None:
        # The retry or timeout path's rows (and any cancelled after them), as one
        # block, measured from its rows' timestamps if every job ran.
        assert self.run is not None
        measured = cancelled_from is None and bool(rows)
        if cancelled_from is not None:
            rows = rows + cancelled_rows(self.seqs[cancelled_from:], self.submitted_at, None)
        block = ChunkResults(self.seqs, None, self.submitted_at, [], rows=rows)
        if measured:
            self.run.deliver_measured([block], rows[0][3], len(rows), rows[0][5], rows[-1][6])
        else:
            self.run.deliver_measured([block], None, len(rows), None, None)

    async def _arun(self, state: WorkerState) -> None:
        """Run the jobs one by one (as :meth:`AsyncChunk._arun`, without a policy's
        or a timeout's wrapper: a chunk with those goes the general way)."""
        run = self.run
        assert run is not None
        if self.policy is not None or self.timeout is not None:
            await super()._arun(state)
            return
        call, items = self.call, self.items
        values: list[Any] = []
        keep = values.append
        failed: set[int] | None = None
        chunk_start = perf_counter()
        # One reading per job, at its end (see ChunkResults): half the clock reads.
        times: list[float] | None = [chunk_start] if self.timed else None
        stamp = None if times is None else times.append
        if state.first_start is None:
            state.first_start = chunk_start
        task, stop = state.task, state.control
        assert task is not None
        cancelling = task.cancelling
        # As in AsyncChunk._arun: each job starts with the chunk's count of
        # cancellation requests (a job's own are withdrawn as it ends).
        before = cancelling()
        # Successes are counted once the chunk ends; meanwhile stats() reads how much
        # of ``jobs`` is used up (WorkerState.live_succeeded). A job's place in the
        # chunk is how many values came before it.
        jobs = iter(items)
        failed_before = state.failed
        state.chunk_size, state.chunk_failed, state.chunk = len(items), failed_before, jobs
        try:
            for item in jobs:
                try:
                    value = await call(item)
                except BaseException as exc:  # the job's failure, unless it is a stop
                    value = await job_failure(exc, task, before, stop)
                    failed = _failed(failed, len(values))
                    state.failed += 1
                else:
                    if cancelling() != before and not stop():
                        value = await self_cancelled(task, before, stop)
                        failed = _failed(failed, len(values))
                        state.failed += 1
                keep(value)
                if stamp is not None:
                    stamp(perf_counter())
        except asyncio.CancelledError:
            # The cancelled job's start is the last reading: the one after the last value.
            position = len(values)
            state.cancelled += len(items) - position
            rows = cancelled_rows(self.seqs[position:], self.submitted_at, None)
            block = ChunkResults(
                self.seqs, state.index, self.submitted_at, values, failed, times, rows
            )
            run.deliver_measured([block], state.index, len(items), None, None)
            raise
        finally:
            finished = perf_counter()
            state.busy += finished - chunk_start
            state.chunk = None  # before the count below: a reader never counts twice
            state.succeeded += len(values) - (state.failed - failed_before)
        block = ChunkResults(self.seqs, state.index, self.submitted_at, values, failed, times)
        run.deliver_measured([block], state.index, len(items), chunk_start, finished)


def _failed(failed: set[int] | None, position: int) -> set[int]:
    if failed is None:
        failed = set()
    failed.add(position)
    return failed
