"""dispatchkit.futures beside concurrent.futures: the same code, one import changed.

    python3 -m uv run --frozen python -m benchmarks.futures_bench        # 3 repeats
    python3 -m uv run --frozen python -m benchmarks.futures_bench --repeat 5 --json out.json

Each repeat runs every case once, stdlib and dispatchkit in turn, so that noise
on this shared machine spreads over both; the table shows medians and each
ratio is stdlib time / dispatchkit time of the same run. Every case times the
whole ``with`` block a program would have: pool start, the jobs, shutdown.

* ``submit``: ``submit`` + ``result()`` per job, 100,000 no-op jobs, 20 workers.
* ``map``: ``executor.map(fn, range(200_000))`` with default arguments.
* ``process map``: ``ProcessPoolExecutor(2).map`` of 2,000 jobs of about 1 ms
  of pure-Python arithmetic, default arguments (each class's own default start
  method and chunksize). A pool of each kind is started once before the
  repeats, so that dispatchkit's forkserver (started once per program) is not
  in the repeats; the ``first pool`` rows time the same case as the first
  thing a fresh interpreter does, the forkserver's start included.
* ``run_in_executor``: 100,000 ``loop.run_in_executor(None, fn)`` calls gathered,
  the stdlib's default executor beside ``dispatchkit.futures.ThreadPoolExecutor()``
  set with ``loop.set_default_executor``. Two floors show where the time goes:
  asyncio's own part (``wrap_future`` and ``gather`` over 100,000 futures that
  are already done) and the pool's part (``submit`` + ``result()`` of the same
  calls without asyncio).
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures as cf
import functools
import gc
import json
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

# Run as a script or a module: make the repository importable, so worker
# processes can import benchmarks._jobs by name.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import dispatchkit.futures as dkf
from benchmarks import _jobs

Case = Callable[[], object]
Pool = Callable[..., cf.Executor]

#: (stdlib class, dispatchkit class) of each comparison.
THREADS: tuple[Pool, Pool] = (cf.ThreadPoolExecutor, dkf.ThreadPoolExecutor)
PROCESSES: tuple[Pool, Pool] = (cf.ProcessPoolExecutor, dkf.ProcessPoolExecutor)


def noop(x: int) -> int:
    return x


def consume(results: Iterable[Any]) -> None:
    for _ in results:
        pass


def submit_each(pool_class: Pool, jobs: int, workers: int | None) -> None:
    with pool_class(workers) as pool:
        futures = [pool.submit(noop, i) for i in range(jobs)]
        for future in futures:
            future.result()


def map_all(pool_class: Pool, jobs: int) -> None:
    with pool_class() as pool:
        consume(pool.map(noop, range(jobs)))


def process_map(pool_class: Pool, jobs: int, spin: int) -> None:
    with pool_class(2) as pool:
        consume(pool.map(_jobs.spin, [spin] * jobs))


def run_in_executor(pool_class: Pool | None, calls: int) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        if pool_class is not None:
            loop.set_default_executor(pool_class())
        await asyncio.gather(*[loop.run_in_executor(None, noop, i) for i in range(calls)])

    asyncio.run(main())  # shuts the default executor down, whichever it is


def asyncio_floor(calls: int) -> None:
    """asyncio's part of run_in_executor: wrap and gather futures that are already done."""
    done: list[cf.Future[int]] = []
    for i in range(calls):
        future: cf.Future[int] = cf.Future()
        future.set_result(i)
        done.append(future)

    async def main() -> None:
        await asyncio.gather(*[asyncio.wrap_future(f) for f in done])

    asyncio.run(main())


_FRESH = """
import sys, time
sys.path.insert(0, {root!r})
from benchmarks import futures_bench as bench
if __name__ == "__main__":
    started = time.perf_counter()
    bench.process_map(bench.PROCESSES[{which}], {jobs}, {spin})
    print(time.perf_counter() - started)
"""


def first_pool(which: int, jobs: int, spin: int) -> float:
    """The process case as the first thing a fresh interpreter does (imports not timed)."""
    root = str(Path(__file__).resolve().parent.parent)
    code = _FRESH.format(root=root, which=which, jobs=jobs, spin=spin)
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    return float(done.stdout.split()[-1])


def timed(case: Case) -> float:
    """Seconds the case took; a case that times itself (in a child) returns its seconds."""
    gc.collect()
    started = time.perf_counter()
    own = case()
    took = time.perf_counter() - started
    return own if isinstance(own, float) else took


#: (name, stdlib case name, dispatchkit case name, target ratio or None) of the table;
#: ``{n}`` in a name is that row's job count at scale 1, scaled when printed.
COMPARISONS = (
    ("submit + result, {100000} jobs, 20 workers", "submit stdlib", "submit dispatchkit", 5.0),
    ("map(fn, range({200000})), defaults", "map stdlib", "map dispatchkit", 4.0),
    ("ProcessPoolExecutor(2).map, {2000} x 1 ms", "process stdlib", "process dispatchkit", 1.0),
    ("  the same, first pool of a fresh interpreter", "first stdlib", "first dispatchkit", None),
    ("run_in_executor x {100000}", "rie stdlib", "rie dispatchkit", 1.5),
)


def _titled(title: str, scale: float) -> str:
    """A row's name with its job counts at ``scale``."""
    return re.sub(r"\{(\d+)\}", lambda m: f"{int(int(m[1]) * scale):,}", title)


def cases(scale: float) -> dict[str, Case]:
    submits, maps, calls = int(100_000 * scale), int(200_000 * scale), int(100_000 * scale)
    processes = int(2_000 * scale)
    spin = _jobs.calibrate()
    table: dict[str, Case] = {}
    for label, pool in zip(("stdlib", "dispatchkit"), THREADS, strict=True):
        table[f"submit {label}"] = functools.partial(submit_each, pool, submits, 20)
    for label, pool in zip(("stdlib", "dispatchkit"), THREADS, strict=True):
        table[f"map {label}"] = functools.partial(map_all, pool, maps)
    for label, pool in zip(("stdlib", "dispatchkit"), PROCESSES, strict=True):
        table[f"process {label}"] = functools.partial(process_map, pool, processes, spin)
    for which, label in enumerate(("stdlib", "dispatchkit")):
        table[f"first {label}"] = functools.partial(first_pool, which, processes, spin)
    table["rie stdlib"] = lambda: run_in_executor(None, calls)
    table["rie dispatchkit"] = lambda: run_in_executor(dkf.ThreadPoolExecutor, calls)
    table["rie floor: asyncio wrapping only"] = lambda: asyncio_floor(calls)
    table["rie floor: dispatchkit submit+result only"] = lambda: submit_each(
        dkf.ThreadPoolExecutor, calls, None
    )
    return table


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--scale", type=float, default=1.0, help="multiply every job count (0.1 for a quick look)"
    )
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    args = parser.parse_args()
    table = cases(args.scale)
    for pool in PROCESSES:  # start dispatchkit's forkserver, warm both
        process_map(pool, 4, 1)
    samples: dict[str, list[float]] = {name: [] for name in table}
    for repeat in range(args.repeat):
        for name, case in table.items():
            samples[name].append(timed(case))
            took = samples[name][-1]
            print(f"[{repeat + 1}/{args.repeat}] {name}: {took:.3f} s", file=sys.stderr)
    medians = {name: statistics.median(values) for name, values in samples.items()}

    print(f"median of {args.repeat}, scale {args.scale}")
    print(f"{'case':45} {'stdlib s':>9} {'dispatchkit s':>14} {'ratio':>6} {'target':>7}")
    ratios: dict[str, float] = {}
    for template, stdlib, ours, target in COMPARISONS:
        title = _titled(template, args.scale)
        ratio = medians[stdlib] / medians[ours]
        ratios[title] = ratio
        aim = "—" if target is None else f"{target:.1f}x"
        print(f"{title:45} {medians[stdlib]:9.3f} {medians[ours]:14.3f} {ratio:5.2f}x {aim:>7}")
    for name, seconds in medians.items():
        if "floor" in name:
            print(f"  {name}: {seconds:.3f} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"samples": samples, "ratios": ratios}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
