"""What a user gets with no arguments: dispatchkit's defaults, the stdlib, the best named setting.

    uv run python benchmarks/defaults_bench.py                    # every row, 3 repeats
    uv run python benchmarks/defaults_bench.py --rows io,cpu --repeat 5 --json out.json

Each row is one workload, run three ways: dispatchkit with its defaults (what
``Dispatcher(n).map(fn, xs)`` gives), the standard library's peer, and the best
of a few named dispatchkit settings. Every case runs in a fresh interpreter (no
warm caches, no pool left from another case), the cases of a repeat one after
another, interleaved over the repeats, so noise on a shared machine spreads over
all of them; figures are medians.

* ``io``: 2,000 waits of 5 ms, every 100th of 250 ms, on 20 threads, beside
  ``ThreadPoolExecutor(20).map``.
* ``cpu``: 2,000 jobs of about 1 ms of pure-Python arithmetic on 2 processes,
  beside ``ProcessPoolExecutor(2).map`` at chunksize 1 and 100, and the
  two-core limit (one-core loop ÷ 2).
* ``json``: a user's job that decodes lines of JSON, 20,000 of them, 1% huge (200
  times the others), on 2 processes, beside ``ProcessPoolExecutor(2).map`` at
  chunksize 1 and 32, and the plain loop over the same lines in one process.
* ``async``: 100,000 waits of 5 ms on 1,000 asyncio workers, beside the ideal
  0.5 s, ``asyncio.gather`` under a semaphore, and the event loop's own limit:
  1,000 tasks that each await the next job of one shared iterator, nothing
  dispatched (no dispatcher can beat it; where the loop cannot run 100,000
  timers in 0.5 s, it is above the ideal).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Final

# Run as a script: make the repository importable, so worker processes can
# import benchmarks._jobs by name.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import _jobs
from dispatchkit import AsyncDispatcher, Dispatcher

#: The case of a row that runs dispatchkit with no arguments.
DEFAULTS: Final = "dispatchkit defaults"
#: Jobs of the io and cpu rows; of the json row; of the async row.
JOBS: Final = 2000
JSON_JOBS: Final = 20_000
ASYNC_JOBS: Final = 100_000
#: The io row's job: 5 ms, every 100th 250 ms.
SHORT, LONG, EVERY = 0.005, 0.25, 100


def skewed_wait(i: int) -> int:
    time.sleep(LONG if i % EVERY == EVERY - 1 else SHORT)
    return i


async def async_wait(i: int) -> int:
    await asyncio.sleep(SHORT)
    return i


def _consume(results: Iterable[Any]) -> None:
    for _ in results:
        pass


def _loop_runner() -> Callable[[Any], object]:
    try:
        import uvloop  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return asyncio.run
    return uvloop.run  # type: ignore[no-any-return,unused-ignore]


# -- the cases: each returns the seconds of its timed part ---------------------


def _io_case(name: str) -> float:
    xs = range(JOBS)
    if name == "ThreadPoolExecutor(20).map":
        with ThreadPoolExecutor(20) as tpe:
            started = time.perf_counter()
            _consume(tpe.map(skewed_wait, xs))
            return time.perf_counter() - started
    setting = _named(name)
    with Dispatcher(20, **setting) as pool:
        started = time.perf_counter()
        _consume(pool.map(skewed_wait, xs))
        return time.perf_counter() - started


def _cpu_case(name: str, spin: int) -> float:
    items = [spin] * JOBS
    if name == "one-core loop / 2":
        started = time.perf_counter()
        _consume(_jobs.spin(n) for n in items)
        return (time.perf_counter() - started) / 2
    return _on_two_processes(name, _jobs.spin, items, [1, 1])


def _on_two_processes(
    name: str, fn: Callable[[Any], object], items: list[Any], warm_up: list[Any]
) -> float:
    """``fn`` over ``items`` on two processes of ``ProcessPoolExecutor.map chunksize N``
    or of a dispatchkit setting, the workers started (``warm_up`` run) before the clock."""
    if name.startswith("ProcessPoolExecutor"):
        chunksize = int(name.rsplit(" ", 1)[1])
        with ProcessPoolExecutor(2) as ppe:
            list(ppe.map(fn, warm_up))
            started = time.perf_counter()
            _consume(ppe.map(fn, items, chunksize=chunksize))
            return time.perf_counter() - started
    with Dispatcher(2, executor="process", **_named(name)) as pool:
        list(pool.map(fn, warm_up))
        started = time.perf_counter()
        _consume(pool.map(fn, items))
        return time.perf_counter() - started


#: The json row's reference: the same lines decoded in a plain loop, one process.
PLAIN_LOOP: Final = "plain loop, one process"


def _json_case(name: str) -> float:
    lines = _jobs.json_records(JSON_JOBS)
    if name == PLAIN_LOOP:
        started = time.perf_counter()
        _consume(_jobs.parse_record(line) for line in lines)
        return time.perf_counter() - started
    return _on_two_processes(name, _jobs.parse_record, lines, ["[]", "{}"])


def _async_case(name: str) -> float:
    async def run() -> float:
        xs = range(ASYNC_JOBS)
        if name == LOOP_LIMIT:
            shared = iter(xs)

            async def task() -> None:
                for i in shared:
                    await async_wait(i)

            started = time.perf_counter()
            await asyncio.gather(*(task() for _ in range(1000)))
            return time.perf_counter() - started
        if name == "gather + semaphore":
            semaphore = asyncio.Semaphore(1000)

            async def one(i: int) -> int:
                async with semaphore:
                    return await async_wait(i)

            started = time.perf_counter()
            await asyncio.gather(*(one(i) for i in xs))
            return time.perf_counter() - started
        async with AsyncDispatcher(1000, **_named(name)) as pool:
            started = time.perf_counter()
            async for _ in pool.map(async_wait, xs):
                pass
            return time.perf_counter() - started

    seconds = _loop_runner()(run())
    assert isinstance(seconds, float)
    return seconds


#: The async row's limit: the jobs awaited by 1,000 plain tasks, nothing dispatched.
LOOP_LIMIT: Final = "1,000 tasks on one iterator (the loop's limit)"


def _named(name: str) -> dict[str, Any]:
    """``dispatchkit defaults`` → no arguments; ``<strategy> chunk <n>`` → those."""
    if name == DEFAULTS:
        return {}
    strategy, _, chunk = name.split(" ")
    return {"strategy": strategy, "chunk": int(chunk)}


#: Per row: the cases, the stdlib peers among them, and the reference (not run
#: by dispatchkit) that ratios are also given against.
ROWS: Final[dict[str, dict[str, Any]]] = {
    "io": {
        "title": "2,000 waits of 5 ms (every 100th 250 ms), 20 threads",
        "cases": [
            "dispatchkit defaults",
            "ThreadPoolExecutor(20).map",
            "pull chunk 1",
            "batch chunk 1",
        ],
        "peers": ["ThreadPoolExecutor(20).map"],
    },
    "cpu": {
        "title": "2,000 jobs of ~1 ms CPU, 2 processes",
        "cases": [
            "dispatchkit defaults",
            "ProcessPoolExecutor.map chunksize 1",
            "ProcessPoolExecutor.map chunksize 100",
            "pull chunk 100",
            "one-core loop / 2",
        ],
        "peers": ["ProcessPoolExecutor.map chunksize 1", "ProcessPoolExecutor.map chunksize 100"],
        "reference": "one-core loop / 2",
    },
    "json": {
        "title": "20,000 lines of JSON decoded, 1% of them 200 times longer, 2 processes",
        "cases": [
            "dispatchkit defaults",
            "ProcessPoolExecutor.map chunksize 1",
            "ProcessPoolExecutor.map chunksize 32",
            "pull chunk 32",
            PLAIN_LOOP,
        ],
        "peers": ["ProcessPoolExecutor.map chunksize 1", "ProcessPoolExecutor.map chunksize 32"],
        "reference": PLAIN_LOOP,
    },
    "async": {
        "title": "100,000 waits of 5 ms, 1,000 asyncio workers (ideal 0.5 s)",
        "cases": [
            "dispatchkit defaults",
            "gather + semaphore",
            "round_robin chunk 100",
            LOOP_LIMIT,
        ],
        "peers": ["gather + semaphore"],
        "reference": LOOP_LIMIT,
        "ideal": SHORT * ASYNC_JOBS / 1000,
    },
}


def run_case(row: str, name: str, spin: int) -> float:
    if row == "io":
        return _io_case(name)
    if row == "cpu":
        return _cpu_case(name, spin)
    if row == "json":
        return _json_case(name)
    return _async_case(name)


def _in_fresh_interpreter(row: str, name: str, spin: int) -> float:
    out = subprocess.run(
        [sys.executable, __file__, "--case", row, name, str(spin)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return float(out.strip().splitlines()[-1])


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x"


def report(samples: dict[str, dict[str, list[float]]]) -> list[str]:
    lines = ["Measured under load (medians; ratios: dispatchkit defaults / the other)."]
    for row, cases in samples.items():
        spec = ROWS[row]
        med = {name: statistics.median(values) for name, values in cases.items()}
        defaults = med[DEFAULTS]
        others = set(spec["peers"]) | {DEFAULTS, spec.get("reference", "")}
        named = {n: s for n, s in med.items() if n not in others}
        best_named = min(named, key=named.__getitem__)
        best_peer = min(spec["peers"], key=med.__getitem__)
        lines.append(f"\n{row}: {spec['title']}")
        for name, seconds in med.items():
            runs = ", ".join(f"{v:.3f}" for v in cases[name])
            lines.append(f"  {name:<40} {seconds:8.3f} s   (runs {runs})")
        vs = f"  {DEFAULTS} /"
        lines.append(f"{vs} best stdlib peer ({best_peer}): {_ratio(defaults, med[best_peer])}")
        lines.append(f"{vs} best named ({best_named}): {_ratio(defaults, named[best_named])}")
        if "reference" in spec:
            reference = spec["reference"]
            lines.append(f"{vs} {reference}: {_ratio(defaults, med[reference])}")
        if "ideal" in spec:
            lines.append(f"{vs} ideal {spec['ideal']:.2f} s: {_ratio(defaults, spec['ideal'])}")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rows", default=",".join(ROWS), help="comma list of " + ", ".join(ROWS))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None, help="write the samples here")
    parser.add_argument("--case", nargs=3, metavar=("ROW", "NAME", "SPIN"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        row, name, spin = args.case
        print(run_case(row, name, int(spin)))
        return 0
    rows = [r for r in args.rows.split(",") if r]
    unknown = set(rows) - set(ROWS)
    if unknown:
        parser.error(f"unknown rows {sorted(unknown)}: choose from {', '.join(ROWS)}")
    spin = _jobs.calibrate() if "cpu" in rows else 1
    samples: dict[str, dict[str, list[float]]] = {
        r: {n: [] for n in ROWS[r]["cases"]} for r in rows
    }
    for repeat in range(args.repeat):
        for row in rows:
            for name in ROWS[row]["cases"]:
                seconds = _in_fresh_interpreter(row, name, spin)
                samples[row][name].append(seconds)
                print(
                    f"[{repeat + 1}/{args.repeat}] {row}: {name}: {seconds:.3f} s", file=sys.stderr
                )
    print("\n".join(report(samples)))
    if args.json is not None:
        args.json.write_text(json.dumps({"spin_for_1ms": spin, "samples": samples}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
