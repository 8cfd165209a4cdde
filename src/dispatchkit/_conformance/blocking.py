"""What the two blocking front ends of the kit share: a dispatcher that gives JobHandles."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from typing import Any

from dispatchkit.job import Job, JobHandle, Outcome


class HandleFront:
    """A dispatcher whose ``submit_job`` gives a :class:`~dispatchkit.JobHandle`,
    and whose lifecycle calls block: ``Dispatcher`` and ``RedisDispatcher``.

    ``map`` and ``dispatch`` pass the options a check gives (those of
    :meth:`FrontEnd.map <.face.FrontEnd.map>`) on as given, and only those: a
    default the check leaves out is the dispatcher's own.
    """

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

    def map(self, fn: Callable[..., Any], items: Iterable[Any], **options: Any) -> list[Any]:
        return list(self.dispatcher.map(fn, items, **options))

    def dispatch(self, fn: Callable[..., Any], items: Iterable[Any], **options: Any) -> int:
        return int(self.dispatcher.dispatch(fn, items, **options))

    def close(self) -> None:
        self.dispatcher.close()

    def join(self) -> None:
        self.dispatcher.join()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self.dispatcher.shutdown(wait, cancel_futures=cancel_futures)
