"""What an asyncio ``map`` costs per job, with and without a record per job.

    python3 -m uv run --frozen python benchmarks/async_outcomes.py    # 10,000 jobs, 9 rounds

No-op coroutines on 2 asyncio workers, interleaved round by round, each run on an event
loop of its own after a garbage collection (as ``dispatchkit bench`` runs them), medians:

* ``map``: ``[x async for x in d.map(job, items)]`` (values only: what a user's
  ``map`` costs);
* ``map(outcomes=True)``: the same, keeping every ``Outcome`` (each job's worker and
  timestamps: what ``dispatchkit bench`` reads);
* the asyncio peer of ``dispatchkit bench``: two tasks draining one ``asyncio.Queue``,
  awaiting each job inline and keeping a plain tuple per job with its own clock readings;
* the same two with one instrument: ``map`` of a timing wrapper (a coroutine that reads
  the clock around the job and returns its task, times and success), and the peer
  awaiting that wrapper instead of timing inline.

The bench's ``noop`` row on asyncio compares the second with the third: each side with
its cheapest per-job record, which are not the same record. The last two pairs put the
same record on both.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import time
from collections.abc import Awaitable, Callable, Coroutine
from functools import partial
from typing import Any

from dispatchkit import AsyncDispatcher

WORKERS = 2

#: A job's record under the shared instrument: (its task, started, finished, ok).
Row = tuple[int, float, float, bool]


async def job(x: int) -> int:
    return x


async def timed(fn: Callable[[int], Awaitable[Any]], item: int) -> Row:
    """``fn(item)``, timed where it runs."""
    started = time.perf_counter()
    try:
        await fn(item)
        ok = True
    except Exception:
        ok = False
    return id(asyncio.current_task()), started, time.perf_counter(), ok


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


async def wrapped_map(items: list[int]) -> float:
    async with AsyncDispatcher(WORKERS) as d:
        started = time.perf_counter()
        rows = [row async for row in d.map(partial(timed, job), items)]
        elapsed = time.perf_counter() - started
    assert all(row[3] for row in rows)
    return elapsed


async def queue_peer(items: list[int], wrapped: bool = False) -> float:
    queue: asyncio.Queue[int] = asyncio.Queue()
    started = time.perf_counter()  # queueing the inputs is handing them over
    for item in items:
        queue.put_nowait(item)
    rows: list[tuple[Any, float, float, bool]] = []
    timed_job = partial(timed, job)

    async def consume(index: int) -> None:
        while not queue.empty():
            item = queue.get_nowait()
            if wrapped:
                rows.append(await timed_job(item))
                continue
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


PEER = "asyncio queue, inline (the bench's peer)"
WRAPPED_PEER = "asyncio queue, awaiting the wrapper"
CASES: dict[str, Callable[[list[int]], Coroutine[Any, Any, float]]] = {
    "map": values,
    "map(outcomes=True)": outcomes,
    PEER: queue_peer,
    "map of the timing wrapper": wrapped_map,
    WRAPPED_PEER: partial(queue_peer, wrapped=True),
}
#: Each case's baseline: the peer with the same kind of record.
BASELINE = {"map of the timing wrapper": WRAPPED_PEER, WRAPPED_PEER: WRAPPED_PEER}


def measure(jobs: int, rounds: int) -> dict[str, list[float]]:
    items = list(range(jobs))
    samples: dict[str, list[float]] = {name: [] for name in CASES}
    for _ in range(rounds):
        for name, case in CASES.items():
            gc.collect()  # the last run's garbage is not collected on this one's clock
            samples[name].append(asyncio.run(case(items)))
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    samples = measure(args.jobs, args.rounds)
    print(f"{args.jobs:,} no-op coroutines, {WORKERS} workers, medians of {args.rounds} rounds")
    medians = {name: statistics.median(runs) for name, runs in samples.items()}
    for name, median in medians.items():
        baseline = BASELINE.get(name, PEER)
        per_job = median / args.jobs * 1e6
        print(
            f"  {name:42s} {per_job:5.2f} µs a job   {median / medians[baseline]:4.2f}x {baseline}"
        )


if __name__ == "__main__":
    main()
