"""Waiting on many handles at once, as ``concurrent.futures.wait`` and ``as_completed`` do.

Built on the public Future interface (``done``, ``cancelled``, ``exception``,
``add_done_callback``), so any handle or future can be waited on, an
``AsyncJobHandle`` too. A :class:`~dispatchkit.job.JobHandle` is a
``concurrent.futures.Future``, so the stdlib's own ``wait`` and
``as_completed`` work on it as well.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ALL_COMPLETED, FIRST_COMPLETED, FIRST_EXCEPTION
from queue import Empty, SimpleQueue
from time import monotonic
from typing import Any, NamedTuple, Protocol, TypeVar

__all__ = [
    "ALL_COMPLETED",
    "FIRST_COMPLETED",
    "FIRST_EXCEPTION",
    "DoneAndNotDone",
    "as_completed",
    "wait",
]


class Waitable(Protocol):
    """What :func:`wait` and :func:`as_completed` need: a future, a handle, an async handle."""

    def done(self) -> bool: ...
    def cancelled(self) -> bool: ...
    def exception(self) -> BaseException | None: ...
    def add_done_callback(self, fn: Callable[[Any], object], /) -> None: ...


W = TypeVar("W", bound=Waitable)


class DoneAndNotDone(NamedTuple):
    done: set[Any]
    not_done: set[Any]


def wait(
    handles: Iterable[Waitable],
    timeout: float | None = None,
    return_when: str = ALL_COMPLETED,
) -> DoneAndNotDone:
    """Wait for handles as ``concurrent.futures.wait`` does for futures.

    ``return_when`` is ``FIRST_COMPLETED``, ``FIRST_EXCEPTION`` or ``ALL_COMPLETED``.
    """
    if return_when not in (FIRST_COMPLETED, FIRST_EXCEPTION, ALL_COMPLETED):
        raise ValueError(f"unknown return_when {return_when!r}")
    pending = set(handles)
    done = {h for h in pending if h.done()}
    pending -= done

    def stop_now() -> bool:
        if not pending:
            return True
        if return_when == FIRST_COMPLETED:
            return bool(done)
        if return_when == FIRST_EXCEPTION:
            return any(not h.cancelled() and h.exception() is not None for h in done)
        return False

    if stop_now():
        return DoneAndNotDone(done, pending)
    finished: SimpleQueue[Waitable] = SimpleQueue()
    for handle in pending:
        handle.add_done_callback(finished.put)
    deadline = None if timeout is None else monotonic() + timeout
    while not stop_now():
        remaining = None if deadline is None else deadline - monotonic()
        if remaining is not None and remaining <= 0:
            break
        try:
            handle = finished.get(timeout=remaining)
        except Empty:
            break
        pending.discard(handle)
        done.add(handle)
    return DoneAndNotDone(done, pending)


def as_completed(handles: Iterable[W], timeout: float | None = None) -> Iterator[W]:
    """Yield handles as their jobs finish, like ``concurrent.futures.as_completed``.

    Raises:
        TimeoutError: some jobs had not finished after ``timeout`` seconds.
    """
    pending = set(handles)
    finished: SimpleQueue[W] = SimpleQueue()
    for handle in pending:
        handle.add_done_callback(finished.put)
    deadline = None if timeout is None else monotonic() + timeout
    while pending:
        remaining = None if deadline is None else deadline - monotonic()
        try:
            if remaining is not None and remaining <= 0:
                raise Empty
            handle = finished.get(timeout=remaining)
        except Empty:
            raise TimeoutError(f"{len(pending)} jobs unfinished after {timeout} s") from None
        pending.discard(handle)
        yield handle
