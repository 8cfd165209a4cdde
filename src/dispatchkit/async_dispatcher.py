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
from itertools import islice
from time import perf_counter
from types import TracebackType
from typing import Any, TypeVar

from ._async_inbox import AsyncInbox
from ._async_work import AsyncChunk, InlineChunk, StopSignal, awaiting, is_coroutine_function
from .async_handle import AsyncJobHandle
from .core import MapRun, MapWindow, Placement, WorkerState, check_window, map_result
from .errors import ClosedError
from .executors.asyncio import AsyncWorkerPool
from .job import Job
from .retry import RetryPolicy
from .settings import Settings
from .stats import DispatcherStats
from .strategies import Strategy

__all__ = ["AsyncDispatcher", "AsyncJobHandle"]

T = TypeVar("T")
R = TypeVar("R")


class AsyncDispatcher(Placement):
    """Dispatches coroutine jobs to N asyncio worker tasks with a chosen strategy.

    Use it only as ``async with AsyncDispatcher(...) as d:``; leaving the block
    waits for the queued jobs (or cancels them, queued and running, if the
    block raised).

    Args:
        workers: number of worker tasks (may be thousands).
        strategy, chunk, queue_size, block, put_timeout: as for :class:`Dispatcher`.
        job_timeout: seconds any one job may run before it is reported
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
        strategy: str | Strategy | None = None,
        chunk: int | None = None,
        queue_size: int | None = None,
        block: int | None = None,
        put_timeout: float | None = None,
        job_timeout: float | None = None,
        retry: RetryPolicy | None = None,
        sync_in_thread: bool = False,
        settings: Settings | None = None,
    ) -> None:
        self.settings = Settings.merged(
            settings,
            workers=workers,
            strategy=strategy,
            chunk=chunk,
            queue_size=queue_size,
            block=block,
            put_timeout=put_timeout,
        )
        if job_timeout is not None and not (
            isinstance(job_timeout, int | float)
            and not isinstance(job_timeout, bool)
            and job_timeout > 0
        ):
            raise ValueError(f"job_timeout must be a positive number, got {job_timeout!r}")
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise TypeError(f"retry must be a RetryPolicy, not {type(retry).__name__}")
        self._job_timeout = job_timeout
        self._retry = retry
        self._sync_in_thread = sync_in_thread
        self._open_ledger()
        self._open_placement(self.settings)
        self._inboxes: list[AsyncInbox[Any]] = [AsyncInbox(c) for c in self._queue_capacities()]
        self._stop = StopSignal()
        self._states = [WorkerState(i, self._stop) for i in range(self._n)]
        self._pool = AsyncWorkerPool(
            self._inboxes * self._n if self._shared else self._inboxes, self._states
        )
        self._last_maker: tuple[Any, Any, Callable[[list[Any], list[int]], Any]] | None = None
        self._closed = False
        self._group: asyncio.TaskGroup | None = None
        self.started_at = perf_counter()

    def workers(self) -> int:
        return self._n

    @property
    def strategy(self) -> Strategy:
        return self._strategy

    @property
    def closed(self) -> bool:
        return self._closed

    # -- lifecycle -----------------------------------------------------------

    # -- lifecycle -----------------------------------------------------------

    async def __aenter__(self) -> AsyncDispatcher:
        if self._group is not None:
            raise RuntimeError("an AsyncDispatcher can be entered only once")
        self._group = asyncio.TaskGroup()
        await self._group.__aenter__()
        self._stop.owner = asyncio.current_task()
        self.started_at = perf_counter()
        self._pool.start(self._group)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._group is not None
        if exc_type is None:
            self.close()
        else:
            self._cancel_everything()
        if exc_type is not None and not issubclass(exc_type, asyncio.CancelledError):
            # The block failed: the workers are cancelled above, and the
            # block's own exception propagates as it is, not wrapped in an
            # ExceptionGroup (a worker's crash still raises one).
            await self._group.__aexit__(None, None, None)
            return
        await self._group.__aexit__(exc_type, exc, tb)

    def close(self) -> None:
        """Take no more jobs; the workers finish what is queued. Idempotent."""
        self._closed = True
        for inbox in self._inboxes:
            inbox.close()

    async def join(self, timeout: float | None = None) -> bool:
        """Close, then wait until every queued job has run and the workers ended.

        Returns False if workers still run after ``timeout`` seconds.
        """
        self.close()
        return await self._pool.join(timeout)

    async def stop(self, cancel: bool = True, timeout: float | None = None) -> DispatcherStats:
        """Close; with ``cancel``, cancel queued *and running* jobs, then wait for the workers.

        Without ``cancel``, jobs still running after ``timeout`` seconds are
        cancelled then. Returns the final stats.
        """
        if cancel:
            self._cancel_everything()
        if not await self.join(timeout):
            self._cancel_everything()
            await self.join()
        return self.stats()

    async def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """``concurrent.futures.Executor.shutdown``, awaited: close, cancel or wait."""
        if cancel_futures:
            await self.stop(cancel=True, timeout=None if wait else 0)
        elif wait:
            await self.join()
        else:
            self.close()

    def _cancel_everything(self) -> None:
        self.close()
        self._stop.requested = True
        for inbox in self._inboxes:
            self._add_cancelled(sum(message._cancel_taken() for message in inbox.take_all()))
        self._pool.kill()

    # -- submitting ----------------------------------------------------------

    def _check_open(self) -> None:
        if self._group is None:
            raise RuntimeError("use the dispatcher inside 'async with AsyncDispatcher(...)'")
        if self._closed:
            raise ClosedError("the dispatcher is closed: it takes no more jobs")

    def _caller(
        self, fn: Callable[..., Any], star: bool = False
    ) -> Callable[[Any], Awaitable[Any]]:
        """Turn ``fn`` into ``item -> awaitable``, whatever kind of callable it is."""
        if is_coroutine_function(fn):
            return (lambda item: fn(*item)) if star else fn
        if self._sync_in_thread:
            if star:
                return lambda item: asyncio.to_thread(fn, *item)
            return lambda item: asyncio.to_thread(fn, item)

        return awaiting((lambda item: fn(*item)) if star else fn)

    def _refuse_unstoppable(self, fn: Callable[..., Any], timeout: float | None) -> None:
        """Refuse a timeout that could not be kept: a plain function on the event loop.

        A coroutine is cancelled at the timeout; a function in a thread
        (``sync_in_thread``) is abandoned there, its thread running on. A plain
        call on the event loop can be neither: the loop itself is held until
        it returns.

        Raises:
            ValueError: ``fn`` is a plain function, ``timeout`` is set and
                ``sync_in_thread`` is not.
        """
        if timeout is not None and not self._sync_in_thread and not is_coroutine_function(fn):
            name = getattr(fn, "__qualname__", None) or type(fn).__name__
            raise ValueError(
                f"a job timeout cannot stop the plain function {name} on the event loop: "
                "make it an async def, or pass sync_in_thread=True (where a timed-out "
                "job's thread runs on to its end)"
            )

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
        handle: AsyncJobHandle[Any] = AsyncJobHandle(
            self,
            seq,
            call,
            job.name,
            job.retry or self._retry,
            job.timeout or self._job_timeout,
        )
        inbox = self._inboxes[0 if self._shared else self._strategy.assign(seq, job.key, self._n)]
        handle._inbox = inbox
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

        Raises:
            ClosedError: the dispatcher is closed.
            ValueError: the ``key`` strategy without ``key``; ``job_timeout`` with
                a plain function on the event loop.
        """
        self._check_open()
        self._check_key(key)
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

    def _fire_and_forget(
        self,
        fn: Callable[[Any], Any],
        on_error: Callable[[Any, BaseException], object] | None,
    ) -> Callable[[list[Any], list[int]], AsyncChunk | InlineChunk]:
        """How to wrap jobs of ``fn`` whose results nobody wants: ``(jobs, seqs) -> message``."""
        cached = self._last_maker
        # A server offers the same function for every request: decide once.
        if cached is not None and cached[0] == fn and cached[1] is on_error:
            return cached[2]
        make = self._new_maker(fn, on_error)
        self._last_maker = (fn, on_error, make)
        return make

    def _new_maker(
        self,
        fn: Callable[[Any], Any],
        on_error: Callable[[Any, BaseException], object] | None,
    ) -> Callable[[list[Any], list[int]], AsyncChunk | InlineChunk]:
        self._refuse_unstoppable(fn, self._job_timeout)
        if (
            not is_coroutine_function(fn)
            and not self._sync_in_thread
            and self._retry is None
            and self._job_timeout is None
        ):
            return lambda jobs, seqs: InlineChunk(fn, jobs, on_error)
        call = self._caller(fn)
        return lambda jobs, seqs: AsyncChunk(
            call, jobs, seqs, None, self._retry, self._job_timeout, on_error
        )

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
        default = max(self._n * self._queue_size, self._n * self._chunk)
        return self._map(
            fn, items, outcomes, star, key, MapWindow(check_window(window, default), ordered)
        )

    async def _map(
        self,
        fn: Callable[..., Any],
        items: Iterable[Any] | AsyncIterable[Any],
        outcomes: bool,
        star: bool,
        key: Callable[[Any], Hashable] | None,
        window: MapWindow,
    ) -> AsyncIterator[Any]:
        call = self._caller(fn, star)
        event = asyncio.Event()
        run = MapRun(outcomes, event.set)
        blocks = self._blocks(items, key, window.room).__aiter__()
        exhausted = False
        while True:
            while not exhausted and window.room() > 0:
                try:
                    block, first, keys = await blocks.__anext__()
                except StopAsyncIteration:
                    exhausted = True
                    break
                window.admit(first, len(block))
                await self._place(
                    block,
                    first,
                    keys,
                    lambda jobs, seqs: AsyncChunk(
                        call, jobs, seqs, run, self._retry, self._job_timeout
                    ),
                )
            if window.in_flight == 0:
                return
            if not run.finished:
                event.clear()
                run.waiting = True
                await event.wait()
                run.waiting = False
            while run.finished:
                for row in window.release(run.finished.popleft()):
                    yield map_result(row, outcomes)

    async def _blocks(
        self,
        items: Iterable[T] | AsyncIterable[T],
        key: Callable[[T], Hashable] | None,
        limit: Callable[[], int] | None,
    ) -> AsyncIterator[tuple[list[T], int, list[Hashable] | None]]:
        """Take ``items`` a numbered block at a time (see ``Placement._block_size``)."""
        if isinstance(items, AsyncIterable):
            iterator = items.__aiter__()
            while True:
                want = self._block_size(None if limit is None else limit())
                block: list[T] = []
                async for item in iterator:
                    block.append(item)
                    if len(block) >= want:
                        break
                if not block:
                    return
                if self._closed:
                    raise ClosedError("the dispatcher is closed: it takes no more jobs")
                yield self._stamp(block, key)
        else:
            plain = iter(items)
            while True:
                block = list(islice(plain, self._block_size(None if limit is None else limit())))
                if not block:
                    return
                if self._closed:
                    raise ClosedError("the dispatcher is closed: it takes no more jobs")
                yield self._stamp(block, key)

    async def _place(
        self,
        block: list[Any],
        first: int,
        keys: list[Hashable] | None,
        make: Callable[[list[Any], list[int]], AsyncChunk | InlineChunk],
    ) -> None:
        """Hand each queue its part of a block, a chunk at a time, waiting for room.

        If a put fails (QueueFull, an interrupt), the jobs of the block not yet
        handed over were never accepted: they are uncounted.
        """
        placed = 0
        timeout = self.settings.put_timeout
        try:
            for index, seqs in self._parts(range(first, first + len(block)), first, keys):
                inbox = self._inboxes[index]
                for piece in self._chunked(seqs):
                    await inbox.room(timeout)
                    inbox.put_many_nowait([make([block[s - first] for s in piece], piece)])
                    placed += len(piece)
        except BaseException:
            self._reject(len(block) - placed)
            raise

    # -- accounting ----------------------------------------------------------

    def stats(self) -> DispatcherStats:
        """A snapshot of the counters (exact once joined or stopped)."""
        return self._ledger_stats(self._states, self.started_at, self._inboxes)
