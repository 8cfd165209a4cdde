"""Calling a remote job's function: one call, or a chunk of calls, on a thread, a loop or a process.

A call gives ``(value, ok, (succeeded, failed))``: a job's failure is its
outcome, never the worker's. A chunk's value is ``[[ok, value or error], ...]``,
one per call, and the chunk itself counts as ok.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from dispatchkit.errors import NeedsAsyncWorker, TimedOut
from dispatchkit.job import Job
from dispatchkit.retry import RetryPolicy
from dispatchkit.transports._codec import CHUNK_JOB, EncodedJob, error_info

if TYPE_CHECKING:
    from dispatchkit.dispatcher import Dispatcher

__all__ = [
    "Called",
    "call_in_loop",
    "call_in_pool",
    "call_in_thread",
    "retry_in_loop",
    "retry_in_pool",
    "retry_in_thread",
    "unread_failure",
]

#: ``(value, ok, (jobs succeeded, jobs failed))``.
Called = tuple[Any, bool, tuple[int, int]]


def call_in_thread(fn: Callable[..., Any], job: EncodedJob, chunk: bool) -> Called:
    """Run the job (or each call of a chunk) on the current thread."""
    if chunk:
        return _chunk_called(_one_in_thread(fn, args, {}) for args in job.args[1])
    ok, value = _one_in_thread(fn, job.args, job.kwargs)
    return value, ok, (1, 0) if ok else (0, 1)


def call_in_pool(pool: Dispatcher, fn: Callable[..., Any], job: EncodedJob, chunk: bool) -> Called:
    """Run the job (or a chunk's calls, spread over the pool) in the pool's processes.

    The calling thread waits. A process that dies fails only the job it ran,
    with ``WorkerLost``.
    """
    if inspect.iscoroutinefunction(fn):
        error = NeedsAsyncWorker(
            "the job is a coroutine function: run its worker with --executor async"
        )
        if chunk:
            return _chunk_called((False, error) for _ in job.args[1])
        return error, False, (0, 1)
    if chunk:
        outcomes = pool.map(fn, job.args[1], star=True, outcomes=True)
        return _chunk_called((o.ok, o.value if o.ok else o.error) for o in outcomes)
    try:
        value = pool.submit(fn, *job.args, **job.kwargs).result()
    except Exception as exc:  # the job's failure (or its process's death) is its outcome
        return exc, False, (0, 1)
    return value, True, (1, 0)


async def call_in_loop(fn: Callable[..., Any], job: EncodedJob, chunk: bool) -> Called:
    """Run the job (or each call of a chunk, one after another) on the running loop.

    Coroutine functions are awaited; plain functions are called right in the
    loop, so they must not block.
    """
    if chunk:
        return _chunk_called([await _one_in_loop(fn, args, {}) for args in job.args[1]])
    ok, value = await _one_in_loop(fn, job.args, job.kwargs)
    return value, ok, (1, 0) if ok else (0, 1)


def unread_failure(job: EncodedJob, called: Called) -> str | None:
    """What failed in a call whose outcome nobody reads, for the worker's log; None: nothing.

    A chunk names its job, how many of its calls failed, and the first error.
    """
    value, ok, (_, failed) = called
    if job.name == CHUNK_JOB and ok:
        if not failed:
            return None
        first = next(error for good, error in value if not good)
        if len(value) == 1:
            return f"job {job.args[0]!r} failed: {first[0]}: {first[1]}"
        calls = f"{failed} of {len(value)} calls failed"
        return f"job {job.args[0]!r}: {calls}, the first: {first[0]}: {first[1]}"
    if ok:
        return None
    try:
        text = f"{type(value).__name__}: {value}"
    except Exception:  # its message cannot be formed
        text = type(value).__name__
    return f"job {job.name!r} failed: {text}"


def _chunk_called(ends: Iterable[tuple[bool, Any]]) -> Called:
    """A chunk's outcome from each call's ``(ok, value or error)``; the chunk itself is ok."""
    results = [[True, value] if ok else [False, error_info(value)] for ok, value in ends]
    failed = sum(not ok for ok, _ in results)
    return results, True, (len(results) - failed, failed)


def _one_in_thread(
    fn: Callable[..., Any], args: list[Any], kwargs: dict[str, Any]
) -> tuple[bool, Any]:
    try:
        value = fn(*args, **kwargs)
    except BaseException as exc:  # even SystemExit: a job's failure is never the worker's
        return False, exc
    if inspect.isawaitable(value):
        if inspect.iscoroutine(value):
            value.close()  # never awaited: say so here, not as a warning later
        return False, NeedsAsyncWorker(
            "the job returned an awaitable (a coroutine function?): "
            "run its worker with --executor async"
        )
    return True, value


async def _one_in_loop(
    fn: Callable[..., Any], args: list[Any], kwargs: dict[str, Any]
) -> tuple[bool, Any]:
    try:
        value = fn(*args, **kwargs)
        if inspect.isawaitable(value):
            value = await value
    except asyncio.CancelledError as exc:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise  # the worker is being stopped
        error = RuntimeError("the job raised CancelledError (it was not stopped)")
        error.__cause__ = exc
        return False, error
    except BaseException as exc:  # even SystemExit: a job's failure is never the worker's
        return False, exc
    return True, value


# -- one job with a timeout or a retry policy: ``(called, runs made)`` -----------------


def retry_in_thread(
    fn: Callable[..., Any], job: EncodedJob, timeout: float | None, policy: RetryPolicy | None
) -> tuple[Called, int]:
    """Run the job on this thread, again after its backoff while ``policy`` says so.

    A timeout fails it at once, as a thread worker refuses one locally: a
    running thread cannot be stopped.
    """
    if timeout is not None:
        error = ValueError(
            "a job timeout needs a worker with --executor process or async: "
            "a running thread cannot be stopped"
        )
        return (error, False, (0, 1)), 1
    runs = 1
    while True:
        ok, value = _one_in_thread(fn, job.args, job.kwargs)
        if ok or policy is None or not policy.should_retry(value, runs):
            return (value, ok, (1, 0) if ok else (0, 1)), runs
        time.sleep(policy.delay(runs))
        runs += 1


def retry_in_pool(
    pool: Dispatcher,
    fn: Callable[..., Any],
    job: EncodedJob,
    timeout: float | None,
    policy: RetryPolicy | None,
) -> tuple[Called, int]:
    """Run the job in the pool's processes, which enforce its timeout and retries."""
    if inspect.iscoroutinefunction(fn):
        return call_in_pool(pool, fn, job, False), 1
    handle = pool.submit_job(Job(fn, tuple(job.args), job.kwargs, timeout=timeout, retry=policy))
    try:
        value = handle.result()
    except Exception as exc:  # the job's failure (a TimedOut included) is its outcome
        return (exc, False, (0, 1)), max(1, handle.attempts)
    return (value, True, (1, 0)), max(1, handle.attempts)


async def retry_in_loop(
    fn: Callable[..., Any], job: EncodedJob, timeout: float | None, policy: RetryPolicy | None
) -> tuple[Called, int]:
    """Run the job on the running loop, cancelled past ``timeout``, retried per ``policy``."""
    runs = 1
    while True:
        try:
            ok, value = await asyncio.wait_for(_one_in_loop(fn, job.args, job.kwargs), timeout)
        except TimeoutError:
            ok, value = False, TimedOut(f"job ran longer than its timeout of {timeout} s")
        if ok or policy is None or not policy.should_retry(value, runs):
            return (value, ok, (1, 0) if ok else (0, 1)), runs
        await asyncio.sleep(policy.delay(runs))
        runs += 1
