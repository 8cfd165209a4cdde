"""What an asyncio ``map`` costs per job, with and without an ``Outcome`` per job.

    python3 -m uv run --frozen python benchmarks/async_outcomes.py    # 10,000 jobs, 9 rounds

No-op coroutines on 2 asyncio workers, three ways, interleaved round by round in one
interpreter, medians:

* ``map``: ``[x async for x in d.map(job, items)]`` (values only);
* ``map(outcomes=True)``: the same, keeping every ``Outcome`` (each job's worker and
  timestamps: what ``dispatchkit bench`` reads);
* the asyncio peer of ``dispatchkit bench``: two tasks draining one ``asyncio.Queue``,
  awaiting each job inline and keeping a plain tuple per job with its own clock readings.

The bench's ``noop`` row compares the second with the third.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Callable, Coroutine
from typing import Any

from dispatchkit import AsyncDispatcher

WORKERS = 2


async def job(x: int) -> int:
    return x


async def values(items: list[int]) -> float:
    async with AsyncDispatcher(WORKERS) as d:
        started = time.perf_counter()
        kept = [x async for x in d.map(job, items)]
        elapsed = time.perf_counter() - started
    assert len(kept) == len(items)
    return elapsed


async def outcomes(items: list[int]) -> float:
    async with AsyncDispatcher(WORKERS) as d:
        started = time.perf_counter()
        kept = [o async for o in d.map(job, items, outcomes=True)]
        elapsed = time.perf_counter() - started
    assert all(o.ok for o in kept)
    return elapsed


async def inline_loop(items: list[int]) -> float:
    queue: asyncio.Queue[int] = asyncio.Queue()
    started = time.perf_counter()  # queueing the inputs is handing them over
    for item in items:
        queue.put_nowait(item)
    rows: list[tuple[int, float, float, bool]] = []

    async def consume(index: int) -> None:
        while not queue.empty():
            item = queue.get_nowait()
            began = time.perf_counter()
            try:
                await job(item)
                ok = True
            except Exception:
                ok = False
            rows.append((index, began, time.perf_counter(), ok))

    async with asyncio.TaskGroup() as group:
        for index in range(WORKERS):
            group.create_task(consume(index))
    elapsed = time.perf_counter() - started
    assert len(rows) == len(items)
    return elapsed


CASES: dict[str, Callable[[list[int]], Coroutine[Any, Any, float]]] = {
    "map": values,
    "map(outcomes=True)": outcomes,
    "asyncio queue, inline (the bench's peer)": inline_loop,
}


async def measure(jobs: int, rounds: int) -> dict[str, list[float]]:
    items = list(range(jobs))
    samples: dict[str, list[float]] = {name: [] for name in CASES}
    for _ in range(rounds):
        for name, case in CASES.items():
            samples[name].append(await case(items))
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    samples = asyncio.run(measure(args.jobs, args.rounds))
    print(f"{args.jobs:,} no-op coroutines, {WORKERS} workers, medians of {args.rounds} rounds")
    peer = statistics.median(samples["asyncio queue, inline (the bench's peer)"])
    for name, runs in samples.items():
        median = statistics.median(runs)
        per_job = median / args.jobs * 1e6
        print(f"  {name:42s} {per_job:5.2f} µs a job   {median / peer:4.2f}x the peer")


if __name__ == "__main__":
    main()
