"""The adapter of every dispatchkit worker kind: run a workload, time every job.

    run_kind(workload, config) ──▶ the kind's front end ──map(outcomes=True)──▶ RunRecord

The worker kind's registry entry (:mod:`dispatchkit.executors.registry`) says
which front end drives it and whether it takes coroutine functions. The
adapter starts the workers before the clock starts (as the seed does),
then times from handing over the first job until every result is back, and
reads ``getrusage`` around the whole life of the workers, so that worker
processes, reaped at shutdown, are counted.

"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Hashable, Iterable
from time import perf_counter
from typing import Any

from dispatchkit import AsyncDispatcher, Dispatcher, Outcome
from dispatchkit.executors.registry import WORKER_KINDS, worker_kind

from .config import Config
from .errors import ExecutorUnavailable
from .metrics import JobRecord, RunRecord, usage_now
from .workloads import Workload, cpu_loops, set_cpu_loops

__all__ = ["Adapter", "available", "check_available", "job_key", "run_kind"]

Adapter = Callable[[Workload, Config], RunRecord]


def job_key(item: Any) -> Hashable:
    """The key of an input for the ``key`` strategy: the input itself, or its JSON."""
    if isinstance(item, int | str | bytes) and not isinstance(item, bool):
        return item
    return json.dumps(item, sort_keys=True, default=repr)


def available(executor: str) -> bool:
    """Whether ``executor`` is a dispatchkit worker kind."""
    return executor in WORKER_KINDS


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


def run_kind(workload: Workload, config: Config) -> RunRecord:
    """Any dispatchkit worker kind, through the front end the registry names for it.

    Worker processes (a kind that does not run in this process) are handed the
    ``cpu`` workload's calibration, so that none calibrates (for 0.1 s) inside
    its first job.

    Raises:
        BenchUsageError: the workload has no function of the kind the workers take.
    """
    kind = worker_kind(config.executor)
    front_end = kind.front_end_class()
    if kind.takes_coroutines:
        return _run_awaiting(front_end, workload, config)
    extra: dict[str, Any] = {}
    if not kind.in_process:
        extra = {"initializer": set_cpu_loops, "initargs": (cpu_loops(),)}
    return _run_blocking(front_end, workload, config, executor=kind.name, **extra)


def _run_blocking(
    front_end: type[Dispatcher], workload: Workload, config: Config, **extra: Any
) -> RunRecord:
    """``with Dispatcher(...)``, ``d.map`` the inputs."""
    fn = workload.sync_job(f"only --executor {' or '.join(_coroutine_kinds())} can run it")
    key = job_key if config.strategy == "key" else None
    before = usage_now()
    with front_end(config.workers, strategy=config.strategy, chunk=config.chunk, **extra) as d:
        t0 = perf_counter()
        outcomes = list(d.map(fn, workload.items, outcomes=True, ordered=False, key=key))
        makespan = perf_counter() - t0
    usage = usage_now() - before
    return RunRecord(makespan, config.workers, _records(outcomes, t0), usage)


def _run_awaiting(
    front_end: type[AsyncDispatcher], workload: Workload, config: Config
) -> RunRecord:
    """``async with AsyncDispatcher(...)``, ``d.map`` the inputs.

    Raises:
        BenchUsageError: the workload has no coroutine function.
    """
    afn = workload.async_job()
    extra: dict[str, Any] = {"key": job_key} if config.strategy == "key" else {}

    async def main() -> tuple[float, float, list[Outcome[Any]]]:
        async with front_end(config.workers, strategy=config.strategy, chunk=config.chunk) as d:
            t0 = perf_counter()
            outcomes = [o async for o in d.map(afn, workload.items, outcomes=True, **extra)]
            return t0, perf_counter() - t0, outcomes

    before = usage_now()
    t0, makespan, outcomes = asyncio.run(main())
    usage = usage_now() - before
    return RunRecord(makespan, config.workers, _records(outcomes, t0), usage)


def _coroutine_kinds() -> list[str]:
    return [kind.name for kind in WORKER_KINDS.values() if kind.takes_coroutines]
