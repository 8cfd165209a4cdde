"""The blocking half of :class:`~dispatchkit.Dispatcher`: how a thread waits on the core.

    map/dispatch ──blocks──▶ Placement parts ──put_many (waits for room)──▶ Inbox[i]
    map ◀── MapRun rows (a condition wakes the caller) ◀── workers

The sans-I/O core numbers blocks and splits them into parts; this module puts
the parts into the inboxes, blocking while they are full, and waits for map
results. It also keeps the process-wide list of live dispatchers, drained at
exit and refused in a child made by ``os.fork()``.
"""

from __future__ import annotations

import atexit
import os
import threading
import weakref
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from time import monotonic, perf_counter
from typing import TYPE_CHECKING, Any, Self, TypeVar

from ._work import BulkChunk, Control, MapChunk, cancel_message, thread_map_run
from .core import FrontEnd, MapWindow, WorkerState, map_result, shutdown_plan
from .errors import ClosedError, DispatchError, ForkedError
from .stats import DispatcherStats

if TYPE_CHECKING:
    from ._inbox import Inbox
    from .executors.base import WorkerPool

__all__ = ["ThreadFrontEnd"]

T = TypeVar("T")
R = TypeVar("R")

_live: weakref.WeakSet[ThreadFrontEnd] = weakref.WeakSet()


@atexit.register
def _drain_at_exit() -> None:
    # Worker threads are daemons, so a forgotten dispatcher cannot hang the
    # interpreter; instead its queued jobs are drained here, as
    # ``concurrent.futures`` does for its executors.
    for dispatcher in list(_live):
        dispatcher.join()


def _refuse_work_after_fork() -> None:
    # os.fork() copies every dispatcher but none of its worker threads, and its
    # worker processes stay the parent's: in the child each copy refuses work
    # (ForkedError) instead of queueing jobs that never run, and is not drained
    # at exit. Its lock is new: another thread may have held it during the fork.
    for dispatcher in list(_live):
        dispatcher._lock = threading.Lock()
        dispatcher._closed = True
    _live.clear()


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_refuse_work_after_fork)


class ThreadFrontEnd(FrontEnd):
    """Blocking placement, the map loop and the lifecycle plumbing of a thread front end."""

    _inboxes: list[Inbox[Any]]
    _control: Control
    _put_timeout: float | None
    _pid: int
    _pool: WorkerPool
    _states: list[WorkerState]
    started_at: float

    def _start(self) -> None:
        """Start the workers; from now on the dispatcher is drained at exit."""
        self._pool.start()
        _live.add(self)

    def _bulk_maker(
        self, fn: Callable[[T], object], on_error: Callable[[T, BaseException], object] | None
    ) -> Callable[[list[T]], list[Any]]:
        """How a part of fire-and-forget jobs becomes messages."""
        if self._chunk == 1 and self._control.retry is None:
            # The seed's one job per message: a bare tuple, run inline by the worker.
            return lambda jobs: [(fn, item, on_error) for item in jobs]
        return lambda jobs: [BulkChunk(fn, part, on_error) for part in self._chunked(jobs)]

    def _map(
        self,
        fn: Callable[..., R],
        items: Iterable[Any],
        outcomes: bool,
        star: bool,
        key: Callable[[Any], Hashable] | None,
        window: MapWindow,
        deadline: float | None = None,
        chunk: int | None = None,
    ) -> Iterator[Any]:
        """The map loop; ``deadline`` (a ``monotonic()`` reading): raise TimeoutError
        when a result is still awaited then; ``chunk``: jobs per hand-off.

        Raises:
            TimeoutError: past ``deadline`` with the next result not in.
        """
        run, wait = thread_map_run(outcomes)
        blocks = self._numbered_blocks(items, key, limit=window.room)
        exhausted = False
        while True:
            # Keep the window full.
            while not exhausted and window.room() > 0:
                taken = next(blocks, None)
                if taken is None:
                    exhausted = True
                    break
                block, first, keys = taken
                now = perf_counter()
                window.admit(first, len(block))
                self._place(
                    block,
                    self._parts(range(first, first + len(block)), first, keys),
                    lambda seqs, block=block, first=first, now=now: [  # type: ignore[misc]
                        MapChunk(run, fn, [block[s - first] for s in piece], piece, star, now)
                        for piece in self._chunked(seqs, chunk)
                    ],
                )
            if window.in_flight == 0:
                return
            # Take what has finished, waiting if nothing has.
            if not run.finished:
                self._wake_all()
                if deadline is None:
                    wait(None)
                else:
                    remaining = deadline - monotonic()
                    if remaining <= 0:
                        raise TimeoutError(f"{window.in_flight} map results not in by the deadline")
                    wait(remaining)
            while run.finished:
                for row in window.release(run.finished.popleft()):
                    yield map_result(row, outcomes)

    def _check_bulk(self, key: Callable[[Any], Hashable] | None) -> None:
        if self._closed:
            raise self._refusal()
        self._check_key(key)

    def _place(
        self,
        block: Sequence[Any],
        parts: list[tuple[int, list[Any]]],
        make: Callable[[list[Any]], list[Any]],
    ) -> None:
        """Hand each queue its part of a block, waking workers lazily.

        If a put fails (QueueFull, ClosedError, an interrupt), the jobs of the
        block not yet handed over were never accepted: they are uncounted.
        """
        placed = 0
        try:
            for index, jobs in parts:
                inbox = self._inboxes[index]
                if len(inbox) >= inbox.capacity:
                    self._wake_all()  # let every worker drain before we wait on one
                inbox.put_many(make(jobs), self._put_timeout, wake=False)
                placed += len(jobs)
        except BaseException:
            self._reject(len(block) - placed)
            raise

    def _refusal(self) -> DispatchError:
        """Why a closed dispatcher takes no job: closed, or a copy made by os.fork()."""
        if self._pid != os.getpid():
            return ForkedError(
                f"this Dispatcher was created in process {self._pid}; "
                "after os.fork() create a new one in the child"
            )
        return ClosedError("the dispatcher is closed: it takes no more jobs")

    def _wake_all(self) -> None:
        for inbox in self._inboxes:
            inbox.wake()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """``concurrent.futures.Executor.shutdown``: close, cancel or wait. Idempotent."""
        how, timeout = shutdown_plan(wait, cancel_futures)
        if how == "stop":
            self.stop(cancel=True, timeout=timeout)
        elif how == "join":
            self.join()
        else:
            self.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc_info: object) -> None:
        if exc_type is None:
            self.join()
        else:
            self.stop(cancel=True)

    # -- shutdown ------------------------------------------------------------

    def close(self) -> None:
        """Take no more jobs; the workers finish what is queued. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        for inbox in self._inboxes:
            inbox.close()

    def join(self, timeout: float | None = None) -> bool:
        """Close, then wait until every queued job has run and the workers exited.

        Returns False if workers still run after ``timeout`` seconds.
        """
        self.close()
        finished = self._pool.join(timeout)
        if finished:
            _live.discard(self)
        return finished

    def stop(self, cancel: bool = True, timeout: float | None = None) -> DispatcherStats:
        """Close and stop: with ``cancel``, queued jobs are cancelled, not run.

        Jobs already running finish; a bulk or map chunk being run is abandoned
        after its current job. Cancelled handles raise ``JobCancelled``. With
        process workers, jobs still running after ``timeout`` seconds are killed
        (they end as ``WorkerLost``). Returns the final stats (their ``cancelled``
        says how many were dropped).
        """
        self.close()
        if cancel:
            self._control.stopping = True
            self._control.stop_event.set()
            for inbox in self._inboxes:
                self._add_cancelled(sum(cancel_message(m) for m in inbox.take_all()))
        if not self.join(timeout) and self._pool.kill():
            # Past the deadline, a pool that can (worker processes) kills its
            # workers: the jobs they were running end as WorkerLost.
            self.join(10)
        return self.stats()

    # -- accounting ----------------------------------------------------------

    def stats(self) -> DispatcherStats:
        """A snapshot of the counters (exact once the dispatcher is joined)."""
        return self._ledger_stats(self._states, self.started_at, self._inboxes)

    def error_samples(self) -> list[tuple[Any, BaseException]]:
        """The latest failures of fire-and-forget jobs (up to 10), as ``(item, exception)``."""
        return list(self._control.error_samples)
