"""Jobs, their handles and their outcomes.

A :class:`JobHandle` is what ``Dispatcher.submit`` returns: a real
``concurrent.futures.Future`` (a subclass), so the stdlib's ``wait``,
``as_completed``, ``asyncio.wrap_future`` and ``loop.run_in_executor`` take
it. It costs far less than a stdlib Future: it never runs ``Future.__init__``,
so it has no ``Condition`` of its own until someone waits through the stdlib.
The worker that runs the job writes its state; anything waiting on it
(``result()``, callbacks, :func:`wait`, :func:`as_completed`) registers a
*hook* under one module-wide lock, taken only when there is something to wake
(:mod:`dispatchkit._handle_hooks`, which also shows a handle to the stdlib's
``wait`` and ``as_completed``).
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Hashable, Mapping
from concurrent.futures import InvalidStateError
from dataclasses import dataclass, field
from time import perf_counter
from typing import TYPE_CHECKING, Any, Generic, NamedTuple, TypeVar

from . import _waiting
from ._durations import check_seconds
from ._handle_hooks import HookedFuture
from .core.status import JobStatus
from .errors import JobCancelled
from .retry import RetryPolicy, run_with_policy

if TYPE_CHECKING:
    from ._inbox import Inbox

# Kept importable from here, where they used to live.
ALL_COMPLETED, FIRST_COMPLETED = _waiting.ALL_COMPLETED, _waiting.FIRST_COMPLETED
FIRST_EXCEPTION, DoneAndNotDone = _waiting.FIRST_EXCEPTION, _waiting.DoneAndNotDone
as_completed, wait = _waiting.as_completed, _waiting.wait

__all__ = [
    "Job",
    "JobHandle",
    "JobStatus",
    "Outcome",
    "PolicyHandle",
]

T = TypeVar("T")
R = TypeVar("R")


# A handle keeps its state as a JobStatus member and compares it by identity:
# as cheap as an int, with no table between the two (``result()`` is on the hot path).
_PENDING, _RUNNING = JobStatus.PENDING, JobStatus.RUNNING
_SUCCEEDED, _FAILED, _CANCELLED = JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED


@dataclass(frozen=True, slots=True)
class Job(Generic[R]):
    """A callable with its arguments, and optionally a name and a key.

    Use it with ``Dispatcher.submit_job`` when a job needs a key (for the
    ``key`` strategy) or a name; ``submit(fn, *args, **kwargs)`` is shorthand
    for a job with neither.

    Raises:
        TypeError: ``fn`` is not callable, or ``timeout`` is not a number.
        ValueError: ``timeout`` is not a finite number of seconds > 0 (in range).
    """

    fn: Callable[..., R]
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    key: Hashable = None
    name: str | None = None
    #: Seconds the job may run (process and async workers only: a thread
    #: cannot be stopped).
    timeout: float | None = None
    #: Retries for this job, instead of the dispatcher's policy.
    retry: RetryPolicy | None = None

    def __post_init__(self) -> None:
        if not callable(self.fn):
            raise TypeError(f"a job needs a callable, not {type(self.fn).__name__}")
        if self.timeout is not None:
            check_seconds("timeout", self.timeout)


class Outcome(NamedTuple, Generic[R]):
    """How one job ended: its value or its exception, where and when it ran.

    Timestamps are ``time.perf_counter()`` readings (seconds); ``started_at``
    and ``worker`` are ``None`` for a job cancelled before it started.

    An immutable record (a named tuple: a ``map(outcomes=True)`` builds one per
    job, and a tuple is built in C where a frozen dataclass sets each field
    through ``object.__setattr__``, about ten times the cost).
    """

    job_id: int
    status: JobStatus
    value: R | None = None
    error: BaseException | None = None
    worker: int | None = None
    submitted_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    attempts: int = 0
    name: str | None = None

    @property
    def ok(self) -> bool:
        return self.status is JobStatus.SUCCEEDED

    @property
    def traceback(self) -> str | None:
        """The formatted traceback of the job's exception, if it failed."""
        if self.error is None:
            return None
        return "".join(traceback.format_exception(self.error))

    @property
    def latency(self) -> float | None:
        """Seconds from submission to finish."""
        if self.submitted_at is None or self.finished_at is None:
            return None
        return self.finished_at - self.submitted_at

    @classmethod
    def ended(
        cls,
        job_id: int,
        status: JobStatus,
        result: Any,
        worker: int | None,
        times: tuple[float | None, float | None, float | None],
        attempts: int,
        name: str | None = None,
    ) -> Outcome[Any]:
        """The outcome of a finished job: ``result`` is its value if it succeeded, else
        its exception (or None); ``times`` are (submitted, started, finished)."""
        ok = status is JobStatus.SUCCEEDED
        submitted_at, started_at, finished_at = times
        return tuple.__new__(cls, (
            job_id, status, result if ok else None, None if ok else result, worker,
            submitted_at, started_at, finished_at, attempts, name,
        ))  # fmt: skip

    def unwrap(self) -> R:
        """Return the value, or raise the job's exception (JobCancelled if cancelled)."""
        if self.status is JobStatus.SUCCEEDED:
            return self.value  # type: ignore[return-value]
        if self.status is JobStatus.CANCELLED:
            raise JobCancelled(f"job {self.job_id} was cancelled")
        if self.error is not None:
            raise self.error
        raise RuntimeError(f"job {self.job_id} has not finished ({self.status.value})")


class JobHandle(HookedFuture[R]):
    """The future result of one submitted job: a ``concurrent.futures.Future``.

    ``cancel``, ``running``, ``done``, ``cancelled``, ``result(timeout)``,
    ``exception(timeout)``, ``add_done_callback`` and
    ``set_running_or_notify_cancel`` behave as the stdlib documents; the
    stdlib's ``wait`` and ``as_completed`` work on handles, mixed with other
    futures. A dispatcher owns the job's result: ``set_result`` and
    ``set_exception`` raise ``InvalidStateError``. On top: ``status``,
    ``outcome()``, ``attempts``, ``worker`` and the timestamps.
    """

    # Only what submit needs is set in __init__: every store costs, and
    # ``submit`` is the hot path. The rest is set by the worker that runs it.
    __slots__ = (
        "_args",
        "_attempts",
        "_finished_at",
        "_fn",
        "_kwargs",
        "_queue",
        "_result",
        "_started_at",
        "_status",
        "_worker",
        "job_id",
        "name",
        "submitted_at",
    )

    _result: Any  # the value, or the exception of a failed job

    def __init__(
        self,
        job_id: int,
        fn: Callable[..., R],
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
        name: str | None = None,
        queue: Inbox[Any] | None = None,
    ) -> None:
        self.job_id = job_id
        self.name = name
        self._fn: Callable[..., R] | None = fn
        self._args = args
        self._kwargs = kwargs
        self._status = _PENDING
        self._hooks: list[Callable[[JobHandle[R]], object]] | None = None
        self._queue = queue
        self.submitted_at = perf_counter()
        # Future.__init__ is not called on purpose: its Condition and waiter
        # list are made only when the stdlib waits on this handle (_condition).

    @property
    def worker(self) -> int | None:
        """Index of the worker that ran the job (None until one took it)."""
        return getattr(self, "_worker", None)

    @property
    def started_at(self) -> float | None:
        return getattr(self, "_started_at", None)

    @property
    def finished_at(self) -> float | None:
        return getattr(self, "_finished_at", None)

    @property
    def attempts(self) -> int:
        """Times a worker started the job."""
        return getattr(self, "_attempts", 1 if hasattr(self, "_started_at") else 0)

    def __repr__(self) -> str:
        return f"<JobHandle {self.job_id} {self._status.value}>"

    # -- the Future interface ------------------------------------------------

    @property
    def status(self) -> JobStatus:
        return self._status

    def done(self) -> bool:
        return self._status is not _PENDING and self._status is not _RUNNING

    def running(self) -> bool:
        return self._status is _RUNNING

    def cancelled(self) -> bool:
        return self._status is _CANCELLED

    def cancel(self) -> bool:
        """Cancel the job if no worker has taken it yet.

        Returns True if the job is (now) cancelled, False if it is running or
        has finished.
        """
        if self._status is _CANCELLED:
            return True
        queue = self._queue
        if self._status is not _PENDING or queue is None or not queue.cancel(self):
            return False
        self._cancel_taken()
        return True

    def result(self, timeout: float | None = None) -> R:
        """Wait for the job and return its value, or raise its exception.

        Raises:
            TimeoutError: the job did not finish within ``timeout`` seconds.
            JobCancelled: the job was cancelled.
            BaseException: whatever the job raised.
        """
        if self._status is _SUCCEEDED:
            return self._result  # type: ignore[no-any-return,unused-ignore]
        self._wait(timeout)
        if self._status is _SUCCEEDED:
            return self._result  # type: ignore[no-any-return,unused-ignore]
        if self._status is _CANCELLED:
            raise JobCancelled(f"job {self.job_id} was cancelled")
        raise self._result

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """Wait for the job and return its exception (None if it succeeded).

        Raises:
            TimeoutError: the job did not finish within ``timeout`` seconds.
            JobCancelled: the job was cancelled.
        """
        self._wait(timeout)
        if self._status is _CANCELLED:
            raise JobCancelled(f"job {self.job_id} was cancelled")
        return self._result if self._status is _FAILED else None

    def outcome(self, timeout: float | None = None) -> Outcome[R]:
        """Wait for the job and return its :class:`Outcome` (never raises the job's error).

        Raises:
            TimeoutError: the job did not finish within ``timeout`` seconds.
        """
        self._wait(timeout)
        times = (self.submitted_at, self.started_at, self.finished_at)
        # A cancelled job's outcome carries neither a value nor an error.
        result = None if self._status is _CANCELLED else getattr(self, "_result", None)
        return Outcome.ended(
            self.job_id, self._status, result, self.worker, times, self.attempts, self.name
        )

    def set_running_or_notify_cancel(self) -> bool:
        """As ``concurrent.futures.Future``: False if cancelled, else mark it running.

        Raises:
            RuntimeError: the job is already running or has finished.
        """
        if self._status is _CANCELLED:
            return False
        if self._status is _PENDING:
            self._status = _RUNNING
            return True
        raise RuntimeError(f"job {self.job_id} is in an unexpected state ({self._status.value})")

    def set_result(self, result: R) -> None:
        """Refused: the dispatcher that runs the job sets its result.

        Raises:
            InvalidStateError: always.
        """
        raise InvalidStateError(f"job {self.job_id}: its dispatcher sets its result")

    def set_exception(self, exception: BaseException | None) -> None:
        """Refused: the dispatcher that runs the job sets its exception.

        Raises:
            InvalidStateError: always.
        """
        raise InvalidStateError(f"job {self.job_id}: its dispatcher sets its exception")

    # -- used by workers -----------------------------------------------------

    def _run(self, worker: Any) -> None:
        """Run the job on ``worker`` (a worker's private state) and record how it ended."""
        self._worker = worker.index
        self._started_at = perf_counter()
        self._status = _RUNNING
        fn = self._fn
        assert fn is not None
        try:
            self._result = fn(*self._args, **self._kwargs)
        except BaseException as exc:  # a job's failure, whatever it is, never stops a worker
            self._result = exc
            self._finished_at = perf_counter()
            self._status = _FAILED
            worker.failed += 1
        else:
            self._finished_at = perf_counter()
            self._status = _SUCCEEDED
            worker.succeeded += 1
        # Drop what the job referred to, so a handle kept for its result does
        # not keep the arguments alive too.
        self._fn = self._args = self._kwargs = self._queue = None  # type: ignore[assignment]
        if self._hooks is not None:
            self._fire_hooks()

    # -- for worker pools that run the job elsewhere -------------------------
    # As ``Future.set_running_or_notify_cancel`` is for executors: public, so
    # that a pool need not reach into the handle, but not for users.

    @property
    def call(self) -> tuple[Callable[..., R], tuple[Any, ...], Mapping[str, Any]]:
        """The job's function, positional and keyword arguments, until it ends.

        Raises:
            RuntimeError: the job has ended (its call is dropped then).
        """
        fn = self._fn
        if fn is None:
            raise RuntimeError(f"job {self.job_id} has ended: its call is gone")
        return fn, self._args, self._kwargs

    def settle(
        self,
        worker: int,
        status: JobStatus,
        value: Any,
        started: float | None,
        finished: float | None,
        attempts: int,
    ) -> None:
        """Record how the job ended elsewhere (a worker process, a remote worker)
        and wake its waiters.

        Args:
            worker: index of the worker that ran it (kept only if it started).
            status: a finished status (succeeded, failed or cancelled).
            value: the value if it succeeded, else its exception (or None).
            started: when it started (None: it never did).
            finished: when it finished (None: now).
            attempts: times a worker started it.
        """
        if started is not None:
            self._worker = worker
            self._started_at = started
        self._attempts = attempts
        self._finish(status, value, perf_counter() if finished is None else finished)

    def _finish(self, kind: JobStatus, value: Any, finished: float) -> None:
        """Record how the job ended (a finished status) and wake waiters."""
        self._result = value
        self._finished_at = finished
        self._status = kind
        self._fn = self._args = self._kwargs = self._queue = None  # type: ignore[assignment]
        if self._hooks is not None:
            self._fire_hooks()

    def _cancel_taken(self) -> None:
        """Mark cancelled a job that was removed from its queue (nobody else holds it)."""
        self._finished_at = perf_counter()
        self._status = _CANCELLED
        self._fn = self._args = self._kwargs = self._queue = None  # type: ignore[assignment]
        if self._hooks is not None:
            self._fire_hooks()

    def _job_count(self) -> int:
        return 1

    def _moved_to(self, queue: Inbox[Any]) -> None:
        """Stolen into another worker's inbox: ``cancel`` looks for it there."""
        if self._status is _PENDING:
            self._queue = queue


class PolicyHandle(JobHandle[R]):
    """A handle whose job has a retry policy or a timeout.

    A separate class, so that the plain handle's hot path pays nothing for them.
    """

    __slots__ = ("retry", "timeout")

    def __init__(
        self,
        *handle: Any,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
    ) -> None:
        """``handle`` as for :class:`JobHandle`; ``retry`` and ``timeout`` the job's own."""
        super().__init__(*handle)
        self.retry = retry
        self.timeout = timeout

    def _run(self, worker: Any) -> None:
        """Run the job on a thread worker, retrying as its policy says."""
        self._worker = worker.index
        self._started_at = perf_counter()
        self._status = _RUNNING
        fn, args, kwargs = self._fn, self._args, self._kwargs
        assert fn is not None
        policy = self.retry or worker.control.retry
        kind, value, self._attempts = run_with_policy(
            lambda: fn(*args, **kwargs), policy, worker.control.stop_event
        )
        self._finish(kind, value, perf_counter())
        worker.count(kind)
