"""What comes back from remote workers: outcomes as local values and errors, and the counts.

Every published entry has a :class:`Waiting` record until its outcome comes:
a job of ``submit`` settles its handle, the jobs of a ``map`` entry (one, or a
chunk of them) become :class:`~dispatchkit.core.ResultRow` rows delivered to
the call's :class:`~dispatchkit.core.MapRun`, and a ``dispatch`` entry is only
counted. An entry's id is the sequence number of its first job.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from time import perf_counter
from typing import Any

from dispatchkit.core import JobStatus, ResultRow
from dispatchkit.errors import (
    JobCancelled,
    RemoteJobError,
    RemoteTraceback,
    TimedOut,
    WorkerLost,
)
from dispatchkit.job import JobHandle
from dispatchkit.stats import DispatcherStats

__all__ = ["RemoteStats", "Waiting", "remote_error"]

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
    """

    published: int
    duplicates: int


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


@dataclass(slots=True)
class Waiting:
    """One published entry waiting for its outcome.

    Attributes:
        seqs: the sequence numbers of its jobs (the first is the entry's id).
        chunked: its outcome is a list of ``[ok, value]``, one per job.
        handle: the handle of a ``submit`` job.
        deliver: where the rows of a ``map`` entry go (the call's ``MapRun``,
            under the lock the ``map`` call waits with).
    """

    seqs: list[int]
    chunked: bool
    submitted_at: float
    handle: JobHandle[Any] | None = None
    deliver: Callable[[list[ResultRow]], None] | None = None

    @property
    def seq(self) -> int:
        return self.seqs[0]

    def settle(
        self, ok: bool, value: Any, attempts: int, count: Callable[[int, int, int], None]
    ) -> None:
        """End its jobs as the outcome says, first telling ``count(succeeded, failed, 0)``."""
        if ok and self.chunked and self.deliver is not None:
            self._deliver_chunk(value, attempts, count)
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

    def _deliver_chunk(
        self, value: Any, attempts: int, count: Callable[[int, int, int], None]
    ) -> None:
        """The rows of a chunk of ``map``, in one pass: the hot path of a chunked map.

        Rows are plain tuples in :class:`~dispatchkit.core.ResultRow`'s field
        order (as the local chunk loops build them): a NamedTuple per job costs
        more than the job's own round trip here.
        """
        assert self.deliver is not None
        now, at = perf_counter(), self.submitted_at
        rows: list[Any] = []
        append = rows.append
        failed = 0
        for seq, (good, result) in zip(self.seqs, value, strict=True):
            if good:
                append((seq, _SUCCEEDED, result, None, at, None, now, attempts))
            else:
                failed += 1
                append((seq, _FAILED, remote_error(result), None, at, None, now, attempts))
        count(len(rows) - failed, failed, 0)  # counted before anyone sees them end
        self.deliver(rows)

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
                self.handle._complete(-1, status, value, None, now, attempts)
        elif self.deliver is not None:
            at = self.submitted_at
            self.deliver(
                [
                    ResultRow(seq, status, value, None, at, None, now, attempts)
                    for seq, (status, value) in zip(self.seqs, ends, strict=True)
                ]
            )
