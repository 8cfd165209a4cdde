"""What comes back from remote workers: outcomes as local values and errors, and the counts."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from dispatchkit.errors import RemoteJobError, RemoteTraceback, TimedOut, WorkerLost
from dispatchkit.job import JobHandle

__all__ = ["RemoteStats", "remote_error", "values"]


@dataclass(frozen=True, slots=True)
class RemoteStats:
    """What a :class:`RedisDispatcher` has done (a chunk counts as one job here).

    Attributes:
        published: jobs written to Redis.
        succeeded: outcomes received that are values.
        failed: outcomes received that are errors.
        duplicates: outcomes dropped because the job had settled already (it
            ran again after its worker died: at-least-once delivery).
        pending: jobs submitted whose outcome has not arrived.
    """

    published: int
    succeeded: int
    failed: int
    duplicates: int
    pending: int


def remote_error(info: Any) -> BaseException:
    """The local exception for a remote ``[type name, message, traceback]``."""
    type_name, message, remote_tb = [str(part) for part in [*list(info), "", "", ""][:3]]
    error: BaseException
    if type_name.endswith("WorkerLost"):
        error = WorkerLost(message)
    elif type_name == "dispatchkit.errors.TimedOut":
        error = TimedOut(message)
    else:
        error = RemoteJobError(type_name, message, remote_tb)
    # As concurrent.futures.process does: the remote traceback is the cause.
    error.__cause__ = RemoteTraceback(remote_tb) if remote_tb else None
    return error


def values(handle: JobHandle[Any], chunked: bool) -> Iterator[Any]:
    """The value(s) of a job or of a chunk of jobs, raising the first error."""
    if not chunked:
        yield handle.result()
        return
    for ok, value in handle.result():
        if not ok:
            raise remote_error(value)
        yield value
