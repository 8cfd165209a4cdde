"""What travels through an asyncio worker's inbox, and how a job's end is told apart.

A message is an :class:`~dispatchkit.async_handle.AsyncJobHandle` (one
submitted job), an :class:`AsyncChunk` (jobs of one ``map`` or ``dispatch``
call, awaited one by one) or an :class:`InlineChunk` (fire-and-forget jobs of
a plain function, called right in the worker's loop). The worker loop itself
is :func:`dispatchkit.executors.asyncio.work`.

Whatever a job raises is its own failure, ``KeyboardInterrupt`` and
``SystemExit`` included, and so is a cancellation of its worker task that is
not a stop (the job cancelling its own task): :class:`StopSignal` tells them apart.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from time import perf_counter
from typing import Any

from dispatchkit._work import FireAndForget
from dispatchkit.core import Attempts, JobStatus, MapRun, WorkerState, cancelled_rows
from dispatchkit.core.adaptive import BulkRun
from dispatchkit.errors import TimedOut
from dispatchkit.retry import RetryPolicy

__all__ = [
    "AsyncChunk",
    "InlineChunk",
    "StopSignal",
    "awaiting",
    "is_coroutine_function",
    "job_failure",
    "run_attempts",
    "self_cancelled",
    "settle",
]

logger = logging.getLogger(__name__)

SUCCEEDED, FAILED, CANCELLED = JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED


class StopSignal:
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


#: The failure of a job that cancelled the worker task running it.
_SELF_CANCELLED = "the job cancelled its own worker task (it was not stopped)"


def own_cancellation(exc: asyncio.CancelledError, why: str | None = None) -> RuntimeError:
    """The failure recorded for a job that raised ``CancelledError`` itself."""
    error = RuntimeError(why or "the job raised CancelledError (it was not stopped)")
    error.__cause__ = exc
    return error


async def restore(task: asyncio.Task[Any], before: int, stop: StopSignal) -> None:
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


async def job_failure(
    exc: BaseException, task: asyncio.Task[Any], before: int, stop: StopSignal
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
        exc = own_cancellation(exc, _SELF_CANCELLED if cancelled_itself else None)
    if cancelled_itself:
        await restore(task, before, stop)
    return exc


async def self_cancelled(task: asyncio.Task[Any], before: int, stop: StopSignal) -> RuntimeError:
    """The failure of a job that returned after cancelling its own worker task.

    Raises:
        CancelledError: a stop arrived meanwhile.
    """
    await restore(task, before, stop)
    return RuntimeError(_SELF_CANCELLED)


async def settle(
    pending: Awaitable[Any], task: asyncio.Task[Any], before: int, stop: StopSignal
) -> tuple[JobStatus, Any]:
    """Await what a job returned: ``(SUCCEEDED, value)`` or ``(FAILED, error)``.

    Raises:
        CancelledError: a stop.
    """
    try:
        value = await pending
    except BaseException as exc:  # the job's failure, unless it is a stop
        return FAILED, await job_failure(exc, task, before, stop)
    if task.cancelling() != before and not stop():
        return FAILED, await self_cancelled(task, before, stop)
    return SUCCEEDED, value


def tell(on_error: Callable[[Any, BaseException], object], item: Any, exc: BaseException) -> None:
    try:
        on_error(item, exc)
    except Exception:  # a failing callback must not end the worker
        logger.exception("on_error callback raised")


async def run_attempts(
    call: Callable[[], Awaitable[Any]],
    policy: RetryPolicy | None,
    timeout: float | None,
    state: WorkerState,
    on_attempt: Callable[[int], object] | None = None,
) -> tuple[JobStatus, Any, int]:
    """Await ``call()`` under a timeout and a retry policy: ``(kind, value, attempts)``.

    A stop's cancellation propagates: the caller records the job cancelled,
    and an interrupted backoff uses up no attempt. ``on_attempt(n)`` is told of
    each attempt as it starts, so that a cancelled job still knows how many ran.
    """
    task, stop = state.task, state.control
    assert task is not None
    plan = Attempts(policy)
    while True:
        if on_attempt is not None:
            on_attempt(plan.number)
        before = task.cancelling()
        error: BaseException
        try:
            if timeout is None:
                value = await call()
            else:
                async with asyncio.timeout(timeout) as scope:
                    value = await call()
        except BaseException as exc:  # the job's failure, unless it is a stop
            error = await job_failure(exc, task, before, stop)
            if timeout is not None and isinstance(exc, TimeoutError) and scope.expired():
                error = TimedOut(f"job ran longer than its timeout of {timeout} s")
        else:
            if task.cancelling() == before or stop():
                return SUCCEEDED, value, plan.number
            error = await self_cancelled(task, before, stop)
        wait = plan.after_failure(error)
        if wait is None:
            return FAILED, error, plan.number
        await asyncio.sleep(wait)
        plan.again()


class AsyncChunk:
    """Jobs of one ``map`` or ``dispatch`` call handed over together.

    ``run`` is None for fire-and-forget jobs: only counts are kept, and told to
    ``tally`` for an adaptive ``dispatch`` (see :class:`~dispatchkit._work.FireAndForget`).
    """

    inline = False

    __slots__ = (
        "call", "items", "on_error", "policy", "run", "seqs", "submitted_at", "tally", "timeout",
    )  # fmt: skip

    def __init__(
        self,
        call: Callable[[Any], Awaitable[Any]],
        items: Sequence[Any],
        seqs: Sequence[int],
        run: MapRun | None,
        policy: RetryPolicy | None,
        timeout: float | None,
        on_error: Callable[[Any, BaseException], object] | None = None,
        tally: BulkRun | None = None,
    ) -> None:
        self.call, self.items, self.seqs, self.run = call, items, seqs, run
        self.policy, self.timeout, self.on_error = policy, timeout, on_error
        self.tally = tally
        self.submitted_at = perf_counter()

    def _job_count(self) -> int:
        return len(self.items)

    def _cancel_taken(self) -> int:
        self._deliver_cancelled(0)
        if self.tally is not None:
            self.tally.ended(None, len(self.items), None, None)
        return len(self.items)

    def _moved_to(self, queue: object) -> None:
        """Stolen into another worker's queue: nothing here refers to the old one."""

    def _deliver_cancelled(self, start: int) -> None:
        if self.run is not None:
            self.run.deliver(cancelled_rows(self.seqs[start:], self.submitted_at, None))

    async def _arun(self, state: WorkerState) -> None:
        rows: list[Any] = []
        call, policy, timeout = self.call, self.policy, self.timeout
        position = 0
        chunk_start = perf_counter()
        if state.first_start is None:
            state.first_start = chunk_start
        plain = policy is None and timeout is None
        task, stop = state.task, state.control
        assert task is not None
        cancelling = task.cancelling
        # Cancellation requests a job makes of its own task are withdrawn as
        # it ends (restore): each job starts with the count the chunk started with.
        before = cancelling()
        try:
            for position, item in enumerate(self.items):
                started = perf_counter()
                if plain:  # the common case, without the policy wrapper's cost
                    attempts = 1
                    try:
                        kind, value = SUCCEEDED, await call(item)
                    except BaseException as exc:  # the job's failure, unless it is a stop
                        kind, value = FAILED, await job_failure(exc, task, before, stop)
                    else:
                        if cancelling() != before and not stop():
                            kind, value = FAILED, await self_cancelled(task, before, stop)
                else:
                    kind, value, attempts = await run_attempts(
                        partial(call, item), policy, timeout, state
                    )
                if kind is SUCCEEDED:
                    state.succeeded += 1
                else:
                    state.failed += 1
                    if self.run is None and self.on_error is not None:
                        tell(self.on_error, item, value)
                if self.run is not None:
                    rows.append(
                        (  # ResultRow's fields, as a plain tuple (see MapChunk._run)
                            self.seqs[position],
                            kind,
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
                self._hand_back(rows, position)
            raise
        finally:
            finished = perf_counter()
            state.busy += finished - chunk_start
            if self.tally is not None:
                self.tally.ended(state.index, len(self.items), chunk_start, finished)
        if self.run is not None:
            self._hand_back(rows, None)

    def _hand_back(self, rows: list[Any], cancelled_from: int | None) -> None:
        """Deliver the rows of the jobs that ran, then, after a stop, the cancelled
        rest from position ``cancelled_from`` on."""
        assert self.run is not None
        self.run.deliver(rows)
        if cancelled_from is not None:
            self._deliver_cancelled(cancelled_from)


class InlineChunk(FireAndForget):
    """Fire-and-forget jobs of a plain function, called right in the worker's loop.

    A plain function needs no coroutine around each call: ``run`` calls it
    for every item without awaiting, which makes a job several times cheaper
    (it matters for sub-microsecond jobs, such as the ingest service's). Only
    used without a retry policy or a timeout, neither of which a plain call
    in the event loop could honour. Should the function return an awaitable
    after all, ``run`` hands back a coroutine that awaits it and the rest.
    """

    inline = True

    __slots__ = ()

    def _cancel_taken(self) -> int:
        self._ended(None, len(self.items), None, None)
        return len(self.items)

    def run(self, state: WorkerState) -> Awaitable[None] | None:
        """Run the jobs; an awaitable if one returned an awaitable (await it)."""
        if self.tally is None:
            return self._run_inline(state)
        jobs, started = len(self.items), perf_counter()
        pending = self._run_inline(state)
        if pending is None:
            self._ended(state.index, jobs, started, perf_counter())
            return None
        return self._ended_after(pending, state.index, jobs, started)

    async def _ended_after(
        self, pending: Awaitable[None], worker: int, jobs: int, started: float
    ) -> None:
        try:
            await pending
        finally:
            self._ended(worker, jobs, started, perf_counter())

    def _run_inline(self, state: WorkerState) -> Awaitable[None] | None:
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
                            state, position, job_failure(exc, task, before, state.control)
                        )
                    state.failed += 1
                    if on_error is not None:
                        if isinstance(exc, asyncio.CancelledError):
                            exc = own_cancellation(exc)
                        tell(on_error, item, exc)
                    continue
                if cancelling() != before:
                    return self._resume(
                        state, position, self_cancelled(task, before, state.control)
                    )
                if value is not None and inspect.isawaitable(value):
                    return self._resume(state, position, settle(value, task, before, state.control))
                state.succeeded += 1
        finally:
            state.busy += perf_counter() - started
        return None

    async def _resume(
        self,
        state: WorkerState,
        position: int,
        settling: Awaitable[tuple[JobStatus, Any] | BaseException],
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
        if kind is SUCCEEDED:
            state.succeeded += 1
        else:
            state.failed += 1
            if self.on_error is not None:
                tell(self.on_error, self.items[position], value)
        rest = self.items[position + 1 :]
        if rest:
            await AsyncChunk(
                awaiting(self.fn), list(rest), [], None, None, None, self.on_error
            )._arun(state)


def is_coroutine_function(fn: Callable[..., Any]) -> bool:
    """Whether calling ``fn`` gives a coroutine (``async def``, or an async ``__call__``)."""
    return inspect.iscoroutinefunction(fn) or (
        callable(fn) and inspect.iscoroutinefunction(type(fn).__call__)
    )


def awaiting(fn: Callable[[Any], Any]) -> Callable[[Any], Awaitable[Any]]:
    """``fn`` as ``item -> coroutine``, awaiting what it returns if that is awaitable."""

    async def call(item: Any) -> Any:
        value = fn(item)
        return await value if inspect.isawaitable(value) else value

    return call
