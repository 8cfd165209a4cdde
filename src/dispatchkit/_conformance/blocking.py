"""What the two blocking front ends of the kit share: a dispatcher that gives JobHandles."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

from dispatchkit.job import Job, JobHandle, Outcome


class HandleFront:
    """A dispatcher whose ``submit_job`` gives a :class:`~dispatchkit.JobHandle`,
    and whose lifecycle calls block: ``Dispatcher`` and ``RedisDispatcher``."""

    def __init__(self, dispatcher: Any) -> None:
        self.dispatcher = dispatcher

    def submit(self, fn: Callable[..., Any], /, *args: Any, key: Hashable = None) -> Any:
        return self.dispatcher.submit_job(Job(fn, args, key=key))

    def outcome(self, handle: JobHandle[Any], timeout: float = 30) -> Outcome[Any]:
        return handle.outcome(timeout)

    def result(self, handle: JobHandle[Any], timeout: float = 30) -> Any:
        return handle.result(timeout)

    def cancel(self, handle: JobHandle[Any]) -> bool:
        return handle.cancel()

    def close(self) -> None:
        self.dispatcher.close()

    def join(self) -> None:
        self.dispatcher.join()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self.dispatcher.shutdown(wait, cancel_futures=cancel_futures)
