"""AsyncDispatcher: the same strategies and accounting, with asyncio tasks as workers.

    await submit / map / dispatch ──strategy──▶ AsyncInbox[0..N-1] (or one shared, for pull)
                                                      │
                                worker tasks (owned by a TaskGroup) ──▶ handles / results / counters

N may be thousands: a worker is a task looping over its inbox
(:mod:`dispatchkit.executors.asyncio`), running one job at a time. Coroutine
functions are awaited; plain callables are called in the event loop, or in a
thread with ``sync_in_thread=True``. Every task has an owner: the workers
live in a ``TaskGroup`` entered by ``async with``, so nothing is left pending
after the block, and a crash surfaces as an ``ExceptionGroup`` instead of
vanishing. Placement, numbering, the map window and the counts are the
sans-I/O core's (:mod:`dispatchkit.core`), as for :class:`~dispatchkit.Dispatcher`.
"""

from __future__ import annotations

import asyncio
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Hashable,
    Iterable,
    Sequence,
)
from time import perf_counter
from typing import Any, TypeVar, Unpack

from ._async_front import AsyncFrontEnd
from ._async_inbox import AsyncInbox
from ._async_work import StopSignal, is_coroutine_function
from ._durations import check_seconds
from .async_handle import AsyncJobHandle
from .core import WorkerState
from .executors.asyncio import AsyncWorkerPool
from .job import Job
from .retry import RetryPolicy
from .settings import DispatcherOptions, front_end_settings

__all__ = ["AsyncDispatcher", "AsyncJobHandle"]

T = TypeVar("T")
R = TypeVar("R")


class AsyncDispatcher(AsyncFrontEnd):
    """Dispatches coroutine jobs to N asyncio worker tasks with a chosen strategy.

    Use it only as ``async with AsyncDispatcher(...) as d:``; leaving the block
    waits for the queued jobs (or cancels them, queued and running, if the
    block raised).

    Args:
        workers: number of worker tasks (may be thousands).
        options: ``strategy``, ``chunk``, ``queue_size``, ``block``,
            ``put_timeout``, ``steal``, ``settings``: as for :class:`Dispatcher`;
            ``job_timeout``: seconds any one job may run before it is reported
            ``TimedOut``: a coroutine is cancelled; a plain function in a thread
            (``sync_in_thread``) is abandoned, its thread running on to the end
            (a thread cannot be stopped). A plain function on the event loop
            cannot be stopped at all: submitting one with a timeout raises
            ``ValueError``.
        retry: the retry policy for jobs that have none of their own.
        sync_in_thread: run plain (non-coroutine) callables in a thread
            (``asyncio.to_thread``) instead of in the event loop.

    Whatever a job raises fails that job alone, ``KeyboardInterrupt`` and
    ``SystemExit`` included, and so does a cancellation of its worker task
    that is not a stop (the job cancelling its own task).

    Raises:
        ValueError, TypeError: an invalid setting.
    """

    def __init__(
        self,
        workers: int | None = None,
        *,
        retry: RetryPolicy | None = None,
        sync_in_thread: bool = False,
        **options: Unpack[DispatcherOptions],
    ) -> None:
        # Not a setting here: Settings refuses a timeout to threads, which cannot
        # be stopped, but a task can be.
        job_timeout = options.pop("job_timeout", None)
        self.settings = front_end_settings("AsyncDispatcher", workers, options)
        if job_timeout is not None:
            check_seconds("job_timeout", job_timeout)
        self._open_front_end(self.settings, retry)
        self._job_timeout = job_timeout
        self._sync_in_thread = sync_in_thread
        self._inboxes: list[AsyncInbox[Any]] = [AsyncInbox(c) for c in self._queue_capacities()]
        self._stop = StopSignal()
        self._states = [WorkerState(i, self._stop) for i in range(self._n)]
        self._pool = AsyncWorkerPool(
            self._inboxes * self._n if self._shared else self._inboxes,
            self._states,
            steal=self.settings.stealing,
        )
        self._last_maker: tuple[Any, Any, Callable[[Sequence[Any], Sequence[int]], Any]] | None = (
            None
        )
        self._group = None
        self.started_at = perf_counter()

    async def submit(
        self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any
    ) -> AsyncJobHandle[Any]:
        """Submit ``fn(*args, **kwargs)``; waits only while the inbox is full.

        Raises:
            ClosedError: the dispatcher is closed.
            QueueFull: the inbox stayed full past ``put_timeout``.
            ValueError: the strategy is ``key`` (use :meth:`submit_job`).
        """
        return await self.submit_job(Job(fn, args, kwargs))

    async def submit_job(
        self, job: Job[Any], *, timeout: float | None = None
    ) -> AsyncJobHandle[Any]:
        """Submit a :class:`Job` (which may carry a key, a name, a timeout, a retry policy).

        Raises:
            ClosedError: the dispatcher is closed.
            QueueFull: the inbox stayed full past the timeout.
            ValueError: the ``key`` strategy and a job without a key; a timeout
                for a plain function on the event loop.
        """
        self._check_open()
        if job.key is None and self._needs_key:
            raise ValueError("the key strategy needs a key for every job: Job(..., key=...)")
        fn, args, kwargs = job.fn, job.args, job.kwargs
        self._refuse_unstoppable(fn, job.timeout or self._job_timeout)
        call: Callable[[], Awaitable[Any]]
        if is_coroutine_function(fn):
            call = lambda: fn(*args, **kwargs)  # noqa: E731
        elif self._sync_in_thread:
            call = lambda: asyncio.to_thread(fn, *args, **kwargs)  # noqa: E731
        else:
            caller = self._caller(lambda _: fn(*args, **kwargs))
            call = lambda: caller(None)  # noqa: E731
        seq = self._take_seqs(1)
        inbox = self._inboxes[0 if self._shared else self._strategy.assign(seq, job.key, self._n)]
        handle: AsyncJobHandle[Any] = AsyncJobHandle(
            self,
            seq,
            call,
            job.name,
            job.retry or self._retry,
            job.timeout or self._job_timeout,
            inbox,
        )
        try:
            await inbox.put(handle, self.settings.put_timeout if timeout is None else timeout)
        except BaseException:
            self._reject(1)
            raise
        return handle

    async def dispatch(
        self,
        fn: Callable[[T], Any],
        items: Iterable[T] | AsyncIterable[T],
        *,
        key: Callable[[T], Hashable] | None = None,
        on_error: Callable[[T, BaseException], object] | None = None,
    ) -> int:
        """Run ``fn(item)`` for every item, fire and forget; returns the count dispatched.

        Under the ``auto`` strategy with ``chunk="auto"`` the hand-offs are sized
        from measured job times, and the input is taken as the shared queue runs short.

        Raises:
            ClosedError: the dispatcher is closed.
            ValueError: the ``key`` strategy without ``key``; ``job_timeout`` with
                a plain function on the event loop.
        """
        self._check_open()
        self._check_key(key)
        paced = await self._dispatch_paced(fn, items, key, on_error)
        if paced is not None:
            return paced
        make = self._fire_and_forget(fn, on_error)
        count = 0
        async for block, first, keys in self._blocks(items, key, None):
            await self._place(block, first, keys, make)
            count += len(block)
        return count

    def offer(
        self,
        fn: Callable[[T], Any],
        items: Sequence[T],
        *,
        key: Callable[[T], Hashable] | None = None,
        on_error: Callable[[T, BaseException], object] | None = None,
    ) -> bool:
        """Queue ``fn(item)`` for every item at once, or for none: never waits.

        The non-blocking, all-or-nothing form of :meth:`dispatch`, for code on
        the event loop that must answer at once (an HTTP handler). If an inbox
        lacks room for its share, nothing is queued or counted and False is
        returned. Jobs run and are counted as with :meth:`dispatch`.

        Raises:
            ClosedError: the dispatcher is closed.
            RuntimeError: used outside ``async with``.
            ValueError: the ``key`` strategy without a ``key`` function;
                ``job_timeout`` with a plain function on the event loop.
        """
        if self._closed or self._group is None:
            self._check_open()
        if key is None:
            self._check_key(key)
        if not items:
            return True
        keys = [key(item) for item in items] if key is not None else None
        make = self._fire_and_forget(fn, on_error)  # may refuse fn: before any numbering
        parts = self._plan_offer(items, keys, self._inboxes)
        if parts is None:
            return False
        for index, jobs in parts:
            self._inboxes[index].put_many_nowait([make(part, []) for part in self._chunked(jobs)])
        return True

    def map(
        self,
        fn: Callable[..., Any],
        items: Iterable[Any] | AsyncIterable[Any],
        *,
        ordered: bool = True,
        outcomes: bool = False,
        star: bool = False,
        key: Callable[[Any], Hashable] | None = None,
        window: int | None = None,
    ) -> AsyncIterator[Any]:
        """Run ``fn`` over ``items``; an async iterator of results (or :class:`Outcome` s).

        The same contract as ``Dispatcher.map``: at most ``window`` jobs in
        flight, errors raised at the failing item unless ``outcomes``.

        Raises:
            ClosedError: the dispatcher is closed.
            ValueError: a bad ``window``; the ``key`` strategy without ``key``;
                ``job_timeout`` with a plain function on the event loop.
        """
        self._check_open()
        self._check_key(key)
        self._refuse_unstoppable(fn, self._job_timeout)
        return self._map(fn, items, outcomes, star, key, self._map_window(window, ordered))
