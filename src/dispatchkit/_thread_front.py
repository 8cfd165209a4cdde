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
from functools import partial
from time import monotonic, perf_counter
from typing import TYPE_CHECKING, Any, Self, TypeVar

from ._lanes import Lanes, lane_count
from ._work import BulkChunk, Control, MapChunk, cancel_message, thread_map_run
from .core import FrontEnd, MapRun, MapWindow, WorkerState, map_result, shutdown_plan
from .core.adaptive import AdaptiveFeed
from .core.placement import jobs_of
from .errors import ClosedError, DispatchError, ForkedError
from .stats import DispatcherStats

if TYPE_CHECKING:
    from ._inbox import Inbox
    from .executors.base import WorkerPool

__all__ = ["ThreadFrontEnd"]

T = TypeVar("T")
R = TypeVar("R")

_live: weakref.WeakSet[ThreadFrontEnd] = weakref.WeakSet()


def _drain_at_exit() -> None:
    # Worker threads are daemons, so a forgotten dispatcher cannot hang the
    # interpreter; instead its queued jobs are drained here, as
    # ``concurrent.futures`` does for its executors.
    for dispatcher in list(_live):
        dispatcher.join()


# When the main thread ends, before the atexit hooks, as ``concurrent.futures`` does:
# multiprocessing's hook terminates daemonic worker processes (and the fork server),
# which would leave a process pool's drain nothing to run its jobs on.
getattr(threading, "_register_atexit", atexit.register)(_drain_at_exit)


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
        self._open_maps: weakref.WeakSet[_MapFeed] = weakref.WeakSet()
        self._pool.start()
        _live.add(self)

    def _bulk_maker(
        self, fn: Callable[[T], object], on_error: Callable[[T, BaseException], object] | None
    ) -> Callable[[Sequence[T]], list[Any]]:
        """How a part of fire-and-forget jobs becomes messages."""
        if self._chunk == 1 and self._control.retry is None:
            # The seed's one job per message: a bare tuple, run inline by the worker.
            return lambda jobs: [(fn, item, on_error) for item in jobs]
        return lambda jobs: [BulkChunk(fn, part, on_error) for part in self._chunked(jobs)]

    def _dispatch_paced(
        self,
        fn: Callable[[T], object],
        items: Iterable[T],
        key: Callable[[T], Hashable] | None,
        on_error: Callable[[T, BaseException], object] | None,
    ) -> int | None:
        """``dispatch`` with adaptive chunks; None (nothing taken) if its hand-off
        size does not adapt.

        Each block is cut when it is about to be needed, with what the chunks
        that ended have measured by then: the call sleeps while the shared queue
        holds enough, and a chunk's end wakes it (see
        :class:`~dispatchkit.core.adaptive.BulkRun`; the no-lost-wake-up
        handshake of ``thread_map_run``).
        """
        cond = threading.Condition()

        def notify() -> None:
            with cond:
                cond.notify()

        run = self._bulk_run(items, self._inboxes[0].__len__, notify)
        if run is None:
            return None

        def make(jobs: Sequence[Any]) -> list[Any]:
            return [BulkChunk(fn, part, on_error, run) for part in run.slices(jobs)]

        blocks: Iterator[tuple[Sequence[Any], int, list[Hashable] | None]]
        if type(items) is range and self._shared:
            # Slices of a range go to the shared queue as they are: no list made of them.
            blocks = self._range_blocks(items, key, run.limit, exact=True)  # type: ignore[arg-type]  # T is int
        else:
            blocks = self._numbered_blocks(items, key, run.limit, exact=True)
        dispatched = 0
        for block, first, keys in blocks:
            parts: Sequence[tuple[int, Sequence[Any]]]
            parts = [(0, block)] if type(block) is range else self._parts(block, first, keys)
            self._place(block, parts, make)
            dispatched += len(block)
            while not run.wants_more():
                self._wake_all()  # placing wakes lazily
                with cond:
                    run.waiting = True
                    try:
                        if run.may_sleep():
                            cond.wait()
                    finally:
                        run.waiting = False
        self._wake_all()
        return dispatched

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
        """The results of one map call; ``deadline`` (a ``monotonic()`` reading):
        raise TimeoutError when a result is still awaited then; ``chunk``: jobs
        per hand-off.

        The call is registered and its first window placed at once (not at
        the first ``next``): closing the dispatcher feeds an open map's
        remaining input to the workers, so that ``with pool: results =
        pool.map(...)`` and iterating after the block works, as with
        ``concurrent.futures`` (whose map submits everything at the call).
        """
        adaptive = self._adaptive_feed(items, self._inboxes[0].__len__, chunk)
        run, wait = thread_map_run(outcomes, adaptive)
        cut = partial(self._chunked, chunk=chunk) if adaptive is None else adaptive.cut
        lanes = Lanes(lane_count(self._n)) if self._keeps_key_order(key) else None

        def place(taken: tuple[list[Any], int, list[Hashable] | None]) -> None:
            block, first, keys = taken
            now = perf_counter()
            window.admit(first, len(block))
            if lanes is not None and keys is not None:
                size = adaptive.take(len(block)) if adaptive is not None else chunk or self._chunk
                self._place(
                    block,
                    [(0, list(range(first, first + len(block))))],
                    lambda seqs: [
                        lanes.wrap(
                            piece,
                            MapChunk(run, fn, [block[s - first] for s in piece], piece, star, now),
                        )
                        for piece in lanes.pieces(seqs, keys, size)
                    ],
                )
                return
            self._place(
                block,
                self._parts(range(first, first + len(block)), first, keys),
                lambda seqs: [
                    # Its seqs as a list (a worker reads them by index, which is slower
                    # on a range), its jobs one slice of the block where consecutive.
                    MapChunk(run, fn, jobs_of(block, first, piece), list(piece), star, now)
                    for piece in cut(seqs)
                ],
            )

        feed = _MapFeed(window, place, adaptive)
        feed.blocks = self._numbered_blocks(items, key, limit=feed.limit)
        self._open_maps.add(feed)
        # The first window is placed at the call, as the stdlib submits at the
        # call: the jobs run while the caller does something else, and a
        # ``timeout`` counted from the call finds the results that came in.
        try:
            feed.fill()
        except BaseException:
            self._open_maps.discard(feed)
            raise
        self._wake_all()  # placing wakes lazily
        return self._map_results(feed, run, wait, outcomes, deadline)

    def _map_results(
        self,
        feed: _MapFeed,
        run: MapRun,
        wait: Callable[[float | None], None],
        outcomes: bool,
        deadline: float | None,
    ) -> Iterator[Any]:
        """The map loop: keep the window full, yield what may be yielded.

        Raises:
            TimeoutError: past ``deadline`` with the next result not in.
        """
        window = feed.window
        try:
            while True:
                feed.fill()
                if window.in_flight == 0 and feed.exhausted:
                    return
                # Take what has finished, waiting if nothing has.
                if not run.finished:
                    self._wake_all()
                    if deadline is None:
                        wait(None)
                    else:
                        remaining = deadline - monotonic()
                        if remaining <= 0:
                            raise TimeoutError(
                                f"{window.in_flight} map results not in by the deadline"
                            )
                        wait(remaining)
                while run.finished:
                    with feed.lock:
                        rows = window.release(run.finished.popleft())
                    # Popped, not iterated: once yielded, a result is the
                    # caller's alone (the stdlib's map keeps no reference either).
                    rows.reverse()
                    while rows:
                        yield map_result(rows.pop(), outcomes)
        finally:
            self._open_maps.discard(feed)

    def _feed_open_maps(self) -> None:
        """Place the rest of every open map's input (closing: no later chance).

        What placing raises (the input's own error, QueueFull) is kept for the
        map's iterator to raise, once the results placed before are taken.
        """
        for feed in list(self._open_maps):
            try:
                feed.fill(to_the_end=True)
            except Exception as exc:
                feed.error = exc

    def _check_bulk(self, key: Callable[[Any], Hashable] | None) -> None:
        if self._closed:
            raise self._refusal()
        self._check_key(key)

    def _place(
        self,
        block: Sequence[Any],
        parts: Sequence[tuple[int, Sequence[Any]]],
        make: Callable[[Any], list[Any]],
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
        """Take no more jobs; the workers finish what is queued. Idempotent.

        A ``map`` still open has the rest of its input placed first (this
        waits for room in the inboxes), so its results can still be taken.
        """
        if not self._closed:
            try:
                self._feed_open_maps()
            finally:
                self._close()

    def _close(self) -> None:
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
        says how many were dropped). An open ``map`` gets no more of its input.
        """
        self._close()
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


class _MapFeed:
    """The input side of one ``map`` call: blocks placed while its window has room,
    or all of them when the dispatcher closes. ``lock`` keeps the placing thread
    and the iterating one (they differ when another thread closes) apart on the window.
    """

    __slots__ = (
        "__weakref__", "adaptive", "blocks", "error", "exhausted", "lock", "place",
        "to_the_end", "window",
    )  # fmt: skip

    def __init__(
        self,
        window: MapWindow,
        place: Callable[[tuple[list[Any], int, list[Hashable] | None]], None],
        adaptive: AdaptiveFeed | None = None,
    ) -> None:
        self.window = window
        self.place = place
        #: Adaptive chunking paces the input: a block is placed when it is needed.
        self.adaptive = adaptive
        self.lock = threading.Lock()
        self.exhausted = False
        self.to_the_end = False
        self.error: Exception | None = None
        self.blocks: Iterator[tuple[list[Any], int, list[Hashable] | None]] = iter(())

    def limit(self) -> int:
        """Most jobs the next block may hold."""
        room = 1 << 16 if self.to_the_end else self.window.room()
        return room if self.adaptive is None else self.adaptive.block_limit(room)

    def _wants_more(self) -> bool:
        if self.to_the_end:
            return True
        if self.window.room() <= 0:
            return False
        return self.adaptive is None or self.adaptive.wants_more(self.window.in_flight)

    def fill(self, to_the_end: bool = False) -> None:
        """Place blocks while the window has room (all that is left, ``to_the_end``).

        Raises:
            BaseException: whatever placing raises (ClosedError, QueueFull, ...).
        """
        with self.lock:
            if self.error is not None:
                if self.window.in_flight == 0:
                    raise self.error
                return
            if to_the_end:
                self.to_the_end = True
            while not self.exhausted and self._wants_more():
                taken = next(self.blocks, None)
                if taken is None:
                    self.exhausted = True
                    return
                self.place(taken)
