"""The standard library's pools running the same jobs, for comparison.

Each peer is used in its idiomatic bulk form (``Executor.map``,
``Pool.imap_unordered``, N asyncio tasks draining one queue). A module-level
wrapper times every job where it runs and says which thread or process ran
it; ``time.perf_counter`` is system-wide on Linux, so the times of worker
processes compare with the caller's. A job's submission time is the moment
the bulk call was made.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import threading
from collections.abc import Callable, Hashable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from functools import partial
from time import perf_counter
from typing import Any, Final

from .config import Config
from .metrics import JobRecord, RunRecord, Usage, usage_now
from .workloads import Workload, cpu_loops, noop, set_cpu_loops

__all__ = ["PEER_RUNNERS"]

# (worker identity, started, finished, ok) as returned by _timed
_Row = tuple[Hashable, float, float, bool]

# The platform's default start method: the peers are measured as their users
# get them. (A fork server would also hide the workers from RUSAGE_CHILDREN:
# they would be its children, not ours.)
_MP_CONTEXT: Final = multiprocessing.get_context()


def _init_worker(cpu_loops: int) -> None:
    # Give the worker the caller's calibration, so its first cpu job is not
    # slowed by calibrating, and every process does the same work per job.
    set_cpu_loops(cpu_loops)


def _timed(fn: Callable[[Any], Any], item: Any) -> _Row:
    started = perf_counter()
    try:
        fn(item)
        ok = True
    except Exception:  # a failed job is counted, it does not stop the run
        ok = False
    return (os.getpid(), threading.get_ident()), started, perf_counter(), ok


def _sync_job(workload: Workload) -> Callable[[Any], _Row]:
    """The workload's job, timed where it runs (see :func:`_timed`).

    Raises:
        BenchUsageError: the workload has only a coroutine function.
    """
    return partial(_timed, workload.sync_job("no sync peer can run it"))


def _clocked(run: Callable[[], Iterable[_Row]]) -> tuple[float, float, list[_Row]]:
    """The clock at the start, the makespan and the rows of ``run()`` (a bulk call)."""
    t0 = perf_counter()
    rows = list(run())
    return t0, perf_counter() - t0, rows


def _to_record(
    rows: Sequence[_Row],
    t0: float,
    makespan: float,
    config: Config,
    before: Usage,
    ordered: bool = True,
) -> RunRecord:
    """The run's record; its usage is what was used since ``before`` (pool start-up included)."""
    # Number the threads or processes in the order they first appear.
    index: dict[Hashable, int] = {}
    jobs = []
    for position, (who, started, finished, ok) in enumerate(rows):
        worker = index.setdefault(who, len(index))
        job = position if ordered else -1
        jobs.append(JobRecord(worker, 0.0, started - t0, finished - t0, ok, job))
    workers = max(config.workers, len(index))
    return RunRecord(makespan, workers, tuple(jobs), usage_now() - before)


def run_thread_pool(workload: Workload, config: Config) -> RunRecord:
    """``concurrent.futures.ThreadPoolExecutor.map``."""
    job = _sync_job(workload)
    before = usage_now()
    with ThreadPoolExecutor(config.workers) as pool:
        t0, makespan, rows = _clocked(lambda: pool.map(job, workload.items))
    return _to_record(rows, t0, makespan, config, before)


def run_process_pool(workload: Workload, config: Config) -> RunRecord:
    """``concurrent.futures.ProcessPoolExecutor.map`` with ``chunksize``."""
    job = _sync_job(workload)
    before = usage_now()
    with ProcessPoolExecutor(
        config.workers, mp_context=_MP_CONTEXT, initializer=_init_worker, initargs=(cpu_loops(),)
    ) as pool:
        list(pool.map(noop, range(config.workers)))  # start the processes before the clock
        t0, makespan, rows = _clocked(
            lambda: pool.map(job, workload.items, chunksize=config.peer_chunk)
        )
    return _to_record(rows, t0, makespan, config, before)


def run_mp_pool(workload: Workload, config: Config) -> RunRecord:
    """``multiprocessing.Pool.imap_unordered`` with ``chunksize``."""
    job = _sync_job(workload)
    before = usage_now()
    pool = _MP_CONTEXT.Pool(config.workers, initializer=_init_worker, initargs=(cpu_loops(),))
    try:
        t0, makespan, rows = _clocked(
            lambda: pool.imap_unordered(job, workload.items, chunksize=config.peer_chunk)
        )
        pool.close()
    except BaseException:
        pool.terminate()
        raise
    finally:
        pool.join()  # reaps the workers, so RUSAGE_CHILDREN counts them
    return _to_record(rows, t0, makespan, config, before, ordered=False)


def run_asyncio(workload: Workload, config: Config) -> RunRecord:
    """``workers`` asyncio tasks draining one queue of the inputs.

    The clock starts before the first input is queued, as it does before the
    other peers' ``map`` and dispatchkit's: queueing is handing the jobs over.

    Raises:
        BenchUsageError: the workload has no coroutine function.
    """
    afn = workload.async_job()

    async def main() -> tuple[float, float, list[_Row]]:
        queue: asyncio.Queue[Any] = asyncio.Queue()
        t0 = perf_counter()
        for item in workload.items:
            queue.put_nowait(item)
        rows: list[_Row] = []

        async def consume(index: int) -> None:
            while not queue.empty():
                item = queue.get_nowait()
                started = perf_counter()
                try:
                    await afn(item)
                    ok = True
                except Exception:
                    ok = False
                rows.append((index, started, perf_counter(), ok))

        async with asyncio.TaskGroup() as group:
            for index in range(config.workers):
                group.create_task(consume(index))
        return t0, perf_counter() - t0, rows

    before = usage_now()
    t0, makespan, rows = asyncio.run(main())
    return _to_record(rows, t0, makespan, config, before, ordered=False)


#: peer name -> its runner
PEER_RUNNERS: Final[dict[str, Callable[[Workload, Config], RunRecord]]] = {
    "ThreadPoolExecutor": run_thread_pool,
    "ProcessPoolExecutor": run_process_pool,
    "multiprocessing.Pool": run_mp_pool,
    "asyncio": run_asyncio,
}
