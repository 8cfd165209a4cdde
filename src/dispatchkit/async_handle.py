"""The handle of one job submitted to an :class:`~dispatchkit.AsyncDispatcher`."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Generator
from time import perf_counter
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from dispatchkit._async_work import run_attempts
from dispatchkit.core import JobStatus, WorkerState
from dispatchkit.errors import JobCancelled
from dispatchkit.job import Outcome
from dispatchkit.retry import RetryPolicy

if TYPE_CHECKING:
    from dispatchkit._async_inbox import AsyncInbox
    from dispatchkit.async_dispatcher import AsyncDispatcher

__all__ = ["AsyncJobHandle"]

R = TypeVar("R")

SUCCEEDED, FAILED, CANCELLED = JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED


class AsyncJobHandle(Generic[R]):
    """The future result of one job submitted to an :class:`AsyncDispatcher`.

    ``await handle`` gives the value (or raises the job's exception); the rest
    follows ``asyncio.Future``: ``done``, ``cancel``, ``cancelled``,
    ``result``, ``exception``, ``add_done_callback``.

    Cancelling a task that awaits the handle (``task.cancel()``, a timeout of
    ``asyncio.timeout`` or ``wait_for``, a cancelled ``gather``) calls
    :meth:`cancel`, as ``asyncio.wrap_future`` does for a
    ``concurrent.futures.Future``: a job still queued is cancelled and never
    runs; a job a worker has started runs to completion and keeps its outcome
    on the handle, while the task gets ``CancelledError``. ``asyncio.shield``
    keeps even a queued job.
    """

    #: Run by awaiting ``_arun`` (see ``InlineChunk``).
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
        inbox: AsyncInbox[Any],
    ) -> None:
        """``inbox``: the queue the job waits in, from which ``cancel`` takes it."""
        self._owner = owner
        self.job_id = job_id
        self._call: Callable[[], Awaitable[R]] | None = call
        self.name = name
        self.policy = policy
        self.timeout = timeout
        self._future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._inbox: AsyncInbox[Any] | None = inbox
        self.worker: int | None = None
        self.submitted_at = perf_counter()
        self.started_at: float | None = None
        self.finished_at: float | None = None
        self.attempts = 0

    def __await__(self) -> Generator[Any, None, R]:
        future = self._future
        if not future.done():
            # Each awaiter waits on its own future, so that cancelling the
            # awaiting task cancels that one, not the handle's: the job's fate
            # is then up to cancel(), which refuses once a worker has it.
            waiter = future.get_loop().create_future()
            relay = _Relay(waiter)
            future.add_done_callback(relay)
            try:
                yield from waiter
            except asyncio.CancelledError:
                future.remove_done_callback(relay)
                self.cancel()
                raise
        return future.result()

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

    def add_done_callback(
        self, fn: Callable[[AsyncJobHandle[R]], object], *, context: Any = None
    ) -> None:
        """Call ``fn(handle)`` in the loop when the job ends, as ``asyncio.Future`` does."""
        self._future.add_done_callback(_HandleCallback(fn, self), context=context)

    def remove_done_callback(self, fn: Callable[[AsyncJobHandle[R]], object]) -> int:
        """Remove every registration of ``fn``; how many there were (``asyncio.wait`` uses it)."""
        return self._future.remove_done_callback(fn)  # type: ignore[arg-type]

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._future.get_loop()

    def outcome(self) -> Outcome[R]:
        """How the job ended (call once it is done)."""
        status = self.status
        future = self._future
        result: Any = None
        if status is JobStatus.SUCCEEDED:
            result = future.result()
        elif status is JobStatus.FAILED:
            result = future.exception()
        times = (self.submitted_at, self.started_at, self.finished_at)
        return Outcome.ended(
            self.job_id, status, result, self.worker, times, self.attempts, self.name
        )

    def _finish(self, kind: JobStatus, value: Any) -> None:
        self.finished_at = perf_counter()
        self._call = None
        self._inbox = None
        future = self._future
        if future.done():
            return
        if kind is SUCCEEDED:
            future.set_result(value)
        elif kind is FAILED:
            future.set_exception(value)
        else:
            future.cancel()
        # Nobody may ever await a failed handle: don't let asyncio log
        # "exception was never retrieved" for it.
        if kind is FAILED:
            future.exception()

    async def _arun(self, state: WorkerState) -> None:
        self.worker = state.index
        self.started_at = started = perf_counter()
        if state.first_start is None:
            state.first_start = started
        call = self._call
        assert call is not None
        try:
            kind, value, self.attempts = await run_attempts(
                call, self.policy, self.timeout, state, self._count_attempt
            )
        except asyncio.CancelledError:
            state.cancelled += 1
            self._finish(CANCELLED, None)
            raise
        finally:
            state.busy += perf_counter() - started
        if kind is SUCCEEDED:
            state.succeeded += 1
        else:
            state.failed += 1
        self._finish(kind, value)

    def _count_attempt(self, attempt: int) -> None:
        self.attempts = attempt

    def _cancel_taken(self) -> int:
        self._finish(CANCELLED, None)
        return 1

    def _moved_to(self, queue: AsyncInbox[Any]) -> None:
        """Stolen into another worker's inbox: ``cancel`` looks for it there."""
        if self._inbox is not None:
            self._inbox = queue


class _Relay:
    """A done callback of the handle's future that ends one awaiter's future."""

    __slots__ = ("waiter",)

    def __init__(self, waiter: asyncio.Future[Any]) -> None:
        self.waiter = waiter

    def __call__(self, _future: object) -> None:
        if not self.waiter.done():
            self.waiter.set_result(None)


class _HandleCallback:
    """A done callback of the inner future that passes the handle, not the future;
    equal to the function it wraps, so ``remove_done_callback(fn)`` finds it."""

    __slots__ = ("fn", "handle")

    def __init__(self, fn: Callable[[Any], object], handle: AsyncJobHandle[Any]) -> None:
        self.fn = fn
        self.handle = handle

    def __call__(self, _future: object) -> None:
        self.fn(self.handle)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, _HandleCallback):
            return other.fn == self.fn
        return other == self.fn

    def __hash__(self) -> int:
        return hash(self.fn)
