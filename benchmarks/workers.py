"""CPU-bound, I/O-bound and skewed jobs on process, thread and asyncio workers, beside the stdlib.

    uv run python benchmarks/workers.py                 # all three, 3 repeats
    uv run python benchmarks/workers.py --only cpu --repeat 5 --json results/workers.json

Every figure is the median of ``--repeat`` runs; each repeat runs every case once,
so noise on this shared machine spreads over all of them. Pools are started and
warmed up (their job module imported) before the clock starts, for every peer alike.

* ``cpu``: 2,000 jobs of about 1 ms of pure-Python arithmetic on 2 process
  workers, beside a single-process loop, ``ProcessPoolExecutor.map`` at each
  chunksize, ``multiprocessing.Pool.imap_unordered`` and ``ThreadPoolExecutor``.
* ``io``: 2,000 jobs sleeping 5 ms on 20 thread workers (ideal 0.5 s) beside
  ``ThreadPoolExecutor``; 100,000 jobs sleeping 5 ms on 1,000 asyncio workers
  (ideal 0.5 s) beside ``asyncio.gather`` under a semaphore and a bare floor of
  1,000 tasks sleeping in a loop. uvloop is used when installed.
* ``skewed``: 1% of the jobs take 50 times longer: CPU jobs on 2 processes and
  sleeping jobs on 20 threads, for every strategy.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

# Run as a script: make the repository importable, so worker processes can
# import benchmarks._jobs by name.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import _jobs
from dispatchkit import AsyncDispatcher, Dispatcher

STRATEGIES = ("round_robin", "batch", "pull")
Case = Callable[[], object]


def consume(results: Iterable[Any]) -> None:
    for _ in results:
        pass


def timed(case: Case) -> float:
    started = time.perf_counter()
    case()
    return time.perf_counter() - started


# -- cpu ----------------------------------------------------------------------------


def cpu_cases(n_spin: int, jobs: int = 2000) -> tuple[dict[str, Case], list[Callable[[], object]]]:
    items = [n_spin] * jobs
    cases: dict[str, Case] = {
        "single-process loop": lambda: consume(_jobs.spin(n) for n in items),
    }
    closers: list[Callable[[], object]] = []
    for strategy in STRATEGIES:
        for chunk in (1, 10, 100):
            d = Dispatcher(2, executor="process", strategy=strategy, chunk=chunk, block=100)
            list(d.map(_jobs.spin, [1] * 4))  # warm up: import the job module
            cases[f"dispatchkit process {strategy} chunk {chunk}"] = (
                lambda d=d: consume(d.map(_jobs.spin, items))  # type: ignore[misc,unused-ignore]
            )
            closers.append(d.join)
    pool = ProcessPoolExecutor(2)
    list(pool.map(_jobs.spin, [1] * 4))
    closers.append(pool.shutdown)
    for chunksize in (1, 10, 100, 250):
        cases[f"ProcessPoolExecutor.map chunksize {chunksize}"] = (
            lambda c=chunksize: consume(pool.map(_jobs.spin, items, chunksize=c))  # type: ignore[misc,unused-ignore]
        )
    mp_pool = multiprocessing.get_context("forkserver").Pool(2)
    mp_pool.map(_jobs.spin, [1] * 4)
    closers.append(mp_pool.terminate)
    for chunksize in (1, 10, 100):
        cases[f"multiprocessing.Pool.imap_unordered chunksize {chunksize}"] = (
            lambda c=chunksize: consume(mp_pool.imap_unordered(_jobs.spin, items, c))  # type: ignore[misc,unused-ignore]
        )
    threads = ThreadPoolExecutor(2)
    closers.append(threads.shutdown)
    cases["ThreadPoolExecutor.map (2 threads)"] = lambda: consume(threads.map(_jobs.spin, items))
    return cases, closers


# -- io -----------------------------------------------------------------------------


def thread_io_cases(jobs: int = 2000, seconds: float = 0.005) -> dict[str, Case]:
    items = [seconds] * jobs
    cases: dict[str, Case] = {}
    for strategy in STRATEGIES:
        for chunk in (1, 10):

            def run(strategy: str = strategy, chunk: int = chunk) -> None:
                with Dispatcher(20, strategy=strategy, chunk=chunk, block=100) as d:
                    for _ in d.map(_jobs.sleep_io, items):
                        pass

            cases[f"dispatchkit thread {strategy} chunk {chunk}"] = run

    def tpe() -> None:
        with ThreadPoolExecutor(20) as pool:
            list(pool.map(_jobs.sleep_io, items))

    cases["ThreadPoolExecutor.map (20 threads)"] = tpe
    return cases


def async_io_cases(
    jobs: int = 100_000, workers: int = 1000, seconds: float = 0.005
) -> dict[str, Case]:
    items = [seconds] * jobs
    runner = _loop_runner()
    cases: dict[str, Case] = {}
    for strategy in ("round_robin", "pull"):
        for chunk in (1, 100):

            async def run(strategy: str = strategy, chunk: int = chunk) -> None:
                async with AsyncDispatcher(workers, strategy=strategy, chunk=chunk) as d:
                    await d.dispatch(_jobs.async_io, items)

            cases[f"dispatchkit async {strategy} chunk {chunk}"] = (
                lambda run=run: runner(run())  # type: ignore[misc,unused-ignore]
            )

    async def gather() -> None:
        semaphore = asyncio.Semaphore(workers)

        async def one(s: float) -> None:
            async with semaphore:
                await _jobs.async_io(s)

        await asyncio.gather(*(one(s) for s in items))

    async def floor() -> None:
        per_task = jobs // workers

        async def task() -> None:
            for _ in range(per_task):
                await _jobs.async_io(seconds)

        await asyncio.gather(*(task() for _ in range(workers)))

    cases["asyncio.gather + Semaphore(1000)"] = lambda: runner(gather())
    cases["floor: 1000 tasks x 100 sleeps"] = lambda: runner(floor())
    return cases


def _loop_runner() -> Callable[[Any], object]:
    try:
        import uvloop  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return asyncio.run
    return uvloop.run  # type: ignore[no-any-return,unused-ignore]


# -- skewed -------------------------------------------------------------------------


def skewed_cases(
    n_spin: int, jobs: int = 2000
) -> tuple[dict[str, Case], list[Callable[[], object]]]:
    cpu_items = [n_spin * (50 if i % 100 == 99 else 1) for i in range(jobs)]
    io_items = [0.005 * (50 if i % 100 == 99 else 1) for i in range(jobs)]
    cases: dict[str, Case] = {}
    closers: list[Callable[[], object]] = []
    for strategy in STRATEGIES:
        d = Dispatcher(2, executor="process", strategy=strategy, chunk=10, block=100)
        list(d.map(_jobs.spin, [1] * 4))
        closers.append(d.join)
        cases[f"cpu: dispatchkit process {strategy} chunk 10"] = (
            lambda d=d: consume(d.map(_jobs.spin, cpu_items))  # type: ignore[misc,unused-ignore]
        )
    pool = ProcessPoolExecutor(2)
    list(pool.map(_jobs.spin, [1] * 4))
    closers.append(pool.shutdown)
    cases["cpu: ProcessPoolExecutor.map chunksize 10"] = lambda: consume(
        pool.map(_jobs.spin, cpu_items, chunksize=10)
    )
    for strategy in STRATEGIES:

        def run(strategy: str = strategy) -> None:
            with Dispatcher(20, strategy=strategy, block=100) as d:
                for _ in d.map(_jobs.sleep_io, io_items):
                    pass

        cases[f"io: dispatchkit thread {strategy} chunk 1"] = run

    def tpe() -> None:
        with ThreadPoolExecutor(20) as threads:
            list(threads.map(_jobs.sleep_io, io_items))

    cases["io: ThreadPoolExecutor.map (20 threads)"] = tpe
    return cases, closers


# -- main ---------------------------------------------------------------------------


def measure(title: str, cases: dict[str, Case], repeat: int) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for round_ in range(repeat):
        for name, case in cases.items():
            samples[name].append(timed(case))
            print(
                f"{title} [{round_ + 1}/{repeat}] {name}: {samples[name][-1]:.3f} s",
                file=sys.stderr,
            )
    return samples


def show(title: str, samples: dict[str, list[float]], baseline: str, note: str) -> None:
    from rich.console import Console
    from rich.table import Table

    base = statistics.median(samples[baseline])
    table = Table(title=f"{title} — {note}", title_justify="left")
    table.add_column("case")
    table.add_column("median s", justify="right")
    table.add_column(f"speed vs {baseline}", justify="right")
    for name, values in samples.items():
        median = statistics.median(values)
        table.add_row(name, f"{median:.3f}", f"{base / median:.2f}x")
    Console().print(table)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", default="cpu,io,skewed")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    wanted = set(args.only.split(","))
    n_spin = _jobs.calibrate()
    print(f"spin({n_spin}) takes about 1 ms here", file=sys.stderr)
    results: dict[str, dict[str, list[float]]] = {}
    if "cpu" in wanted:
        cases, closers = cpu_cases(n_spin)
        results["cpu"] = measure("cpu", cases, args.repeat)
        for close in closers:
            close()
        show(
            "cpu: 2,000 x ~1 ms on 2 processes",
            results["cpu"],
            "single-process loop",
            "target: >= 1.8x the loop, no slower than the best ProcessPoolExecutor.map",
        )
    if "io" in wanted:
        results["io-threads"] = measure("io", thread_io_cases(), args.repeat)
        show(
            "io: 2,000 x 5 ms on 20 threads",
            results["io-threads"],
            "ThreadPoolExecutor.map (20 threads)",
            "ideal 0.5 s; target within 1.15x of it",
        )
        results["io-async"] = measure("io-async", async_io_cases(), args.repeat)
        show(
            "io: 100,000 x 5 ms on 1,000 async workers",
            results["io-async"],
            "asyncio.gather + Semaphore(1000)",
            "ideal 0.5 s; target within 1.3x of it",
        )
    if "skewed" in wanted:
        cases, closers = skewed_cases(n_spin)
        results["skewed"] = measure("skewed", cases, args.repeat)
        for close in closers:
            close()
        show(
            "skewed: 1% of jobs 50x longer",
            results["skewed"],
            "cpu: ProcessPoolExecutor.map chunksize 10",
            "lower is better",
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "samples": results,
                    "spin_for_1ms": n_spin,
                    "cpus": os.cpu_count(),
                    "python": sys.version,
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
