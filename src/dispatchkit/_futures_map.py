"""``Dispatcher.map``: ``concurrent.futures.Executor.map``'s call, over the core's map window.

    map(fn, *iterables, timeout, chunksize, buffersize, ...) ──checked──▶ ThreadFrontEnd._map

The stdlib's arguments (several iterables zipped, ``timeout``, ``chunksize``,
``buffersize``) and dispatchkit's (``ordered``, ``outcomes``, ``star``, ``key``,
``window``) are checked here, once per call, and become one run of the
blocking map loop (:mod:`dispatchkit._thread_front`).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Iterator
from time import monotonic
from typing import Any, Literal, TypeVar, overload

from ._thread_front import ThreadFrontEnd
from .job import Outcome

__all__ = ["FuturesMap"]

R = TypeVar("R")


class FuturesMap(ThreadFrontEnd):
    """The ``map`` of a blocking front end, with ``concurrent.futures``' signature."""

    @overload
    def map(
        self,
        fn: Callable[..., R],
        *iterables: Iterable[Any],
        timeout: float | None = ...,
        chunksize: int = ...,
        buffersize: int | None = ...,
        ordered: bool = ...,
        outcomes: Literal[False] = ...,
        star: bool = ...,
        key: Callable[[Any], Hashable] | None = ...,
        window: int | None = ...,
    ) -> Iterator[R]: ...

    @overload
    def map(
        self,
        fn: Callable[..., R],
        *iterables: Iterable[Any],
        timeout: float | None = ...,
        chunksize: int = ...,
        buffersize: int | None = ...,
        ordered: bool = ...,
        outcomes: Literal[True],
        star: bool = ...,
        key: Callable[[Any], Hashable] | None = ...,
        window: int | None = ...,
    ) -> Iterator[Outcome[R]]: ...

    def map(
        self,
        fn: Callable[..., R],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int = 1,
        buffersize: int | None = None,
        ordered: bool = True,
        outcomes: bool = False,
        star: bool = False,
        key: Callable[[Any], Hashable] | None = None,
        window: int | None = None,
    ) -> Iterator[R] | Iterator[Outcome[R]]:
        """Run ``fn`` over the inputs and yield the results as they are needed,
        as ``concurrent.futures.Executor.map`` does, with bounded memory.

        Several iterables are zipped: ``fn(a, b)`` for each pair, as the builtin
        ``map`` does. The inputs are consumed lazily: at most ``window`` jobs
        (default: what all inboxes hold) are in flight or waiting to be yielded,
        so memory stays bounded however long the input is.

        Args:
            fn: the job function, called as ``fn(item)`` (``fn(*item)`` with
                ``star``; ``fn(*items)`` with several iterables).
            iterables: the inputs.
            timeout: seconds from this call after which the iterator raises
                ``TimeoutError`` instead of waiting for a result.
            chunksize: jobs per hand-off to a worker; 1 (the default) keeps the
                dispatcher's own ``chunk``.
            buffersize: ``concurrent.futures``' name for ``window``.
            ordered: yield in input order (True) or as jobs finish (False).
            outcomes: yield an :class:`Outcome` per item instead of raising.
            star: unpack each item as positional arguments.
            key: for the ``key`` strategy, a function giving each item's key.
            window: most jobs in flight or waiting to be yielded at once.

        Raises:
            ClosedError: the dispatcher is closed.
            ForkedError: this is a copy made by ``os.fork()``.
            ValueError: a bad ``window``, ``buffersize`` or ``chunksize``, both
                ``window`` and ``buffersize``, or the ``key`` strategy without ``key``.
            TypeError: a ``buffersize`` or ``chunksize`` that is not an int.
            TimeoutError: from the iterator, past ``timeout``.
            BaseException: without ``outcomes``, the exception of a failed job,
                raised when its result is reached (the remaining jobs go on).
        """
        self._check_bulk(key)
        items = _zipped(iterables, star)
        chunk = _checked_chunksize(chunksize)
        window = _one_window(window, buffersize)
        deadline = None if timeout is None else monotonic() + timeout
        return self._map(
            fn, items, outcomes, star or len(iterables) > 1, key,
            self._map_window(window, ordered), deadline, chunk,
        )  # fmt: skip


def _zipped(iterables: tuple[Iterable[Any], ...], star: bool) -> Iterable[Any]:
    """The inputs of one ``map`` call: one iterable as it is, several zipped.

    Raises:
        ValueError: ``star`` with several iterables (they are unpacked already).
    """
    if len(iterables) == 1:
        return iterables[0]
    if star:
        raise ValueError("star applies to one iterable; several are zipped and unpacked already")
    return zip(*iterables, strict=False)  # the shortest input ends it, as in the stdlib


def _checked_chunksize(chunksize: int) -> int | None:
    """The chunk of one ``map`` call: None (the dispatcher's) for 1.

    Raises:
        TypeError: not an int.
        ValueError: under 1.
    """
    if isinstance(chunksize, bool) or not isinstance(chunksize, int):
        raise TypeError(f"chunksize must be an int, got {chunksize!r}")
    if chunksize < 1:
        raise ValueError("chunksize must be >= 1.")
    return None if chunksize == 1 else chunksize


def _one_window(window: int | None, buffersize: int | None) -> int | None:
    """The window of one ``map`` call, given by dispatchkit's name or the stdlib's.

    Raises:
        ValueError: both given, or a ``buffersize`` under 1.
        TypeError: a ``buffersize`` that is not an int.
    """
    if buffersize is None:
        return window
    if window is not None:
        raise ValueError("give window or buffersize, not both (they are one setting)")
    if isinstance(buffersize, bool) or not isinstance(buffersize, int):
        raise TypeError(f"buffersize must be an int or None, got {buffersize!r}")
    if buffersize < 1:
        raise ValueError("buffersize must be None or > 0")
    return buffersize
