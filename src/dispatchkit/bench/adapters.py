"""One small adapter per dispatchkit worker kind: run a workload, time every job.

    adapter(workload, config) ──▶ Dispatcher / AsyncDispatcher ──map(outcomes=True)──▶ RunRecord

Each adapter starts its workers before the clock starts (as the seed does),
then times from handing over the first job until every result is back, and
reads ``getrusage`` around the whole life of the workers, so that worker
processes, reaped at shutdown, are counted.

"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Hashable, Iterable
from time import perf_counter
from typing import Any, Final

from dispatchkit import AsyncDispatcher, Dispatcher, Outcome

from .config import Config
from .errors import ExecutorUnavailable
from .metrics import JobRecord, RunRecord, usage_now
from .workloads import Workload, cpu_loops, set_cpu_loops

__all__ = ["ADAPTERS", "Adapter", "available", "check_available", "job_key"]

Adapter = Callable[[Workload, Config], RunRecord]


def job_key(item: Any) -> Hashable:
    """The key of an input for the ``key`` strategy: the input itself, or its JSON."""
    if isinstance(item, int | str | bytes) and not isinstance(item, bool):
        return item
    return json.dumps(item, sort_keys=True, default=repr)


def available(executor: str) -> bool:
    """Whether ``executor`` is a dispatchkit worker kind."""
    return executor in ADAPTERS


def check_available(executor: str) -> None:
    """Raises:
    ExecutorUnavailable: there is no such worker kind.
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


def _run_dispatcher(workload: Workload, config: Config, **extra: Any) -> RunRecord:
    fn = workload.sync_job("only --executor async can run it")
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

    Each worker process is handed the ``cpu`` workload's calibration, so that
    it does not calibrate (for 0.1 s) inside its first job.
    """
    return _run_dispatcher(
        workload,
        config,
        executor="process",
        initializer=set_cpu_loops,
        initargs=(cpu_loops(),),
    )


def run_async(workload: Workload, config: Config) -> RunRecord:
    """Asyncio workers: ``async with AsyncDispatcher(...)``, ``d.map`` an async iterator.

    Raises:
        BenchUsageError: the workload has no coroutine function.
    """
    afn = workload.async_job()
    extra: dict[str, Any] = {"key": job_key} if config.strategy == "key" else {}

    async def main() -> tuple[float, float, list[Outcome[Any]]]:
        async with AsyncDispatcher(
            config.workers, strategy=config.strategy, chunk=config.chunk
        ) as d:
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
