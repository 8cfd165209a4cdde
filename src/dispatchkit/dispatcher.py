"""The Dispatcher: a strategy, N workers with bounded inboxes, and an honest count.

    submit/map/dispatch ──strategy──▶ Inbox[0..N-1] (or one shared Inbox for pull)
                                          │
                                   worker threads ──▶ handles / map results / counters

The submitting thread does the dispatching itself: no dispatcher thread sits
between it and the inboxes, which saves a hand-off per job.

Every job gets a sequence number when it is accepted. ``submitted`` counts
them; each ends as succeeded or failed (counted by the worker that ran it) or
cancelled (counted by whoever took it off a queue): after ``join`` or ``stop``,
submitted = succeeded + failed + cancelled.
"""

from __future__ import annotations

import atexit
import os
import threading
import weakref
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from itertools import islice
from time import perf_counter
from types import TracebackType
from typing import Any, Literal, TypeVar, overload

from ._inbox import Inbox
from ._work import BulkChunk, Control, MapChunk, Message, cancel_message, thread_map_run
from .core import MapWindow, Placement, WorkerState, check_window, map_result
from .errors import ClosedError, DispatchError, ForkedError
from .executors.base import WorkerPool
from .executors.process import ProcessOptions
from .executors.registry import worker_kind
from .job import Job, JobHandle, Outcome, PolicyHandle
from .retry import RetryPolicy
from .settings import Settings
from .stats import DispatcherStats
from .strategies import Strategy

__all__ = ["Dispatcher"]

T = TypeVar("T")
R = TypeVar("R")

_live: weakref.WeakSet[Dispatcher] = weakref.WeakSet()


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


class Dispatcher(Placement):
    """Dispatches jobs to a pool of thread workers with a chosen strategy.

    Args:
        workers: number of workers (default: the CPU count).
        strategy: ``"round_robin"``, ``"batch"``, ``"pull"``, ``"key"`` or a
            :class:`~dispatchkit.strategies.Strategy`.
        chunk: jobs per hand-off for ``map`` and ``dispatch``.
        queue_size: jobs one worker's inbox holds before submitting waits.
        block: block size of the ``batch`` strategy.
        put_timeout: seconds a submit waits for room before raising ``QueueFull``
            (None: wait as long as it takes).
        settings: a ready :class:`Settings` instead of the arguments above.
        name: prefix of the worker threads' names.

    Raises:
        ValueError, TypeError: an invalid setting, with a message naming it.

    Use it as a context manager: leaving the block closes the dispatcher and
    waits for the queued jobs (or cancels them, if the block raised).
    """

    def __init__(
        self,
        workers: int | None = None,
        *,
        strategy: str | Strategy | None = None,
        chunk: int | None = None,
        queue_size: int | None = None,
        block: int | None = None,
        put_timeout: float | None = None,
        executor: str | None = None,
        job_timeout: float | None = None,
        retry: RetryPolicy | None = None,
        start_method: str | None = None,
        initializer: Callable[..., object] | None = None,
        initargs: tuple[Any, ...] = (),
        max_jobs_per_worker: int | None = None,
        settings: Settings | None = None,
        name: str = "dispatchkit",
    ) -> None:
        settings = Settings.merged(
            settings,
            workers=workers,
            strategy=strategy,
            chunk=chunk,
            queue_size=queue_size,
            block=block,
            put_timeout=put_timeout,
            executor=executor,
            job_timeout=job_timeout,
        )
        self.settings = settings
        self._open_ledger(threading.Lock())
        self._open_placement(settings)
        self._put_timeout = settings.put_timeout
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise TypeError(f"retry must be a RetryPolicy, not {type(retry).__name__}")
        kind = worker_kind(settings.executor, front_end="Dispatcher")
        options: ProcessOptions | None = None
        if not kind.in_process:
            options = ProcessOptions(
                start_method=start_method or "forkserver",
                initializer=initializer,
                initargs=initargs,
                max_jobs_per_worker=max_jobs_per_worker,
                job_timeout=settings.job_timeout,
            )
        else:
            process_only = {
                "start_method": start_method,
                "initializer": initializer,
                "initargs": initargs or None,
                "max_jobs_per_worker": max_jobs_per_worker,
            }
            given = [k for k, v in process_only.items() if v is not None]
            if given:
                raise ValueError(f"{', '.join(given)} need executor='process'")
        self._kind = kind
        self._control = Control(retry)
        # Plain handles skip the retry machinery; a dispatcher with a policy
        # gives every job a PolicyHandle.
        self._handle_class: type[JobHandle[Any]] = PolicyHandle if retry else JobHandle
        self._states = [WorkerState(i, self._control) for i in range(self._n)]
        self._inboxes: list[Inbox[Message]] = [Inbox(c) for c in self._queue_capacities()]
        worker_inboxes = self._inboxes * self._n if self._shared else self._inboxes
        self._closed = False
        self._pid = os.getpid()  # a copy in a forked child refuses work
        # Worker index of a submitted job; SHARED (-1) indexes the one shared inbox.
        self._assign = self._strategy.assign
        self.started_at = perf_counter()
        self._pool: WorkerPool = kind.pool_class()(worker_inboxes, self._states, name, options)
        self._pool.start()
        _live.add(self)

    @classmethod
    def from_env(cls, **overrides: Any) -> Dispatcher:
        """A dispatcher set up from ``DISPATCHKIT_*`` environment variables.

        Arguments that are not None override the environment.
        """
        name = overrides.pop("name", "dispatchkit")
        return cls(settings=Settings.from_env(**overrides), name=name)

    # -- properties ----------------------------------------------------------

    @property
    def workers(self) -> int:
        return self._n

    @property
    def strategy(self) -> Strategy:
        return self._strategy

    @property
    def closed(self) -> bool:
        return self._closed

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return (
            f"<Dispatcher {state} workers={self._n} strategy={self._strategy.name} "
            f"chunk={self._chunk}>"
        )

    # -- submitting ----------------------------------------------------------

    def submit(self, fn: Callable[..., R], /, *args: Any, **kwargs: Any) -> JobHandle[R]:
        """Submit ``fn(*args, **kwargs)`` and return its handle at once.

        Waits while the chosen worker's inbox is full (up to ``put_timeout``).

        Raises:
            ClosedError: the dispatcher is closed.
            ForkedError: this is a copy made by ``os.fork()``.
            QueueFull: the inbox stayed full past ``put_timeout``.
            ValueError: the strategy is ``key`` (use :meth:`submit_job` with a key).
        """
        # The hot path of the per-job API: kept to one Python call beyond the
        # handle itself (see benchmarks/seed.py).
        if self._closed:
            raise self._refusal()
        if self._needs_key:
            raise ValueError(
                "the key strategy needs a key for every job: use submit_job(Job(fn, args, key=...))"
            )
        with self._lock:
            seq = self._next_seq
            self._next_seq = seq + 1
        inbox = self._inboxes[self._assign(seq, None, self._n)]
        handle = self._handle_class(seq, fn, args, kwargs, None, inbox)
        try:
            inbox.put(handle, self._put_timeout)
        except BaseException:
            self._reject(1)
            raise
        return handle

    def submit_job(self, job: Job[R], *, timeout: float | None = None) -> JobHandle[R]:
        """Submit a :class:`Job`, which may carry a key and a name.

        Args:
            job: the job.
            timeout: seconds to wait for room in a full inbox (default: the
                dispatcher's ``put_timeout``).

        Raises:
            ClosedError: the dispatcher is closed.
            ForkedError: this is a copy made by ``os.fork()``.
            QueueFull: the inbox stayed full past the timeout.
            ValueError: the ``key`` strategy and a job without a key.
            TypeError: a key that is not an int, str or bytes.
        """
        if self._closed:
            raise self._refusal()
        if job.key is None and self._needs_key:
            raise ValueError("the key strategy needs a key for every job: Job(..., key=...)")
        if job.timeout is not None and not self._kind.stops_running_jobs:
            raise ValueError(
                "a job timeout needs process workers: a running thread cannot be stopped"
            )
        with self._lock:
            seq = self._next_seq
            self._next_seq = seq + 1
        try:
            inbox = self._inboxes[self._assign(seq, job.key, self._n)]
            handle: JobHandle[R]
            if job.retry is not None or job.timeout is not None or self._control.retry:
                handle = PolicyHandle(
                    seq, job.fn, job.args, job.kwargs, job.name, inbox, job.retry, job.timeout
                )
            else:
                handle = JobHandle(seq, job.fn, job.args, job.kwargs, job.name, inbox)
            inbox.put(handle, self._put_timeout if timeout is None else timeout)
        except BaseException:
            self._reject(1)
            raise
        return handle

    def dispatch(
        self,
        fn: Callable[[T], object],
        items: Iterable[T],
        *,
        key: Callable[[T], Hashable] | None = None,
        on_error: Callable[[T, BaseException], object] | None = None,
    ) -> int:
        """Run ``fn(item)`` for every item, fire and forget: the bulk path.

        No per-job object is kept: values are dropped, successes and failures
        counted (see :meth:`stats`); ``on_error(item, exc)`` is called, in the
        worker, for each failure. ``items`` is consumed lazily, ``chunk`` jobs per
        hand-off, waiting whenever inboxes are full. Returns the number of jobs
        dispatched; :meth:`join` waits for them.

        Raises:
            ClosedError: the dispatcher is closed.
            ForkedError: this is a copy made by ``os.fork()``.
            ValueError: the ``key`` strategy without a ``key`` function.
            QueueFull: an inbox stayed full past ``put_timeout`` (jobs dispatched
                before stay dispatched and counted).
        """
        self._check_bulk(key)
        make = self._bulk_maker(fn, on_error)
        dispatched = 0
        for block, first, keys in self._blocks(items, key):
            self._place(block, self._parts(block, first, keys), make)
            dispatched += len(block)
        self._wake_all()
        return dispatched

    def _bulk_maker(
        self, fn: Callable[[T], object], on_error: Callable[[T, BaseException], object] | None
    ) -> Callable[[list[T]], list[Any]]:
        """How a part of fire-and-forget jobs becomes messages."""
        if self._chunk == 1 and self._control.retry is None:
            # The seed's one job per message: a bare tuple, run inline by the worker.
            return lambda jobs: [(fn, item, on_error) for item in jobs]
        return lambda jobs: [BulkChunk(fn, part, on_error) for part in self._chunked(jobs)]

    def offer(
        self,
        fn: Callable[[T], object],
        items: Sequence[T],
        *,
        key: Callable[[T], Hashable] | None = None,
        on_error: Callable[[T, BaseException], object] | None = None,
        wake: bool = True,
    ) -> bool:
        """Queue ``fn(item)`` for every item at once, or for none: never waits.

        The non-blocking, all-or-nothing form of :meth:`dispatch`, for callers
        that must not wait, such as an event loop. If an inbox lacks room for
        its share, nothing is queued or counted and False is returned. Jobs run
        and are counted as with :meth:`dispatch`.

        With ``wake=False`` a sleeping worker is woken only once a burst of
        jobs waits for it, which spares a thread switch per call; a later
        ``offer`` with ``wake=True`` (even of no items) wakes the workers for
        every job waiting.

        Raises:
            ClosedError: the dispatcher is closed.
            ForkedError: this is a copy made by ``os.fork()``.
            ValueError: the ``key`` strategy without a ``key`` function.
        """
        self._check_bulk(key)
        if not items:
            if wake:
                self._wake_all()
            return True
        keys = [key(item) for item in items] if key is not None else None
        with self._lock:  # offers are atomic against each other: no overshoot between them
            if self._closed:
                raise self._refusal()
            make = self._bulk_maker(fn, on_error)
            parts = self._plan_offer(items, keys, self._inboxes)
            if parts is None:
                return False
            for index, jobs in parts:
                self._inboxes[index].put_nowait_many(make(jobs), wake)
        return True

    @overload
    def map(
        self,
        fn: Callable[..., R],
        items: Iterable[Any],
        *,
        ordered: bool = ...,
        outcomes: Literal[False] = ...,
        star: bool = ...,
        key: Callable[[Any], Hashable] | None = ...,
        window: int | None = ...,
    ) -> Iterator[R]: ...

    @overload
    def map(
        self,
        fn: Callable[..., R],
        items: Iterable[Any],
        *,
        ordered: bool = ...,
        outcomes: Literal[True],
        star: bool = ...,
        key: Callable[[Any], Hashable] | None = ...,
        window: int | None = ...,
    ) -> Iterator[Outcome[R]]: ...

    def map(
        self,
        fn: Callable[..., R],
        items: Iterable[Any],
        *,
        ordered: bool = True,
        outcomes: bool = False,
        star: bool = False,
        key: Callable[[Any], Hashable] | None = None,
        window: int | None = None,
    ) -> Iterator[R] | Iterator[Outcome[R]]:
        """Run ``fn`` over ``items`` and yield the results as they are needed.

        ``items`` is consumed lazily: at most ``window`` jobs (default: what
        all inboxes hold) are in flight or waiting to be yielded, so memory stays
        bounded however long the input is.

        Args:
            fn: the job function, called as ``fn(item)`` (``fn(*item)`` with ``star``).
            items: the inputs.
            ordered: yield in input order (True) or as jobs finish (False).
            outcomes: yield an :class:`Outcome` per item instead of raising.
            star: unpack each item as positional arguments.
            key: for the ``key`` strategy, a function giving each item's key.
            window: most jobs in flight at once.

        Raises:
            ClosedError: the dispatcher is closed.
            ForkedError: this is a copy made by ``os.fork()``.
            ValueError: a bad ``window``, or the ``key`` strategy without ``key``.
            BaseException: without ``outcomes``, the exception of a failed job,
                raised when its result is reached (the remaining jobs go on).
        """
        self._check_bulk(key)
        default = max(self._n * self._queue_size, self._n * self._chunk)
        window = check_window(window, default)
        return self._map(fn, items, outcomes, star, key, MapWindow(window, ordered))

    def _map(
        self,
        fn: Callable[..., R],
        items: Iterable[Any],
        outcomes: bool,
        star: bool,
        key: Callable[[Any], Hashable] | None,
        window: MapWindow,
    ) -> Iterator[Any]:
        run, wait = thread_map_run(outcomes)
        blocks = self._blocks(items, key, limit=window.room)
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
                        for piece in self._chunked(seqs)
                    ],
                )
            if window.in_flight == 0:
                return
            # Take what has finished, waiting if nothing has.
            if not run.finished:
                self._wake_all()
                wait()
            while run.finished:
                for row in window.release(run.finished.popleft()):
                    yield map_result(row, outcomes)

    # -- bulk plumbing -------------------------------------------------------

    def _check_bulk(self, key: Callable[[Any], Hashable] | None) -> None:
        if self._closed:
            raise self._refusal()
        self._check_key(key)

    def _blocks(
        self,
        items: Iterable[T],
        key: Callable[[T], Hashable] | None,
        limit: Callable[[], int] | None = None,
    ) -> Iterator[tuple[list[T], int, list[Hashable] | None]]:
        """Take ``items`` a numbered block at a time (see ``Placement._block_size``)."""
        iterator = iter(items)
        while True:
            block = list(islice(iterator, self._block_size(None if limit is None else limit())))
            if not block:
                return
            if self._closed:
                raise self._refusal()
            yield self._stamp(block, key)

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

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """``concurrent.futures.Executor.shutdown``: close, cancel or wait."""
        if cancel_futures:
            self.stop(cancel=True, timeout=None if wait else 0)
        elif wait:
            self.join()
        else:
            self.close()

    def __enter__(self) -> Dispatcher:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.join()
        else:
            self.stop(cancel=True)

    # -- accounting ----------------------------------------------------------

    def stats(self) -> DispatcherStats:
        """A snapshot of the counters (exact once the dispatcher is joined)."""
        return self._ledger_stats(self._states, self.started_at, self._inboxes)

    def error_samples(self) -> list[tuple[Any, BaseException]]:
        """The latest failures of fire-and-forget jobs (up to 10), as ``(item, exception)``."""
        return list(self._control.error_samples)
