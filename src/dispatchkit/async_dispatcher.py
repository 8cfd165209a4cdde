"""AsyncDispatcher: the same strategies and accounting, with asyncio tasks as workers.

    await submit / map / dispatch ──strategy──▶ AsyncInbox[0..N-1] (or one shared, for pull)
                                                      │
                                worker tasks (owned by a TaskGroup) ──▶ handles / results / counters

N may be thousands: a worker is a task looping over its inbox, running one
job at a time. Coroutine functions are awaited; plain callables are called in
the event loop, or in a thread with ``sync_in_thread=True``. Every task has an
owner: the workers live in a ``TaskGroup`` entered by ``async with``, so
nothing is left pending after the block, and a crash surfaces as an
``ExceptionGroup`` instead of vanishing.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections import deque
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Generator,
    Hashable,
    Iterable,
    Sequence,
)
from functools import partial
from itertools import islice
from time import perf_counter
from types import TracebackType
from typing import Any, Generic, TypeVar

from ._async_inbox import AsyncInbox
from ._work import map_result
from .errors import ClosedError, JobCancelled, TimedOut
from .job import Job, JobStatus, Outcome
from .retry import CANCELLED, FAILED, SUCCEEDED, RetryPolicy
from .settings import Settings
from .stats import DispatcherStats, snapshot
from .strategies import SHARED, Strategy

__all__ = ["AsyncDispatcher", "AsyncJobHandle"]

logger = logging.getLogger(__name__)

#: Plain-function messages a worker runs back to back before it lets the
#: event loop run other tasks (an HTTP server's requests, say).
_YIELD_EVERY = 64

T = TypeVar("T")
R = TypeVar("R")

_STATUS = {SUCCEEDED: JobStatus.SUCCEEDED, FAILED: JobStatus.FAILED, CANCELLED: JobStatus.CANCELLED}


class _StopSignal:
    """Tells a stop from a job's own cancellation.

    A worker task is cancelled by ``stop`` (``requested``) or, through its
    TaskGroup, when the task that owns the dispatcher is cancelled (the block
    is abandoned, the loop shuts down): both are stops, and end the worker.
    Any other cancellation that reaches a job (it cancelled its own task, or
    raised ``CancelledError`` itself) is that job's failure: its worker goes on.
    """

    __slots__ = ("owner", "requested")

    def __init__(self) -> None:
        self.requested = False
        #: The task that entered ``async with``.
        self.owner: asyncio.Task[Any] | None = None

    def __call__(self) -> bool:
        owner = self.owner
        return self.requested or (owner is not None and owner.cancelling() > 0)


class _WorkerState:
    __slots__ = (
        "busy",
        "cancelled",
        "failed",
        "first_start",
        "index",
        "stop",
        "succeeded",
        "task",
    )

    def __init__(self, index: int, stop: _StopSignal) -> None:
        self.index = index
        self.stop = stop
        #: The worker's task, set as it starts: what a job might cancel.
        self.task: asyncio.Task[Any] | None = None
        self.succeeded = self.failed = self.cancelled = 0
        self.busy = 0.0
        self.first_start: float | None = None


#: The failure of a job that cancelled the worker task running it.
_SELF_CANCELLED = "the job cancelled its own worker task (it was not stopped)"


def _own_cancellation(exc: asyncio.CancelledError, why: str | None = None) -> RuntimeError:
    """The failure recorded for a job that raised ``CancelledError`` itself."""
    error = RuntimeError(why or "the job raised CancelledError (it was not stopped)")
    error.__cause__ = exc
    return error


async def _restore(task: asyncio.Task[Any], before: int, stop: _StopSignal) -> None:
    """Undo a job's cancellation of its own worker task, so that the worker goes on.

    Its requests are withdrawn (``uncancel``); one still armed (Python 3.11 and
    3.12 keep it after ``uncancel``) goes off here, where it is caught.

    Raises:
        CancelledError: a stop arrived meanwhile.
    """
    while task.cancelling() > before:
        task.uncancel()
    try:
        await asyncio.sleep(0)
    except asyncio.CancelledError:
        if stop():
            raise


async def _job_failure(
    exc: BaseException, task: asyncio.Task[Any], before: int, stop: _StopSignal
) -> BaseException:
    """The failure to record for a job that raised ``exc``.

    Whatever a job raises is its own failure, ``KeyboardInterrupt`` and
    ``SystemExit`` included, as on thread and process workers: asyncio would
    let those two out of the event loop, ending every worker and the loop.

    Raises:
        CancelledError: ``exc`` is a stop's cancellation.
    """
    cancelled_itself = task.cancelling() > before
    if isinstance(exc, asyncio.CancelledError):
        if stop():
            raise exc
        exc = _own_cancellation(exc, _SELF_CANCELLED if cancelled_itself else None)
    if cancelled_itself:
        await _restore(task, before, stop)
    return exc


async def _self_cancelled(task: asyncio.Task[Any], before: int, stop: _StopSignal) -> RuntimeError:
    """The failure of a job that returned after cancelling its own worker task.

    Raises:
        CancelledError: a stop arrived meanwhile.
    """
    await _restore(task, before, stop)
    return RuntimeError(_SELF_CANCELLED)


async def _settle(
    pending: Awaitable[Any], task: asyncio.Task[Any], before: int, stop: _StopSignal
) -> tuple[str, Any]:
    """Await what a job returned: ``(SUCCEEDED, value)`` or ``(FAILED, error)``.

    Raises:
        CancelledError: a stop.
    """
    try:
        value = await pending
    except BaseException as exc:  # the job's failure, unless it is a stop
        return FAILED, await _job_failure(exc, task, before, stop)
    if task.cancelling() != before and not stop():
        return FAILED, await _self_cancelled(task, before, stop)
    return SUCCEEDED, value


def _tell(on_error: Callable[[Any, BaseException], object], item: Any, exc: BaseException) -> None:
    try:
        on_error(item, exc)
    except Exception:  # a failing callback must not end the worker
        logger.exception("on_error callback raised")


async def _run_with_policy(
    call: Callable[[], Awaitable[Any]],
    policy: RetryPolicy | None,
    timeout: float | None,
    state: _WorkerState,
    on_attempt: Callable[[int], object] | None = None,
) -> tuple[str, Any, int]:
    """Await ``call()`` under a timeout and a retry policy: ``(kind, value, attempts)``.

    A stop's cancellation propagates: the caller records the job cancelled,
    and an interrupted backoff uses up no attempt. ``on_attempt(n)`` is told of
    each attempt as it starts, so that a cancelled job still knows how many ran.
    """
    task, stop = state.task, state.stop
    assert task is not None
    attempt = 1
    while True:
        if on_attempt is not None:
            on_attempt(attempt)
        before = task.cancelling()
        error: BaseException
        try:
            if timeout is None:
                value = await call()
            else:
                async with asyncio.timeout(timeout) as scope:
                    value = await call()
        except BaseException as exc:  # the job's failure, unless it is a stop
            error = await _job_failure(exc, task, before, stop)
            if timeout is not None and isinstance(exc, TimeoutError) and scope.expired():
                error = TimedOut(f"job ran longer than its timeout of {timeout} s")
        else:
            if task.cancelling() == before or stop():
                return SUCCEEDED, value, attempt
            error = await _self_cancelled(task, before, stop)
        if policy is None or not policy.should_retry(error, attempt):
            return FAILED, error, attempt
        await asyncio.sleep(policy.delay(attempt))
        attempt += 1


class AsyncJobHandle(Generic[R]):
    """The future result of one job submitted to an :class:`AsyncDispatcher`.

    ``await handle`` gives the value (or raises the job's exception); the rest
    follows ``asyncio.Future``: ``done``, ``cancel``, ``cancelled``,
    ``result``, ``exception``, ``add_done_callback``.
    """

    #: Run by awaiting ``_arun`` (see ``_InlineChunk``).
    inline = False

    __slots__ = (
        "_call",
        "_future",
        "_inbox",
        "_owner",
        "attempts",
        "finished_at",
        "job_id",
        "name",
        "policy",
        "started_at",
        "submitted_at",
        "timeout",
        "worker",
    )

    def __init__(
        self,
        owner: AsyncDispatcher,
        job_id: int,
        call: Callable[[], Awaitable[R]],
        name: str | None,
        policy: RetryPolicy | None,
        timeout: float | None,
    ) -> None:
        self._owner = owner
        self.job_id = job_id
        self._call: Callable[[], Awaitable[R]] | None = call
        self.name = name
        self.policy = policy
        self.timeout = timeout
        self._future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._inbox: AsyncInbox[Any] | None = None
        self.worker: int | None = None
        self.submitted_at = perf_counter()
        self.started_at: float | None = None
        self.finished_at: float | None = None
        self.attempts = 0

    def __await__(self) -> Generator[Any, None, R]:
        return self._future.__await__()

    def __repr__(self) -> str:
        return f"<AsyncJobHandle {self.job_id} {self.status.value}>"

    @property
    def status(self) -> JobStatus:
        future = self._future
        if not future.done():
            return JobStatus.RUNNING if self.started_at is not None else JobStatus.PENDING
        if future.cancelled():
            return JobStatus.CANCELLED
        return JobStatus.FAILED if future.exception() is not None else JobStatus.SUCCEEDED

    def done(self) -> bool:
        return self._future.done()

    def cancelled(self) -> bool:
        return self._future.cancelled()

    def cancel(self) -> bool:
        """Cancel the job if no worker has taken it yet (True if it is now cancelled)."""
        if self._future.cancelled():
            return True
        if self._inbox is None or not self._inbox.cancel(self):
            return False
        self._finish(CANCELLED, None)
        return True

    def result(self) -> R:
        """The value; raises the job's exception, ``JobCancelled``, or
        ``asyncio.InvalidStateError`` if the job has not finished."""
        if self._future.cancelled():
            raise JobCancelled(f"job {self.job_id} was cancelled")
        return self._future.result()

    def exception(self) -> BaseException | None:
        if self._future.cancelled():
            raise JobCancelled(f"job {self.job_id} was cancelled")
        return self._future.exception()

    def add_done_callback(self, fn: Callable[[AsyncJobHandle[R]], object]) -> None:
        self._future.add_done_callback(lambda _: fn(self))

    def outcome(self) -> Outcome[R]:
        """How the job ended (call once it is done)."""
        status = self.status
        return Outcome(
            job_id=self.job_id,
            status=status,
            value=self._future.result() if status is JobStatus.SUCCEEDED else None,
            error=self._future.exception() if status is JobStatus.FAILED else None,
            worker=self.worker,
            submitted_at=self.submitted_at,
            started_at=self.started_at,
            finished_at=self.finished_at,
            attempts=self.attempts,
            name=self.name,
        )

    def _finish(self, kind: str, value: Any) -> None:
        self.finished_at = perf_counter()
        self._call = None
        self._inbox = None
        future = self._future
        if future.done():
            return
        if kind == SUCCEEDED:
            future.set_result(value)
        elif kind == FAILED:
            future.set_exception(value)
        else:
            future.cancel()
        # Nobody may ever await a failed handle: don't let asyncio log
        # "exception was never retrieved" for it.
        if kind == FAILED:
            future.exception()

    async def _arun(self, state: _WorkerState) -> None:
        self.worker = state.index
        self.started_at = started = perf_counter()
        if state.first_start is None:
            state.first_start = started
        call = self._call
        assert call is not None
        try:
            kind, value, self.attempts = await _run_with_policy(
                call, self.policy, self.timeout, state, self._count_attempt
            )
        except asyncio.CancelledError:
            state.cancelled += 1
            self._finish(CANCELLED, None)
            raise
        finally:
            state.busy += perf_counter() - started
        if kind == SUCCEEDED:
            state.succeeded += 1
        else:
            state.failed += 1
        self._finish(kind, value)

    def _count_attempt(self, attempt: int) -> None:
        self.attempts = attempt

    def _cancel_taken(self) -> int:
        self._finish(CANCELLED, None)
        return 1


class _MapRun:
    """Where the workers leave the results of one ``map`` call."""

    __slots__ = ("event", "finished", "outcomes")

    def __init__(self, outcomes: bool) -> None:
        self.outcomes = outcomes
        self.finished: deque[tuple[Any, ...]] = deque()
        self.event = asyncio.Event()

    def deliver(self, rows: list[tuple[Any, ...]]) -> None:
        self.finished.extend(rows)
        self.event.set()


class _Chunk:
    """Jobs of one ``map`` or ``dispatch`` call handed over together.

    ``run`` is None for fire-and-forget jobs: only counts are kept.
    """

    inline = False

    __slots__ = ("call", "items", "on_error", "policy", "run", "seqs", "submitted_at", "timeout")

    def __init__(
        self,
        call: Callable[[Any], Awaitable[Any]],
        items: list[Any],
        seqs: list[int],
        run: _MapRun | None,
        policy: RetryPolicy | None,
        timeout: float | None,
        on_error: Callable[[Any, BaseException], object] | None = None,
    ) -> None:
        self.call, self.items, self.seqs, self.run = call, items, seqs, run
        self.policy, self.timeout, self.on_error = policy, timeout, on_error
        self.submitted_at = perf_counter()

    def _cancel_taken(self) -> int:
        self._deliver_cancelled(0)
        return len(self.items)

    def _deliver_cancelled(self, start: int) -> None:
        if self.run is not None:
            error = JobCancelled("cancelled by stop()")
            self.run.deliver(
                [
                    (seq, JobStatus.CANCELLED, error, None, self.submitted_at, None, None, 0)
                    for seq in self.seqs[start:]
                ]
            )

    async def _arun(self, state: _WorkerState) -> None:
        rows: list[tuple[Any, ...]] = []
        call, policy, timeout = self.call, self.policy, self.timeout
        position = 0
        chunk_start = perf_counter()
        if state.first_start is None:
            state.first_start = chunk_start
        plain = policy is None and timeout is None
        task, stop = state.task, state.stop
        assert task is not None
        cancelling = task.cancelling
        # Cancellation requests a job makes of its own task are withdrawn as
        # it ends (_restore): each job starts with the count the chunk started with.
        before = cancelling()
        try:
            for position, item in enumerate(self.items):
                started = perf_counter()
                if plain:  # the common case, without the policy wrapper's cost
                    attempts = 1
                    try:
                        kind, value = SUCCEEDED, await call(item)
                    except BaseException as exc:  # the job's failure, unless it is a stop
                        kind, value = FAILED, await _job_failure(exc, task, before, stop)
                    else:
                        if cancelling() != before and not stop():
                            kind, value = FAILED, await _self_cancelled(task, before, stop)
                else:
                    kind, value, attempts = await _run_with_policy(
                        partial(call, item), policy, timeout, state
                    )
                if kind == SUCCEEDED:
                    state.succeeded += 1
                else:
                    state.failed += 1
                    if self.run is None and self.on_error is not None:
                        _tell(self.on_error, item, value)
                if self.run is not None:
                    rows.append(
                        (
                            self.seqs[position],
                            _STATUS[kind],
                            value,
                            state.index,
                            self.submitted_at,
                            started,
                            perf_counter(),
                            attempts,
                        )
                    )
        except asyncio.CancelledError:
            state.cancelled += len(self.items) - position
            if self.run is not None:
                self.run.deliver(rows)
                rows = []
            self._deliver_cancelled(position)
            raise
        finally:
            state.busy += perf_counter() - chunk_start
        if self.run is not None:
            self.run.deliver(rows)


class _InlineChunk:
    """Fire-and-forget jobs of a plain function, called right in the worker's loop.

    A plain function needs no coroutine around each call: ``run`` calls it
    for every item without awaiting, which makes a job several times cheaper
    (it matters for sub-microsecond jobs, such as the ingest service's). Only
    used without a retry policy or a timeout, neither of which a plain call
    in the event loop could honour. Should the function return an awaitable
    after all, ``run`` hands back a coroutine that awaits it and the rest.
    """

    inline = True

    __slots__ = ("fn", "items", "on_error")

    def __init__(
        self,
        fn: Callable[[Any], Any],
        items: list[Any],
        on_error: Callable[[Any, BaseException], object] | None,
    ) -> None:
        self.fn, self.items, self.on_error = fn, items, on_error

    def _cancel_taken(self) -> int:
        return len(self.items)

    def run(self, state: _WorkerState) -> Awaitable[None] | None:
        """Run the jobs; an awaitable if one returned an awaitable (await it)."""
        fn, on_error = self.fn, self.on_error
        started = perf_counter()
        if state.first_start is None:
            state.first_start = started
        task = state.task
        assert task is not None
        cancelling = task.cancelling
        # A plain call cannot be stopped midway: a change in the count of
        # cancellation requests is the job cancelling its own worker task.
        before = cancelling()
        try:
            for position, item in enumerate(self.items):
                try:
                    value = fn(item)
                except BaseException as exc:  # whatever a job raises is its failure
                    if cancelling() != before:
                        return self._resume(
                            state, position, _job_failure(exc, task, before, state.stop)
                        )
                    state.failed += 1
                    if on_error is not None:
                        if isinstance(exc, asyncio.CancelledError):
                            exc = _own_cancellation(exc)
                        _tell(on_error, item, exc)
                    continue
                if cancelling() != before:
                    return self._resume(state, position, _self_cancelled(task, before, state.stop))
                if value is not None and inspect.isawaitable(value):
                    return self._resume(state, position, _settle(value, task, before, state.stop))
                state.succeeded += 1
        finally:
            state.busy += perf_counter() - started
        return None

    async def _resume(
        self,
        state: _WorkerState,
        position: int,
        settling: Awaitable[tuple[str, Any] | BaseException],
    ) -> None:
        """Settle the job at ``position`` by awaiting ``settling``, then run the rest.

        ``settling`` gives ``(kind, value)``, or the job's failure.
        """
        started = perf_counter()
        try:
            settled = await settling
        except asyncio.CancelledError:  # a stop
            state.cancelled += len(self.items) - position
            raise
        finally:
            state.busy += perf_counter() - started
        kind, value = settled if isinstance(settled, tuple) else (FAILED, settled)
        if kind == SUCCEEDED:
            state.succeeded += 1
        else:
            state.failed += 1
            if self.on_error is not None:
                _tell(self.on_error, self.items[position], value)
        rest = self.items[position + 1 :]
        if rest:
            await _Chunk(_awaiting(self.fn), rest, [], None, None, None, self.on_error)._arun(state)


def _is_coroutine_function(fn: Callable[..., Any]) -> bool:
    """Whether calling ``fn`` gives a coroutine (``async def``, or an async ``__call__``)."""
    return inspect.iscoroutinefunction(fn) or (
        callable(fn) and inspect.iscoroutinefunction(type(fn).__call__)
    )


def _awaiting(fn: Callable[[Any], Any]) -> Callable[[Any], Awaitable[Any]]:
    """``fn`` as ``item -> coroutine``, awaiting what it returns if that is awaitable."""

    async def call(item: Any) -> Any:
        value = fn(item)
        return await value if inspect.isawaitable(value) else value

    return call


class AsyncDispatcher:
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
        self._strategy = self.settings.resolved_strategy
        self._n = self.settings.workers
        self._chunk = self.settings.chunk
        self._shared = self._strategy.shared
        capacity = self.settings.inbox_capacity
        self._inboxes: list[AsyncInbox[Any]] = (
            [AsyncInbox(capacity * self._n)]
            if self._shared
            else [AsyncInbox(capacity) for _ in range(self._n)]
        )
        self._stop = _StopSignal()
        self._states = [_WorkerState(i, self._stop) for i in range(self._n)]
        self._next_seq = 0
        self._last_maker: tuple[Any, Any, Callable[[list[Any], list[int]], Any]] | None = None
        self._rejected = 0
        self._cancelled = 0
        self._closed = False
        self._group: asyncio.TaskGroup | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.started_at = perf_counter()

    @property
    def workers(self) -> int:
        return self._n

    @property
    def strategy(self) -> Strategy:
        return self._strategy

    @property
    def closed(self) -> bool:
        return self._closed

    # -- lifecycle -----------------------------------------------------------

    async def __aenter__(self) -> AsyncDispatcher:
        if self._group is not None:
            raise RuntimeError("an AsyncDispatcher can be entered only once")
        self._group = asyncio.TaskGroup()
        await self._group.__aenter__()
        self._stop.owner = asyncio.current_task()
        self.started_at = perf_counter()
        for index in range(self._n):
            inbox = self._inboxes[0 if self._shared else index]
            self._tasks.append(self._group.create_task(self._work(inbox, self._states[index])))
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

    async def _work(self, inbox: AsyncInbox[Any], state: _WorkerState) -> None:
        state.task = asyncio.current_task()
        ran = 0  # plain-function messages run since the loop last had a turn
        while True:
            message = inbox.get_nowait()
            if message is None:
                ran = 0
                message = await inbox.get()
                if message is None:
                    return
            if not message.inline:
                await message._arun(state)
            elif (pending := message.run(state)) is not None:
                await pending
            else:
                ran += 1
                if ran >= _YIELD_EVERY:
                    ran = 0
                    await asyncio.sleep(0)

    def close(self) -> None:
        """Take no more jobs; the workers finish what is queued. Idempotent."""
        self._closed = True
        for inbox in self._inboxes:
            inbox.close()

    async def join(self) -> None:
        """Close, then wait until every queued job has run and the workers ended."""
        self.close()
        if self._tasks:
            await asyncio.wait(self._tasks)

    async def stop(self, cancel: bool = True) -> DispatcherStats:
        """Close; with ``cancel``, cancel queued *and running* jobs, then wait for the workers."""
        if cancel:
            self._cancel_everything()
        await self.join()
        return self.stats()

    def _cancel_everything(self) -> None:
        self.close()
        self._stop.requested = True
        for inbox in self._inboxes:
            self._cancelled += sum(message._cancel_taken() for message in inbox.take_all())
        for task in self._tasks:
            task.cancel()

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
        if _is_coroutine_function(fn):
            return (lambda item: fn(*item)) if star else fn
        if self._sync_in_thread:
            if star:
                return lambda item: asyncio.to_thread(fn, *item)
            return lambda item: asyncio.to_thread(fn, item)

        return _awaiting((lambda item: fn(*item)) if star else fn)

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
        if timeout is not None and not self._sync_in_thread and not _is_coroutine_function(fn):
            name = getattr(fn, "__qualname__", None) or type(fn).__name__
            raise ValueError(
                f"a job timeout cannot stop the plain function {name} on the event loop: "
                "make it an async def, or pass sync_in_thread=True (where a timed-out "
                "job's thread runs on to its end)"
            )

    def _take_seq(self, count: int = 1) -> int:
        first = self._next_seq
        self._next_seq += count
        return first

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
        if job.key is None and self._strategy.needs_key:
            raise ValueError("the key strategy needs a key for every job: Job(..., key=...)")
        fn, args, kwargs = job.fn, job.args, job.kwargs
        self._refuse_unstoppable(fn, job.timeout or self._job_timeout)
        call: Callable[[], Awaitable[Any]]
        if _is_coroutine_function(fn):
            call = lambda: fn(*args, **kwargs)  # noqa: E731
        elif self._sync_in_thread:
            call = lambda: asyncio.to_thread(fn, *args, **kwargs)  # noqa: E731
        else:
            caller = self._caller(lambda _: fn(*args, **kwargs))
            call = lambda: caller(None)  # noqa: E731
        seq = self._take_seq()
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
            self._rejected += 1
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
        chunk, shared, inboxes = self._chunk, self._shared, self._inboxes
        parts = self._strategy.split(items, self._next_seq, self._n, keys)
        # A split gives a worker at most one part: one look at each inbox will do.
        for worker, jobs in parts:
            inbox = inboxes[0 if shared else worker]
            if len(inbox) + (len(jobs) + chunk - 1) // chunk > inbox.capacity:
                return False
        make = self._fire_and_forget(fn, on_error)
        self._next_seq += len(items)
        for worker, jobs in parts:
            inboxes[0 if shared else worker].put_many_nowait(
                [make(jobs[low : low + chunk], []) for low in range(0, len(jobs), chunk)]
            )
        return True

    def _fire_and_forget(
        self,
        fn: Callable[[Any], Any],
        on_error: Callable[[Any, BaseException], object] | None,
    ) -> Callable[[list[Any], list[int]], _Chunk | _InlineChunk]:
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
    ) -> Callable[[list[Any], list[int]], _Chunk | _InlineChunk]:
        self._refuse_unstoppable(fn, self._job_timeout)
        if (
            not _is_coroutine_function(fn)
            and not self._sync_in_thread
            and self._retry is None
            and self._job_timeout is None
        ):
            return lambda jobs, seqs: _InlineChunk(fn, jobs, on_error)
        call = self._caller(fn)
        return lambda jobs, seqs: _Chunk(
            call, jobs, seqs, None, self._retry, self._job_timeout, on_error
        )

    async def map(
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
        """Run ``fn`` over ``items``; yield results (or :class:`Outcome` s) lazily.

        The same contract as ``Dispatcher.map``: at most ``window`` jobs in
        flight, errors raised at the failing item unless ``outcomes``.

        Raises:
            ClosedError: the dispatcher is closed.
            ValueError: the ``key`` strategy without ``key``; ``job_timeout`` with
                a plain function on the event loop.
        """
        self._check_open()
        self._check_key(key)
        self._refuse_unstoppable(fn, self._job_timeout)
        if window is None:
            window = max(self._n * self.settings.queue_size, self._n * self._chunk)
        call = self._caller(fn, star)
        run = _MapRun(outcomes)
        ready: dict[int, tuple[Any, ...]] = {}
        order: deque[int] = deque()
        in_flight = 0
        blocks = self._blocks(items, key, lambda: window - in_flight).__aiter__()
        exhausted = False
        while True:
            while not exhausted and in_flight < window:
                try:
                    block, first, keys = await blocks.__anext__()
                except StopAsyncIteration:
                    exhausted = True
                    break
                in_flight += len(block)
                order.extend(range(first, first + len(block)))
                await self._place(
                    block,
                    first,
                    keys,
                    lambda jobs, seqs: _Chunk(
                        call, jobs, seqs, run, self._retry, self._job_timeout
                    ),
                )
            if in_flight == 0:
                return
            if not run.finished:
                run.event.clear()
                await run.event.wait()
            while run.finished:
                row = run.finished.popleft()
                if ordered:
                    ready[row[0]] = row
                else:
                    in_flight -= 1
                    yield map_result(row, outcomes)
            if ordered:
                while order and order[0] in ready:
                    in_flight -= 1
                    yield map_result(ready.pop(order.popleft()), outcomes)

    def _check_key(self, key: Callable[[Any], Hashable] | None) -> None:
        if self._strategy.needs_key and key is None:
            raise ValueError("the key strategy needs key=<function giving each item's key>")

    async def _blocks(
        self,
        items: Iterable[T] | AsyncIterable[T],
        key: Callable[[T], Hashable] | None,
        limit: Callable[[], int] | None,
    ) -> AsyncIterator[tuple[list[T], int, list[Hashable] | None]]:
        size = self._chunk if self._shared else self._chunk * self._n
        if isinstance(items, AsyncIterable):
            iterator = items.__aiter__()
            while True:
                want = size if limit is None else max(1, min(size, limit()))
                block: list[T] = []
                async for item in iterator:
                    block.append(item)
                    if len(block) >= want:
                        break
                if not block:
                    return
                yield self._stamp(block, key)
        else:
            plain = iter(items)
            while True:
                want = size if limit is None else max(1, min(size, limit()))
                block = list(islice(plain, want))
                if not block:
                    return
                yield self._stamp(block, key)

    def _stamp(
        self, block: list[T], key: Callable[[T], Hashable] | None
    ) -> tuple[list[T], int, list[Hashable] | None]:
        if self._closed:
            raise ClosedError("the dispatcher is closed: it takes no more jobs")
        keys = [key(item) for item in block] if key is not None else None
        return block, self._take_seq(len(block)), keys

    async def _place(
        self,
        block: list[Any],
        first: int,
        keys: list[Hashable] | None,
        make: Callable[[list[Any], list[int]], _Chunk | _InlineChunk],
    ) -> None:
        split = self._strategy.split
        seq_parts = dict(split(range(first, first + len(block)), first, self._n, keys))
        placed = 0
        try:
            for worker, jobs in split(block, first, self._n, keys):
                inbox = self._inboxes[0 if worker == SHARED else worker]
                seqs = seq_parts[worker]
                chunk = self._chunk
                for low in range(0, len(jobs), chunk):
                    await inbox.room(self.settings.put_timeout)
                    inbox.put_many_nowait([make(jobs[low : low + chunk], seqs[low : low + chunk])])
                    placed += len(jobs[low : low + chunk])
        except BaseException:
            self._rejected += len(block) - placed
            raise

    # -- accounting ----------------------------------------------------------

    def stats(self) -> DispatcherStats:
        """A snapshot of the counters (exact once joined or stopped)."""
        cancelled = self._cancelled + sum(inbox.cancelled for inbox in self._inboxes)
        return snapshot(self._states, self.started_at, self._next_seq - self._rejected, cancelled)
