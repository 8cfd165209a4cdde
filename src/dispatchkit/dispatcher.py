"""The Dispatcher: a strategy, N workers with bounded inboxes, and an honest count.

    submit/map/dispatch ──strategy──▶ Inbox[0..N-1] (or one shared Inbox for pull)
                                          │
                                   worker threads ──▶ handles / map results / counters

The submitting thread does the dispatching itself: no dispatcher thread sits
between it and the inboxes, which saves a hand-off per job. ``map`` is
:mod:`dispatchkit._futures_map`'s; putting, the map loop and the lifecycle are
:mod:`dispatchkit._thread_front`'s.

Every job gets a sequence number when it is accepted. ``submitted`` counts
them; each ends as succeeded or failed (counted by the worker that ran it) or
cancelled (counted by whoever took it off a queue): after ``join`` or ``stop``,
submitted = succeeded + failed + cancelled.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from concurrent.futures import Executor
from time import perf_counter
from typing import Any, TypeVar, Unpack

from ._futures_map import FuturesMap
from ._inbox import Inbox
from ._work import Control, Message
from .core import WorkerState
from .executors.base import WorkerPool
from .executors.process import ProcessOptions
from .executors.registry import worker_kind
from .job import Job, JobHandle, PolicyHandle
from .retry import RetryPolicy
from .settings import DispatcherOptions, Settings, front_end_settings

__all__ = ["Dispatcher"]

T = TypeVar("T")
R = TypeVar("R")


class Dispatcher(FuturesMap, Executor):
    """Dispatches jobs to a pool of thread workers with a chosen strategy.

    Args:
        workers: number of workers (default: the CPU count).
        executor: where workers run, ``"thread"`` or ``"process"``.
        retry: the retry policy for jobs that have none of their own.
        start_method, initializer, initargs, max_jobs_per_worker: for process
            workers: how they start, what each runs first, how many jobs one
            runs before a new one replaces it.
        name: prefix of the worker threads' names.
        options: the settings (:class:`~dispatchkit.settings.DispatcherOptions`):
            ``strategy`` (``"auto"``, the default, ``"round_robin"``, ``"batch"``,
            ``"pull"``, ``"key"`` or a :class:`~dispatchkit.strategies.Strategy`),
            ``chunk`` (jobs per hand-off for ``map`` and ``dispatch``, or ``"auto"``:
            sized from measured job times by the ``auto`` strategy), ``queue_size`` (jobs
            one worker's inbox holds before submitting waits), ``block`` (of
            the ``batch`` strategy), ``put_timeout`` (seconds a submit waits
            for room before raising ``QueueFull``; None: as long as it takes),
            ``job_timeout`` (process workers), ``steal`` (default True: with
            ``round_robin`` or ``batch``, an idle worker takes queued jobs from a
            busy one; False keeps each job on its strategy's worker), or ``settings``, a ready
            :class:`Settings` that the others override.

    Raises:
        ValueError, TypeError: an invalid setting, with a message naming it.

    Use it as a context manager: leaving the block closes the dispatcher and
    waits for the queued jobs (or cancels them, if the block raised).
    """

    def __init__(
        self,
        workers: int | None = None,
        *,
        executor: str | None = None,
        retry: RetryPolicy | None = None,
        start_method: str | None = None,
        initializer: Callable[..., object] | None = None,
        initargs: tuple[Any, ...] = (),
        max_jobs_per_worker: int | None = None,
        name: str = "dispatchkit",
        **options: Unpack[DispatcherOptions],
    ) -> None:
        settings = front_end_settings("Dispatcher", workers, options, executor=executor)
        self._open_front_end(settings, retry, threading.Lock())
        self._put_timeout = settings.put_timeout
        kind = worker_kind(settings.executor, front_end="Dispatcher")
        process_options = ProcessOptions.given(
            not kind.in_process,
            start_method=start_method,
            initializer=initializer,
            initargs=initargs,
            max_jobs_per_worker=max_jobs_per_worker,
            job_timeout=settings.job_timeout,
        )
        self._kind = kind
        self._control = Control(retry)
        # Plain handles skip the retry machinery; a dispatcher with a policy
        # gives every job a PolicyHandle.
        self._handle_class: type[JobHandle[Any]] = PolicyHandle if retry else JobHandle
        self._states = [WorkerState(i, self._control) for i in range(self._n)]
        self._inboxes: list[Inbox[Message]] = [Inbox(c) for c in self._queue_capacities()]
        worker_inboxes = self._inboxes * self._n if self._shared else self._inboxes
        self._pid = os.getpid()  # a copy in a forked child refuses work
        # Worker index of a submitted job; SHARED (-1) indexes the one shared inbox.
        self._assign = self._strategy.assign
        self.started_at = perf_counter()
        self._pool: WorkerPool = kind.pool_class()(
            worker_inboxes, self._states, name, process_options, steal=settings.stealing
        )
        self._start()

    @classmethod
    def from_env(cls, **overrides: Any) -> Dispatcher:
        """A dispatcher set up from ``DISPATCHKIT_*`` environment variables.

        Arguments that are not None override the environment.
        """
        name = overrides.pop("name", "dispatchkit")
        return cls(settings=Settings.from_env(**overrides), name=name)

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
                    seq, job.fn, job.args, job.kwargs, job.name, inbox,
                    retry=job.retry, timeout=job.timeout,
                )  # fmt: skip
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
        hand-off, waiting whenever inboxes are full; under the ``auto`` strategy with
        ``chunk="auto"`` the hand-offs are sized from measured job times, and the
        input is taken only as the shared queue runs short. Returns the number of
        jobs dispatched; :meth:`join` waits for them.

        Raises:
            ClosedError: the dispatcher is closed.
            ForkedError: this is a copy made by ``os.fork()``.
            ValueError: the ``key`` strategy without a ``key`` function.
            QueueFull: an inbox stayed full past ``put_timeout`` (jobs dispatched
                before stay dispatched and counted).
        """
        self._check_bulk(key)
        paced = self._dispatch_paced(fn, items, key, on_error)
        if paced is not None:
            return paced
        make = self._bulk_maker(fn, on_error)
        dispatched = 0
        blocks: Iterator[tuple[Sequence[Any], int, list[Hashable] | None]]
        if type(items) is range:
            # Slices of a range stay ranges down to the chunks (those of pull and
            # round_robin): a worker process is sent a chunk's bounds, not its numbers.
            blocks = self._range_blocks(items, key, None, exact=False)  # type: ignore[arg-type]  # T is int
        else:
            blocks = self._numbered_blocks(items, key)
        for block, first, keys in blocks:
            self._place(block, self._parts(block, first, keys), make)
            dispatched += len(block)
        self._wake_all()
        return dispatched

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
