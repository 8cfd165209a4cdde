"""One small adapter per dispatchkit worker kind: run a workload, time every job.

    adapter(workload, config) ──▶ Dispatcher / AsyncDispatcher ──map(outcomes=True)──▶ RunRecord

Each adapter starts its workers before the clock starts (as the seed does),
then times from handing over the first job until every result is back, and
reads ``getrusage`` around the whole life of the workers, so that worker
processes, reaped at shutdown, are counted.

Worker kinds that this version of dispatchkit lacks are detected, not
assumed: :func:`available` looks at the public API.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
from collections.abc import Callable, Hashable, Iterable
from time import perf_counter
from typing import Any, Final

from dispatchkit import Dispatcher, Outcome

from .config import Config
from .errors import BenchUsageError, ExecutorUnavailable
from .metrics import JobRecord, RunRecord, usage_now
from .workloads import Workload

__all__ = ["ADAPTERS", "Adapter", "available", "check_available", "job_key"]

Adapter = Callable[[Workload, Config], RunRecord]


def job_key(item: Any) -> Hashable:
    """The key of an input for the ``key`` strategy: the input itself, or its JSON."""
    if isinstance(item, int | str | bytes) and not isinstance(item, bool):
        return item
    return json.dumps(item, sort_keys=True, default=repr)


def _async_dispatcher_class() -> Any:
    # Looked up by name: AsyncDispatcher arrives in a later version.
    return getattr(importlib.import_module("dispatchkit"), "AsyncDispatcher", None)


def available(executor: str) -> bool:
    """Whether this version of dispatchkit has the worker kind ``executor``."""
    if executor == "thread":
        return True
    if executor == "process":
        return "executor" in inspect.signature(Dispatcher).parameters
    if executor == "async":
        return _async_dispatcher_class() is not None
    return False


def check_available(executor: str) -> None:
    """Raises:
    ExecutorUnavailable: the worker kind does not exist in this version.
    """
    if not available(executor):
        raise ExecutorUnavailable(executor)


def _records(outcomes: Iterable[Outcome[Any]], t0: float) -> tuple[JobRecord, ...]:
    records = []
    for o in outcomes:
        if o.worker is None or o.started_at is None or o.finished_at is None:
            continue  # a cancelled job: nothing ran
        submitted = o.submitted_at if o.submitted_at is not None else t0
        records.append(
            JobRecord(
                o.worker, submitted - t0, o.started_at - t0, o.finished_at - t0, o.ok, o.job_id
            )
        )
    return tuple(records)


def _sync_fn(workload: Workload, config: Config) -> Callable[[Any], Any]:
    if workload.fn is None:
        raise BenchUsageError(
            f"{workload.name} is a coroutine function: only --executor async can run it"
        )
    return workload.fn


def _run_dispatcher(workload: Workload, config: Config, **extra: Any) -> RunRecord:
    fn = _sync_fn(workload, config)
    key = job_key if config.strategy == "key" else None
    before = usage_now()
    with Dispatcher(config.workers, strategy=config.strategy, chunk=config.chunk, **extra) as d:
        t0 = perf_counter()
        outcomes = list(d.map(fn, workload.items, outcomes=True, ordered=False, key=key))
        makespan = perf_counter() - t0
    usage = usage_now() - before
    return RunRecord(makespan, config.workers, _records(outcomes, t0), usage)


def run_thread(workload: Workload, config: Config) -> RunRecord:
    """Thread workers: ``Dispatcher(...)``."""
    return _run_dispatcher(workload, config)


def run_process(workload: Workload, config: Config) -> RunRecord:
    """Process workers: ``Dispatcher(..., executor="process")``.

    Raises:
        ExecutorUnavailable: this version has no process workers.
    """
    check_available("process")
    return _run_dispatcher(workload, config, executor="process")


def run_async(workload: Workload, config: Config) -> RunRecord:
    """Asyncio workers: ``async with AsyncDispatcher(...)``, ``d.map`` an async iterator.

    Raises:
        ExecutorUnavailable: this version has no AsyncDispatcher.
        BenchUsageError: the workload has no coroutine function.
    """
    cls = _async_dispatcher_class()
    if cls is None:
        raise ExecutorUnavailable("async")
    afn = workload.afn
    if afn is None:
        raise BenchUsageError(f"{workload.name} is not a coroutine function: asyncio cannot run it")
    extra: dict[str, Any] = {"key": job_key} if config.strategy == "key" else {}

    async def main() -> tuple[float, float, list[Outcome[Any]]]:
        async with cls(config.workers, strategy=config.strategy, chunk=config.chunk) as d:
            t0 = perf_counter()
            outcomes = [o async for o in d.map(afn, workload.items, outcomes=True, **extra)]
            return t0, perf_counter() - t0, outcomes

    before = usage_now()
    t0, makespan, outcomes = asyncio.run(main())
    usage = usage_now() - before
    return RunRecord(makespan, config.workers, _records(outcomes, t0), usage)


#: The adapter of each dispatchkit worker kind.
ADAPTERS: Final[dict[str, Adapter]] = {
    "thread": run_thread,
    "process": run_process,
    "async": run_async,
}
