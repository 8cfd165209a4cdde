"""The seed workload on process workers, beside the one-thread bare loop.

    uv run python benchmarks/seed_processes.py            # 2M jobs, 2 processes, 3 rounds

What ``dispatchkit run --executor process`` runs, minus the chunk-1 rows (a
pipe round trip per job: over a minute each at 2M jobs): each fixed strategy at
the even chunk, then ``auto`` with the library's adaptive chunk, interleaved
round by round with the bare loop, so that the machine's noise falls on all of
them. The table gives medians, each row's ratio to the bare loop, and auto's
ratio to the best fixed row.

One more row is the machine's own limit: the bare loop split in equal halves
over already started processes of a ``multiprocessing.Pool``, nothing
dispatched (one call per process), timed from the call to the last half's end
(the pool is closed before the other rows run).
Where the processes slow each other down (shared cores or caches of a
virtual machine) that row is above 0.5, and no dispatcher can beat it.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import time

from dispatchkit.demo import even_chunk, run_seed, seed_job
from dispatchkit.settings import ChunkSetting

BARE = "bare loop (one thread)"
AUTO = "auto chunk auto (the defaults)"
SPLIT = "bare loop split over the processes (no dispatcher: the machine's limit)"


def bare_loop(jobs: int) -> float:
    job = seed_job
    started = time.perf_counter()
    for i in range(jobs):
        job(i)
    return time.perf_counter() - started


def _bare_range(bounds: tuple[int, int]) -> None:
    job = seed_job
    for i in range(*bounds):
        job(i)


def split_loop(jobs: int, workers: int) -> float:
    """The bare loop in ``workers`` equal ranges, one per process of a pool started
    (and warmed) beforehand, timed from the call to the last range's end. The pool is
    closed before the dispatchkit rows run: its idle processes and the parent's
    threads that tend them slow the dispatcher's own hand-offs."""
    step = max(1, -(-jobs // workers))
    ranges = [(start, min(start + step, jobs)) for start in range(0, jobs, step)]
    with multiprocessing.get_context("forkserver").Pool(workers) as pool:
        pool.map(_bare_range, [(0, 1)] * workers, chunksize=1)
        started = time.perf_counter()
        pool.map(_bare_range, ranges, chunksize=1)
        seconds = time.perf_counter() - started
        pool.close()
        pool.join()
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2_000_000)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    even = even_chunk(args.jobs, args.workers)
    cases: dict[str, tuple[str, ChunkSetting]] = {
        f"{strategy} chunk {even}": (strategy, even)
        for strategy in ("batch", "round_robin", "pull")
    }
    cases[AUTO] = ("auto", "auto")
    samples: dict[str, list[float]] = {name: [] for name in [BARE, SPLIT, *cases]}
    for _ in range(args.rounds):
        samples[BARE].append(bare_loop(args.jobs))
        samples[SPLIT].append(split_loop(args.jobs, args.workers))
        for name, (strategy, chunk) in cases.items():
            result = run_seed(
                jobs=args.jobs, workers=args.workers, executor="process",
                strategy=strategy, chunk=chunk,
            )  # fmt: skip
            assert result.completed == args.jobs, result
            samples[name].append(result.seconds)
    medians = {name: statistics.median(values) for name, values in samples.items()}
    bare = medians[BARE]
    print(f"{args.jobs:,} jobs, {args.workers} processes, medians of {args.rounds} rounds")
    print("| case | seconds | / bare loop |\n|---|---:|---:|")
    for name, seconds in medians.items():
        print(f"| {name} | {seconds:.3f} | {seconds / bare:.2f} |")
    best_fixed = min(
        seconds for name, seconds in medians.items() if name not in (BARE, SPLIT, AUTO)
    )
    print(f"auto / best fixed row: {medians[AUTO] / best_fixed:.2f}")
    print(f"best row / bare loop: {min(medians[AUTO], best_fixed) / bare:.2f}")
    print(f"auto / the machine's limit: {medians[AUTO] / medians[SPLIT]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
