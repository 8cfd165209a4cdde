"""Test helpers: a conformance kit for every front end, and a synchronous harness.

The conformance kit checks the library's promises on any front end with one
call each, in the spirit of trio's ``check_one_way_stream``: a *target*
(:class:`Target`) opens a front end with given workers, strategy and chunk
and gives it one uniform face (:class:`FrontEnd`); every ``check_*`` function
takes a target and raises ``AssertionError`` where a promise is broken::

    from dispatchkit.testing import CHECKS, TARGETS

    with TARGETS["thread"]() as target:
        for check in CHECKS:
            check(target)

:data:`TARGETS` names the thread, process, asyncio and Redis (real server,
``dispatchkit worker`` processes) targets; :data:`CHECKS` lists every check.
A target declares its :class:`Capabilities` where a kind differs by design.

``open_harness("thread" | "process" | "async", ...)`` gives a :class:`Harness`
whose ``submit``, ``map``, ``dispatch``, ``join`` and ``stop`` behave the same
whatever runs the jobs. For ``async`` the dispatcher lives in an event loop on
a background thread, entered and left by one owner task (as its TaskGroup
requires), and every call is carried over with ``run_coroutine_threadsafe``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol

from ._conformance.accounting import check_accounting
from ._conformance.bulk import (
    check_chunked_map_counts,
    check_dispatch,
    check_map_options,
    check_window_validation,
)
from ._conformance.face import Capabilities, Counts, FrontEnd, Target
from ._conformance.lifecycle import (
    check_cancel,
    check_close_join_idempotent,
    check_stop_cancels_queued,
    check_stop_shutdown_idempotent,
)
from ._conformance.local import AsyncTarget, LocalTarget
from ._conformance.loop import owned_on_loop
from ._conformance.placement import (
    check_batch_blocks,
    check_error_isolation,
    check_key_order,
    check_map,
    check_pull_runs_each_job_once,
    check_round_robin_spread,
)
from ._conformance.remote import Cluster, RemoteTarget, ServerCluster, TargetUnavailable
from ._conformance.targets import CHECKS, TARGETS, TargetEntry
from .async_dispatcher import AsyncDispatcher, AsyncJobHandle
from .dispatcher import Dispatcher
from .executors.registry import kind_names, worker_kind
from .job import Job, JobHandle, Outcome
from .stats import DispatcherStats

__all__ = [
    "CHECKS",
    "EXECUTORS",
    "TARGETS",
    "AsyncTarget",
    "Capabilities",
    "Cluster",
    "Counts",
    "FrontEnd",
    "Harness",
    "LocalTarget",
    "RemoteTarget",
    "ServerCluster",
    "Target",
    "TargetEntry",
    "TargetUnavailable",
    "check_accounting",
    "check_batch_blocks",
    "check_cancel",
    "check_chunked_map_counts",
    "check_close_join_idempotent",
    "check_dispatch",
    "check_error_isolation",
    "check_key_order",
    "check_map",
    "check_map_options",
    "check_pull_runs_each_job_once",
    "check_round_robin_spread",
    "check_stop_cancels_queued",
    "check_stop_shutdown_idempotent",
    "check_window_validation",
    "open_harness",
]

#: Every worker kind.
#: Every worker kind, from the registry.
EXECUTORS = kind_names()


class Harness(Protocol):
    def submit(self, fn: Callable[..., Any], *args: Any, key: Hashable = None) -> Any: ...
    def outcome(self, handle: Any, timeout: float = 60) -> Outcome[Any]: ...
    def cancel(self, handle: Any) -> bool: ...
    def map(
        self, fn: Callable[..., Any], items: Iterable[Any], key: Callable[[Any], Hashable] | None
    ) -> list[Outcome[Any]]: ...
    def dispatch(
        self, fn: Callable[..., Any], items: Iterable[Any], key: Callable[[Any], Hashable] | None
    ) -> int: ...
    def join(self) -> DispatcherStats: ...
    def stop(self) -> DispatcherStats: ...


class _SyncHarness:
    def __init__(self, dispatcher: Dispatcher) -> None:
        self.dispatcher = dispatcher

    def submit(self, fn: Callable[..., Any], *args: Any, key: Hashable = None) -> JobHandle[Any]:
        return self.dispatcher.submit_job(Job(fn, args, key=key))

    def outcome(self, handle: JobHandle[Any], timeout: float = 60) -> Outcome[Any]:
        return handle.outcome(timeout)

    def cancel(self, handle: JobHandle[Any]) -> bool:
        return handle.cancel()

    def map(
        self, fn: Callable[..., Any], items: Iterable[Any], key: Callable[[Any], Hashable] | None
    ) -> list[Outcome[Any]]:
        return list(self.dispatcher.map(fn, items, outcomes=True, key=key))

    def dispatch(
        self, fn: Callable[..., Any], items: Iterable[Any], key: Callable[[Any], Hashable] | None
    ) -> int:
        return self.dispatcher.dispatch(fn, items, key=key)

    def join(self) -> DispatcherStats:
        self.dispatcher.join()
        return self.dispatcher.stats()

    def stop(self) -> DispatcherStats:
        return self.dispatcher.stop(cancel=True)


class _AsyncHarness:
    def __init__(self, dispatcher: AsyncDispatcher, loop: asyncio.AbstractEventLoop) -> None:
        self.dispatcher = dispatcher
        self._loop = loop

    def _run(self, coroutine: Any, timeout: float = 60) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    def submit(
        self, fn: Callable[..., Any], *args: Any, key: Hashable = None
    ) -> AsyncJobHandle[Any]:
        return self._run(self.dispatcher.submit_job(Job(fn, args, key=key)))  # type: ignore[no-any-return]

    def outcome(self, handle: AsyncJobHandle[Any], timeout: float = 60) -> Outcome[Any]:
        async def settle() -> Outcome[Any]:
            await asyncio.wait([handle._future])
            return handle.outcome()

        return self._run(settle(), timeout)  # type: ignore[no-any-return]

    def cancel(self, handle: AsyncJobHandle[Any]) -> bool:
        async def cancel() -> bool:
            return handle.cancel()

        return self._run(cancel())  # type: ignore[no-any-return]

    def map(
        self, fn: Callable[..., Any], items: Iterable[Any], key: Callable[[Any], Hashable] | None
    ) -> list[Outcome[Any]]:
        async def collect() -> list[Outcome[Any]]:
            return [o async for o in self.dispatcher.map(fn, items, outcomes=True, key=key)]

        return self._run(collect())  # type: ignore[no-any-return]

    def dispatch(
        self, fn: Callable[..., Any], items: Iterable[Any], key: Callable[[Any], Hashable] | None
    ) -> int:
        return self._run(self.dispatcher.dispatch(fn, items, key=key))  # type: ignore[no-any-return]

    def join(self) -> DispatcherStats:
        self._run(self.dispatcher.join())
        return self.dispatcher.stats()

    def stop(self) -> DispatcherStats:
        return self._run(self.dispatcher.stop(cancel=True))  # type: ignore[no-any-return]


@contextmanager
def open_harness(executor: str, workers: int, **settings: Any) -> Iterator[Harness]:
    """A dispatcher of the given kind behind the :class:`Harness` interface.

    Leaving the block joins the dispatcher (if the test did not already) and,
    for ``async``, stops the event loop and its thread.

    Raises:
        ValueError: an unknown executor or an invalid setting.
    """
    if worker_kind(executor).front_end == "Dispatcher":
        dispatcher = Dispatcher(workers, executor=executor, **settings)
        try:
            yield _SyncHarness(dispatcher)
        finally:
            dispatcher.join()
        return
    async_dispatcher = AsyncDispatcher(workers, **settings)
    with owned_on_loop(async_dispatcher, name="harness-loop") as loop:
        yield _AsyncHarness(async_dispatcher, loop)
