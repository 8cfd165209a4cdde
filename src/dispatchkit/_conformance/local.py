"""Conformance targets of the local front ends: ``Dispatcher`` and ``AsyncDispatcher``."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Coroutine, Hashable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from dispatchkit.async_dispatcher import AsyncDispatcher, AsyncJobHandle
from dispatchkit.dispatcher import Dispatcher
from dispatchkit.job import Job, Outcome
from dispatchkit.stats import DispatcherStats

from .blocking import HandleFront
from .face import Capabilities, Counts, FrontEnd
from .loop import owned_on_loop

__all__ = ["AsyncTarget", "LocalTarget"]

T = TypeVar("T")


def counts_of(stats: DispatcherStats) -> Counts:
    return Counts(
        stats.submitted,
        stats.succeeded,
        stats.failed,
        stats.cancelled,
        tuple(w.succeeded + w.failed for w in stats.workers),
    )


class SyncFront(HandleFront):
    """A :class:`~dispatchkit.Dispatcher` (thread or process workers) as a front end."""

    dispatcher: Dispatcher

    @property
    def workers(self) -> int:
        return self.dispatcher.workers

    def counts(self) -> Counts:
        return counts_of(self.dispatcher.stats())

    def stop(self, cancel: bool = True) -> Counts:
        return counts_of(self.dispatcher.stop(cancel=cancel))


@dataclass
class LocalTarget:
    """``Dispatcher(executor=kind)``: ``thread`` or ``process`` workers."""

    kind: str
    name: str = ""
    capabilities: Capabilities = field(default_factory=Capabilities)

    def __post_init__(self) -> None:
        self.name = self.name or self.kind

    @contextmanager
    def open(
        self, workers: int, *, strategy: str, chunk: int = 1, block: int = 4, steal: bool = True
    ) -> Iterator[FrontEnd]:
        dispatcher = Dispatcher(
            workers, executor=self.kind, strategy=strategy, chunk=chunk, block=block, steal=steal
        )
        try:
            yield SyncFront(dispatcher)
        finally:
            # A check that failed half-way leaves queued jobs: drop them.
            dispatcher.stop(cancel=True, timeout=30)


class AsyncFront:
    """An :class:`~dispatchkit.AsyncDispatcher` on a loop in a background thread.

    Every call is carried to the loop with ``run_coroutine_threadsafe``, so the
    dispatcher is only ever touched from its own loop.
    """

    def __init__(self, dispatcher: AsyncDispatcher, loop: asyncio.AbstractEventLoop) -> None:
        self.dispatcher = dispatcher
        self._loop = loop

    def _run(self, coroutine: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    def _call(self, fn: Callable[[], Any]) -> Any:
        """``fn()`` on the loop, awaited if it returns an awaitable."""

        async def call() -> Any:
            value = fn()
            return await value if inspect.isawaitable(value) else value

        return self._run(call())

    @property
    def workers(self) -> int:
        return self.dispatcher.workers

    def submit(self, fn: Callable[..., Any], /, *args: Any, key: Hashable = None) -> Any:
        return self._run(self.dispatcher.submit_job(Job(fn, args, key=key)))

    def _settled(self, handle: AsyncJobHandle[Any], timeout: float) -> None:
        async def settle() -> None:
            done = asyncio.Event()
            handle.add_done_callback(lambda _: done.set())
            if not handle.done():
                await done.wait()

        self._run(settle(), timeout)

    def outcome(self, handle: AsyncJobHandle[Any], timeout: float = 30) -> Outcome[Any]:
        self._settled(handle, timeout)
        return handle.outcome()

    def result(self, handle: AsyncJobHandle[Any], timeout: float = 30) -> Any:
        self._settled(handle, timeout)
        return handle.result()

    def cancel(self, handle: AsyncJobHandle[Any]) -> bool:
        return bool(self._call(handle.cancel))

    def map(self, fn: Callable[..., Any], items: Iterable[Any], **options: Any) -> list[Any]:
        async def collect() -> list[Any]:
            return [value async for value in self.dispatcher.map(fn, items, **options)]

        return self._run(collect())

    def dispatch(self, fn: Callable[..., Any], items: Iterable[Any], **options: Any) -> int:
        return self._run(self.dispatcher.dispatch(fn, items, **options))

    def counts(self) -> Counts:
        return counts_of(self._call(self.dispatcher.stats))

    def close(self) -> None:
        self._call(self.dispatcher.close)

    def join(self) -> None:
        self._call(self.dispatcher.join)

    def stop(self, cancel: bool = True) -> Counts:
        return counts_of(self._run(self.dispatcher.stop(cancel=cancel)))

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._run(self.dispatcher.shutdown(wait, cancel_futures=cancel_futures))


@dataclass
class AsyncTarget:
    """``AsyncDispatcher`` entered by one owner task on a loop in a background thread."""

    name: str = "async"
    capabilities: Capabilities = field(default_factory=lambda: Capabilities(async_jobs=True))

    @contextmanager
    def open(
        self, workers: int, *, strategy: str, chunk: int = 1, block: int = 4, steal: bool = True
    ) -> Iterator[FrontEnd]:
        dispatcher = AsyncDispatcher(
            workers, strategy=strategy, chunk=chunk, block=block, steal=steal
        )
        with owned_on_loop(dispatcher, name="conformance-loop", stop_first=True) as loop:
            yield AsyncFront(dispatcher, loop)
