"""What comes back from remote workers: outcomes as local values and errors, and the counts.

Every published entry has a :class:`Waiting` record until its outcome comes:
a job of ``submit`` settles its handle, a ``map`` entry of one job becomes a
:class:`~dispatchkit.core.ResultRow` and a chunk entry one :class:`ChunkRows`
block, delivered to the call's :class:`~dispatchkit.core.MapRun`, and a
``dispatch`` entry is only counted. An entry's id is the sequence number of its first job.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from operator import itemgetter
from time import perf_counter
from typing import Any

from dispatchkit.core import JobStatus, ResultRow, RowBlock, map_result
from dispatchkit.errors import (
    JobCancelled,
    RemoteJobError,
    RemoteTraceback,
    TimedOut,
    WorkerLost,
)
from dispatchkit.job import JobHandle
from dispatchkit.stats import DispatcherStats

__all__ = ["ChunkRows", "RemoteStats", "Waiting", "remote_error"]

_SUCCEEDED, _FAILED, _CANCELLED = JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED


@dataclass(frozen=True, slots=True)
class RemoteStats(DispatcherStats):
    """:class:`~dispatchkit.stats.DispatcherStats` of a ``RedisDispatcher``, and two more.

    Jobs are counted one by one (a chunk counts as its jobs); ``workers`` is
    empty (remote workers are known by name: ``RedisWorker.report()`` has theirs).

    Attributes:
        published: stream entries written to Redis (a chunk is one entry).
        duplicates: outcomes dropped because their entry had settled already (it
            ran again after its worker died: at-least-once delivery; or it came
            after a ``stop`` cancelled its handle).
        forgotten: jobs of ``dispatch(forget=True)`` published: they send no
            outcome back, so here they end once published (their worker counts
            and logs how they ran). After a drain, ``submitted == succeeded +
            failed + cancelled + forgotten``.
    """

    published: int
    duplicates: int
    forgotten: int = 0

    @property
    def finished(self) -> int:
        """Jobs that have ended here, whichever way (forgotten ones once published)."""
        return self.succeeded + self.failed + self.cancelled + self.forgotten


def remote_error(info: Any) -> BaseException:
    """The local exception for a remote ``[type name, message, traceback]``."""
    type_name, message, remote_tb = [str(part) for part in [*list(info), "", "", ""][:3]]
    error: BaseException
    if type_name.endswith("WorkerLost"):
        error = WorkerLost(message)
    elif type_name == "dispatchkit.errors.TimedOut":
        error = TimedOut(message)
    else:
        error = RemoteJobError(type_name, message, remote_tb)
    # As concurrent.futures.process does: the remote traceback is the cause.
    error.__cause__ = RemoteTraceback(remote_tb) if remote_tb else None
    return error


class ChunkRows(RowBlock):
    """The jobs of one chunk entry of ``map``, delivered as one block.

    Its outcome's ``[ok, value]`` pairs stay as they came (the listener's work
    per chunk is one list); each job's value, exception or
    :class:`~dispatchkit.Outcome` is made only as ``map`` yields it. An entry
    that ended whole (failed, lost, cancelled) carries its rows instead.
    """

    __slots__ = ("attempts", "finished_at", "pairs", "rows", "submitted_at")

    def __init__(
        self,
        seqs: Sequence[int],
        pairs: list[Any] | None,
        times: tuple[float, float],
        attempts: int,
        rows: list[ResultRow] | None = None,
    ) -> None:
        super().__init__(seqs)
        self.pairs, self.rows, self.attempts = pairs, rows, attempts
        self.submitted_at, self.finished_at = times

    def results(self, outcomes: bool) -> Iterator[Any]:
        if self.rows is not None:
            for row in self.rows:
                yield map_result(row, outcomes)
            return
        assert self.pairs is not None
        if not outcomes:  # the hot path of a chunked map
            for good, value in self.pairs:
                if not good:
                    raise remote_error(value)
                yield value
            return
        from dispatchkit.job import Outcome

        times = (self.submitted_at, None, self.finished_at)
        for seq, (good, value) in zip(self.seqs, self.pairs, strict=True):
            if good:
                yield Outcome.ended(seq, _SUCCEEDED, value, None, times, self.attempts)
            else:
                error = remote_error(value)
                yield Outcome.ended(seq, _FAILED, error, None, times, self.attempts)


@dataclass(slots=True)
class Waiting:
    """One published entry waiting for its outcome.

    Attributes:
        seqs: the sequence numbers of its jobs (the first is the entry's id).
        chunked: its outcome is a list of ``[ok, value]``, one per job.
        handle: the handle of a ``submit`` job.
        deliver: where the rows of a ``map`` entry go (the call's ``MapRun``,
            under the lock the ``map`` call waits with).
        block: a ``map`` entry admitted as one :class:`ChunkRows` block (it is
            delivered as one, however it ends).
        forget: no outcome is wanted: the entry ends once published.
    """

    seqs: Sequence[int]
    chunked: bool
    submitted_at: float
    handle: JobHandle[Any] | None = None
    deliver: Callable[[list[Any]], None] | None = None
    block: bool = False
    forget: bool = False

    @property
    def seq(self) -> int:
        return self.seqs[0]

    def settle(
        self, ok: bool, value: Any, attempts: int, count: Callable[[int, int, int], None]
    ) -> None:
        """End its jobs as the outcome says, first telling ``count(succeeded, failed, 0)``."""
        if ok and self.chunked and len(value) != len(self.seqs):
            ok, value = False, ["ValueError", f"{len(value)} results for {len(self.seqs)} jobs", ""]
        if ok and self.block and self.deliver is not None:
            # One C-speed pass counts the failures (ok flags are bools); the rest waits
            # for the yield.
            failed = len(value) - sum(map(itemgetter(0), value))
            count(len(value) - failed, failed, 0)  # counted before anyone sees them end
            now = perf_counter()
            self.deliver([ChunkRows(self.seqs, value, (self.submitted_at, now), attempts)])
            return
        if not ok:  # the entry failed whole (dead-lettered, lost, vanished)
            error = value if isinstance(value, BaseException) else remote_error(value)
            ends = [(_FAILED, error)] * len(self.seqs)
        elif self.chunked:
            ends = [(_SUCCEEDED, v) if good else (_FAILED, remote_error(v)) for good, v in value]
        else:
            ends = [(_SUCCEEDED, value)]
        failed = sum(1 for status, _ in ends if status is _FAILED)
        count(len(ends) - failed, failed, 0)  # counted before anyone sees them end
        self._end(ends, attempts)

    def cancel(self, why: str, count: Callable[[int, int, int], None]) -> None:
        """End its jobs cancelled (they may still run remotely), first counting them."""
        count(0, 0, len(self.seqs))
        self._end([(_CANCELLED, JobCancelled(why))] * len(self.seqs), 0)

    def _end(self, ends: list[tuple[JobStatus, Any]], attempts: int) -> None:
        now = perf_counter()
        if self.handle is not None:
            status, value = ends[0]
            if status is _CANCELLED:
                self.handle._cancel_taken()
            else:
                # The remote worker is known by name, not index: no worker, no start time.
                self.handle.settle(-1, status, value, None, now, attempts)
        elif self.deliver is not None:
            at = self.submitted_at
            rows = [
                ResultRow(seq, status, value, None, at, None, now, attempts)
                for seq, (status, value) in zip(self.seqs, ends, strict=True)
            ]
            if self.block:
                self.deliver([ChunkRows(self.seqs, None, (at, now), attempts, rows)])
            else:
                self.deliver(rows)
