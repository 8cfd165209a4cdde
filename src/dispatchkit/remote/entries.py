"""An entry a remote worker fetched, made a job ready to run, or the reason to dead-letter it.

An entry is decoded, its job looked up in the worker's registry, its timeout and
retry policy read; an entry that is no job, names no registered job, was
delivered more than ``max_attempts`` times or carries options that cannot be
used becomes a :class:`DeadLetter` instead: the error the dead-letter stream
keeps, and the failure its submitter gets (if one waits). The data path
(datapath.py) runs what :func:`prepare` gives it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from dispatchkit.errors import WorkerLost
from dispatchkit.registry import Registry
from dispatchkit.retry import RetryPolicy
from dispatchkit.transports._codec import CHUNK_JOB, EncodedJob, decode_job, decode_options
from dispatchkit.transports.base import Delivery

__all__ = ["DeadLetter", "Prepared", "prepare", "unprocessable"]

#: A job's function, whether it is a chunk, and its timeout and retry policy (or None).
Prepared = tuple[
    EncodedJob, Callable[..., Any], bool, tuple[float | None, RetryPolicy | None] | None
]


class DeadLetter(NamedTuple):
    """Why an entry goes to the dead-letter stream, and the failure its submitter gets."""

    error: str
    reply: tuple[str, int, BaseException] | None


def unprocessable(job: EncodedJob, exc: Exception) -> DeadLetter:
    """Why an entry whose processing failed (not its job: dispatchkit) is dead-lettered."""
    error = RuntimeError(f"processing the entry failed: {_describe(exc)}")
    return DeadLetter(str(error), (job.reply_to, job.job_id, error))


def _options(
    job: EncodedJob, options: list[Any]
) -> tuple[float | None, RetryPolicy | None] | DeadLetter:
    """A job's timeout and retry policy, or why it is dead-lettered."""
    try:
        return decode_options(options)
    except (LookupError, ValueError, TypeError) as exc:
        bad = ValueError(f"the job's timeout or retry policy cannot be used: {exc}")
        return DeadLetter(str(bad), (job.reply_to, job.job_id, bad))


def _describe(exc: BaseException) -> str:
    try:
        return f"{type(exc).__name__}: {exc}"
    except Exception:  # its message cannot be formed either
        return type(exc).__name__


def prepare(delivery: Delivery, registry: Registry, max_attempts: int) -> Prepared | DeadLetter:
    """The job, its function, whether it is a chunk, its options; or why to dead-letter it."""
    if delivery.payload is None:
        return DeadLetter("not a job entry: no job field", None)
    try:
        job = decode_job(delivery.payload)
    except ValueError as exc:
        return DeadLetter(str(exc), None)
    if delivery.attempts > max_attempts:
        error = WorkerLost(
            f"job {job.name!r} was delivered {delivery.attempts} times and its worker "
            f"died each time (max_attempts={max_attempts})"
        )
        return DeadLetter(str(error), (job.reply_to, job.job_id, error))
    chunk = job.name == CHUNK_JOB
    try:
        if chunk and not (len(job.args) == 2 and isinstance(job.args[1], list)):
            raise KeyError("a chunk entry needs [job name, [arguments, ...]]")
        fn = registry.get(job.args[0] if chunk else job.name)
    except KeyError as exc:
        unknown = LookupError(str(exc.args[0]))
        return DeadLetter(str(unknown), (job.reply_to, job.job_id, unknown))
    options = None if job.options is None or chunk else _options(job, job.options)
    if isinstance(options, DeadLetter):
        return options
    return job, fn, chunk, options
