"""The seed workload, measured: every strategy and chunk beside the floor and the stdlib.

    make bench                       # or: uv run python benchmarks/seed.py
    uv run python benchmarks/seed.py --repeat 5 --json results/seed.json

Each repeat runs every configuration once, in the same order, so that noise on
this shared machine spreads over all of them; the table shows medians and the
ratios the issue's targets are stated in:

* the bare loop: a single thread calling the same job function, the floor;
* dispatchkit's bulk ``dispatch`` for each strategy at chunk 1 (the seed's one
  message at a time) and chunked;
* a handle per job: ``Dispatcher.submit`` beside ``ThreadPoolExecutor.submit``,
  and ``Dispatcher.map`` beside ``ThreadPoolExecutor.map``;
* the peak memory (max RSS) of ``dispatchkit run`` with its defaults.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from dispatchkit import Dispatcher
from dispatchkit.demo import even_chunk, seed_job
from dispatchkit.settings import ChunkSetting

#: The original Rust program's time for the 2M-job demo on this machine class (DESIGN.md).
RUST_SECONDS = 3.0


def bare_loop(jobs: int) -> None:
    job = seed_job
    for i in range(jobs):
        job(i)


def dk_dispatch(jobs: int, workers: int, strategy: str, chunk: ChunkSetting) -> None:
    with Dispatcher(workers, strategy=strategy, chunk=chunk) as d:
        d.dispatch(seed_job, range(jobs))
        d.join()
        stats = d.stats()
    assert stats.succeeded == jobs, stats


def dk_submit(jobs: int, workers: int) -> None:
    with Dispatcher(workers, strategy="round_robin") as d:
        handles = [d.submit(seed_job, i) for i in range(jobs)]
        for handle in handles:
            handle.result()


def tpe_submit(jobs: int, workers: int) -> None:
    with ThreadPoolExecutor(workers) as pool:
        futures = [pool.submit(seed_job, i) for i in range(jobs)]
        for future in futures:
            future.result()


def dk_map(jobs: int, workers: int, chunk: int) -> None:
    with Dispatcher(workers, strategy="pull", chunk=chunk) as d:
        for _ in d.map(seed_job, range(jobs)):
            pass


def tpe_map(jobs: int, workers: int) -> None:
    with ThreadPoolExecutor(workers) as pool:
        for _ in pool.map(seed_job, range(jobs)):
            pass


def timed(fn: Callable[[], None]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


_PEAK_OF_RUN = """
import sys
from dispatchkit.cli import main
code = main(sys.argv[1:])
# VmHWM is this process's own peak since exec; ru_maxrss would include the
# pages of the (large) benchmark process it was forked from.
peak = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(int(peak.split()[1]) * 1024 / 1e6, file=sys.stderr)
sys.exit(code)
"""


def peak_rss_mb_of_run(jobs: int, workers: int) -> float:
    """Peak resident memory of ``dispatchkit run`` with its defaults, in MB (1e6 bytes)."""
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            _PEAK_OF_RUN,
            "run",
            "--jobs",
            str(jobs),
            "--workers",
            str(workers),
            "--json",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        check=True,
    )
    return float(result.stderr.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2_000_000)
    parser.add_argument("--workers", type=int, default=20)
    parser.add_argument(
        "--submit-jobs",
        type=int,
        default=100_000,
        help="jobs for the handle-per-job comparisons (ThreadPoolExecutor is slow)",
    )
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    args = parser.parse_args()
    jobs, workers, sub = args.jobs, args.workers, args.submit_jobs
    best_chunk = even_chunk(jobs, workers)

    cases: dict[str, Callable[[], None]] = {"bare loop (floor)": lambda: bare_loop(jobs)}
    for strategy in ("batch", "round_robin", "pull"):
        for chunk in (1, 100, best_chunk):
            cases[f"dispatch {strategy} chunk {chunk}"] = (
                lambda s=strategy, c=chunk: dk_dispatch(jobs, workers, s, c)  # type: ignore[misc]
            )
    cases["dispatch auto chunk auto (the defaults)"] = lambda: dk_dispatch(
        jobs, workers, "auto", "auto"
    )
    cases[f"Dispatcher.submit x{sub:,}"] = lambda: dk_submit(sub, workers)
    cases[f"ThreadPoolExecutor.submit x{sub:,}"] = lambda: tpe_submit(sub, workers)
    cases[f"Dispatcher.map x{sub:,} chunk 100"] = lambda: dk_map(sub, workers, 100)
    cases[f"ThreadPoolExecutor.map x{sub:,}"] = lambda: tpe_map(sub, workers)

    samples: dict[str, list[float]] = {name: [] for name in cases}
    for repeat in range(args.repeat):
        for name, case in cases.items():
            samples[name].append(timed(case))
            print(
                f"[{repeat + 1}/{args.repeat}] {name}: {samples[name][-1]:.3f} s", file=sys.stderr
            )
    medians = {name: statistics.median(values) for name, values in samples.items()}
    rss_mb = peak_rss_mb_of_run(jobs, workers)

    floor = medians["bare loop (floor)"]
    dispatch_rows = {k: v for k, v in medians.items() if k.startswith("dispatch ")}
    best_name = min(dispatch_rows, key=dispatch_rows.__getitem__)
    best = dispatch_rows[best_name]
    submit_ratio = (
        medians[f"ThreadPoolExecutor.submit x{sub:,}"] / medians[f"Dispatcher.submit x{sub:,}"]
    )
    map_ratio = (
        medians[f"ThreadPoolExecutor.map x{sub:,}"] / medians[f"Dispatcher.map x{sub:,} chunk 100"]
    )

    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"seed workload: {jobs:,} jobs, {workers} workers, median of {args.repeat}",
        title_justify="left",
    )
    for column in ("case", "median s", "jobs/s", "x floor"):
        table.add_column(column, justify="left" if column == "case" else "right")
    for name, seconds in medians.items():
        n = sub if "x" + f"{sub:,}" in name else jobs
        table.add_row(
            name, f"{seconds:.3f}", f"{n / seconds:,.0f}", f"{seconds / floor * jobs / n:.2f}"
        )
    console = Console()
    console.print(table)
    targets = {
        "best configuration": best_name,
        "best / bare loop (target <= 2)": round(best / floor, 2),
        "Rust 3.0 s / best (target >= 6)": round(RUST_SECONDS / best, 2),
        "chunk-1 round_robin s (target < 2)": round(medians["dispatch round_robin chunk 1"], 3),
        "chunk-1 batch s (target < 2)": round(medians["dispatch batch chunk 1"], 3),
        "submit throughput / ThreadPoolExecutor.submit (target >= 15)": round(submit_ratio, 2),
        "map throughput / ThreadPoolExecutor.map": round(map_ratio, 2),
        "peak RSS of `dispatchkit run`, MB (target < 100)": round(rss_mb, 1),
    }
    for name, value in targets.items():
        console.print(f"{name}: [bold]{value}[/bold]")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "samples": samples,
                    "medians": medians,
                    "targets": targets,
                    "python": sys.version,
                    "cpus": os.cpu_count(),
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
