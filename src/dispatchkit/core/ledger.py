"""The ledger: sequence numbers and the count of how every job ended.

Every accepted job gets a sequence number; ``submitted`` is the numbers
handed out less the jobs refused after numbering (``rejected``). Each job ends
succeeded or failed (counted by the worker that ran it, in its
:class:`WorkerState`), or cancelled (by whoever took it off a queue). After a
join or a stop: submitted = succeeded + failed + cancelled.

Sans-I/O: the front end passes in the lock it needs (a ``threading.Lock`` for
the thread front end, a no-op for the event loop's, which never preempts).
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Protocol

from dispatchkit.stats import DispatcherStats, snapshot

from .status import JobStatus

__all__ = ["Ledger", "WorkerState"]


class WorkerState:
    """Counters of one worker. Only that worker writes them, so no lock is needed.

    ``control`` is what the front end shares with all its workers (the stop
    flag, the default retry policy); ``task`` is the asyncio task of an
    asyncio worker (what a job may cancel), None elsewhere.
    """

    __slots__ = (
        "active",
        "busy",
        "cancelled",
        "chunk",
        "chunk_failed",
        "chunk_size",
        "control",
        "failed",
        "first_start",
        "index",
        "succeeded",
        "task",
    )

    def __init__(self, index: int, control: Any) -> None:
        self.index = index
        self.control = control
        self.succeeded = 0
        self.failed = 0
        #: Jobs this worker had taken but abandoned on a stop.
        self.cancelled = 0
        #: Seconds spent running jobs.
        self.busy = 0.0
        #: ``perf_counter()`` when this worker started its first job.
        self.first_start: float | None = None
        self.task: Any = None
        #: Running a message now: set by the loops of dispatchers that steal, so
        #: that an idle worker takes jobs only from a busy one's inbox.
        self.active = False
        #: The iterator over the bulk chunk being run, if any, and ``failed`` when it
        #: began: a bulk chunk adds its successes once it ends, and meanwhile
        #: :meth:`live_succeeded` tells how far it is from how much of the iterator
        #: is used up (no counting per job in the hot loop).
        self.chunk: Iterator[Any] | None = None
        self.chunk_size = 0
        self.chunk_failed = 0

    def live_succeeded(self) -> int:
        """Jobs that returned, those of the bulk chunk being run included.

        Read from another thread: ``chunk`` is cleared before ``succeeded`` takes
        the chunk's count, so a reader never counts a job twice. The job taken
        last is taken as still running.
        """
        succeeded = self.succeeded
        chunk = self.chunk
        if chunk is None:
            return succeeded
        total, left = self.chunk_size, operator.length_hint(chunk)
        ran = total - left - 1 - (self.failed - self.chunk_failed)
        return succeeded + max(ran, 0)

    def count(self, status: JobStatus) -> None:
        """Count one job that ended so (the retry paths: hot loops count inline)."""
        if status is JobStatus.SUCCEEDED:
            self.succeeded += 1
        elif status is JobStatus.FAILED:
            self.failed += 1
        else:
            self.cancelled += 1


class _Queue(Protocol):
    #: Jobs cancelled while queued (by their handle's ``cancel``).
    cancelled: int


class Ledger:
    """Sequence numbers, rejections and cancellations of one front end.

    A base of the front ends: its fields are theirs, so the per-job paths read
    ``self._next_seq`` with no indirection.
    """

    _lock: AbstractContextManager[Any]
    _next_seq: int
    _rejected: int
    _cancelled: int

    def _open_ledger(self, lock: AbstractContextManager[Any] | None = None) -> None:
        self._lock = nullcontext() if lock is None else lock
        self._next_seq = 0
        self._rejected = 0
        self._cancelled = 0

    def _take_seqs(self, count: int) -> int:
        """Reserve ``count`` consecutive sequence numbers; returns the first."""
        with self._lock:
            first = self._next_seq
            self._next_seq = first + count
        return first

    def _reject(self, count: int) -> None:
        """``count`` numbered jobs were refused (a full queue, a close, an interrupt)."""
        with self._lock:
            self._rejected += count

    def _add_cancelled(self, count: int) -> None:
        """``count`` jobs were taken off a queue unrun."""
        with self._lock:
            self._cancelled += count

    def _ledger_stats(
        self, states: Iterable[WorkerState], started_at: float, queues: Sequence[_Queue]
    ) -> DispatcherStats:
        with self._lock:
            submitted = self._next_seq - self._rejected
            cancelled = self._cancelled + sum(queue.cancelled for queue in queues)
        return snapshot(states, started_at, submitted, cancelled)
