"""Jobs per second through Redis: dispatchkit workers beside in-process threads and Dramatiq.

    make bench-redis                     # or: uv run python -m benchmarks.redis_bench
    uv run python -m benchmarks.redis_bench --workers 1,2,4 --json results/redis.json

For each workload (``noop``: return the argument; ``io``: sleep 5 ms) and each
number of worker processes (1, 2, 4 by default), it measures end to end, from
the first job published to the last outcome read by the submitter:

* dispatchkit over Redis, chunked (``map(chunk=...)``: many jobs per stream
  entry, the batching of the seed across a network) and one job per entry;
* Dramatiq (RedisBroker) on the same server, same jobs, same threads per
  process; completion is counted with one INCR per job, as Dramatiq keeps no
  results without a results backend (which would cost more);
* in-process: a local ``Dispatcher`` with the same total number of threads.

The ``many`` workload (``--workloads many``) compares the worker kinds at high
concurrency: one worker process running 5-ms waits 200 at a time, as 200
threads (``time.sleep``) or as 200 tasks on one event loop (``asyncio.sleep``,
``--executor async``), one job per entry.

The ``cpu`` workload (``--workloads cpu``) compares them on CPU-bound jobs: one
worker process with ``--concurrency 2`` running 400 jobs of about 20 ms of
pure-Python arithmetic, on threads (which take turns with the GIL) or in two
child processes (``--executor process``).

The fleet shape (``--fleet``) queues 20,000 jobs, then launches 10 worker
processes together, and times from the launch to the last outcome: one job per
entry and chunks of 100, for ``noop`` and ``io``; for ``io`` also 5-ms
``asyncio.sleep`` jobs run 100 at a time per process, by ``dispatchkit worker
--executor async --concurrency 100`` and by taskiq (``taskiq worker
--max-async-tasks 100`` on its Redis stream broker; skipped with a message when
taskiq is not installed). Each dispatchkit thread run is made twice: ten
``dispatchkit worker`` commands launched together, and one ``dispatchkit worker
--processes 10`` (the ten forked once redis-py and the jobs are imported).

Needs a Redis server (``--redis``, default ``redis://127.0.0.1:6379/0``). Every
run uses its own key namespace and deletes it afterwards.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import redis

from benchmarks import dramatiq_app, redis_jobs
from dispatchkit import Dispatcher
from dispatchkit.remote import RedisDispatcher

ROOT = Path(__file__).resolve().parent.parent
#: Threads per worker process, for every system measured.
THREADS = 8
#: Jobs per run: enough to last about a second at the expected rates.
JOBS = {
    ("noop", "chunked"): 300_000,
    ("noop", "single"): 20_000,
    ("noop", "dramatiq"): 4_000,
    ("noop", "in-process"): 300_000,
    ("io", "chunked"): 8_000,
    ("io", "single"): 8_000,
    ("io", "dramatiq"): 3_000,
    ("io", "in-process"): 8_000,
}
#: Jobs per stream entry in the chunked runs.
CHUNK = {"noop": 1000, "io": 4}


@dataclass
class Row:
    workload: str
    system: str
    workers: int
    jobs: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.jobs / self.seconds


def _env() -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }


def _compile_sources() -> None:
    """Write the bytecode of dispatchkit and of the job modules, as an installed worker has.

    With PYTHONDONTWRITEBYTECODE set Python keeps no cache, so every worker process
    of an editable checkout would compile each of dispatchkit's modules again as it
    starts, and the fleet's first jobs would time the compiler. compileall writes
    the cache whatever that variable says, and skips the modules whose cache is current.
    """
    import compileall

    for folder in (ROOT / "src" / "dispatchkit", ROOT / "benchmarks"):
        compileall.compile_dir(folder, quiet=1)


def _worker_command(
    url: str, ns: str, prefetch: int | None, concurrency: int, executor: str
) -> list[str]:
    command = [
        *(sys.executable, "-m", "dispatchkit", "worker", "--redis", url, "--queue", "bench"),
        *("--namespace", ns, "--import", "benchmarks.redis_jobs"),
        *("--concurrency", str(concurrency), "--executor", executor),
    ]
    return command if prefetch is None else [*command, "--prefetch", str(prefetch)]


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def dispatchkit_workers(
    url: str,
    ns: str,
    count: int,
    prefetch: int,
    concurrency: int = THREADS,
    executor: str = "thread",
) -> Iterator[None]:
    command = _worker_command(url, ns, prefetch, concurrency, executor)
    procs = [subprocess.Popen(command, env=_env(), stderr=subprocess.DEVNULL) for _ in range(count)]
    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + 30
    while client.zcard(f"{ns}:bench:workers") < count:
        if time.monotonic() > deadline:
            raise RuntimeError("dispatchkit workers did not register")
        time.sleep(0.05)
    try:
        yield
    finally:
        _stop(procs)


def run_dispatchkit(url: str, workload: str, count: int, chunked: bool) -> Row:
    ns = f"dkbench-{uuid.uuid4().hex[:8]}"
    system = "chunked" if chunked else "single"
    jobs = JOBS[(workload, system)]
    chunk = CHUNK[workload] if chunked else 1
    fn = getattr(redis_jobs, workload)
    # One job per entry wants many entries in hand; chunks spread better a few at a time.
    prefetch = 2 * THREADS if chunked or workload == "io" else 512
    try:
        with (
            dispatchkit_workers(url, ns, count, prefetch),
            RedisDispatcher(url, "bench", namespace=ns) as d,
        ):
            list(d.map(fn, range(200), chunk=chunk))  # warm up every connection
            start = time.perf_counter()
            done = sum(1 for _ in d.map(fn, range(jobs), chunk=chunk, window=100_000))
            seconds = time.perf_counter() - start
        assert done == jobs
    finally:
        _cleanup(url, ns)
    return Row(workload, f"dispatchkit redis {system}", count, jobs, seconds)


#: Jobs and jobs at once of the ``many`` workload.
MANY_JOBS = 20_000
MANY_AT_ONCE = 200


def run_many(url: str, executor: str) -> Row:
    """5-ms waits, MANY_AT_ONCE at a time in one worker process: threads or asyncio."""
    ns = f"dkbench-{uuid.uuid4().hex[:8]}"
    fn = redis_jobs.aio if executor == "async" else redis_jobs.io
    try:
        with (
            dispatchkit_workers(url, ns, 1, 2 * MANY_AT_ONCE, MANY_AT_ONCE, executor),
            RedisDispatcher(url, "bench", namespace=ns) as d,
        ):
            list(d.map(fn, range(MANY_AT_ONCE)))  # warm up
            start = time.perf_counter()
            done = sum(1 for _ in d.map(fn, range(MANY_JOBS), window=100_000))
            seconds = time.perf_counter() - start
        assert done == MANY_JOBS
    finally:
        _cleanup(url, ns)
    return Row("many", f"dispatchkit redis {executor} x{MANY_AT_ONCE}", 1, MANY_JOBS, seconds)


#: Jobs, and the ``cpu`` job's argument (about 20 ms of arithmetic on the 2-core machine).
CPU_JOBS = 400
CPU_STEPS = 400_000


def run_cpu(url: str, executor: str) -> Row:
    """CPU-bound jobs, two at a time in one worker process: threads or child processes."""
    ns = f"dkbench-{uuid.uuid4().hex[:8]}"
    try:
        with (
            dispatchkit_workers(url, ns, 1, 4, 2, executor),
            RedisDispatcher(url, "bench", namespace=ns) as d,
        ):
            list(d.map(redis_jobs.cpu, [1000] * 8))  # warm up: start the child processes
            start = time.perf_counter()
            done = sum(1 for _ in d.map(redis_jobs.cpu, [CPU_STEPS] * CPU_JOBS))
            seconds = time.perf_counter() - start
        assert done == CPU_JOBS
    finally:
        _cleanup(url, ns)
    return Row("cpu", f"dispatchkit redis {executor} x2", 1, CPU_JOBS, seconds)


#: The fleet shape: worker processes, and jobs queued before they start.
FLEET_WORKERS = 10
FLEET_JOBS = 20_000
#: Jobs per entry of the fleet shape's chunked runs.
FLEET_CHUNK = 100
#: Jobs at once per process of the fleet shape's asyncio runs (dispatchkit and taskiq).
FLEET_ASYNC = 100


@dataclass
class FleetRow(Row):
    #: Jobs each worker process ran, busiest first.
    counts: list[int]
    #: Seconds from launch to each worker's first job, soonest first.
    first_job: list[float]


def run_fleet(
    url: str,
    workload: str,
    chunk: int,
    prefetch: int | None = None,
    executor: str = "thread",
    forked: bool = False,
) -> FleetRow:
    """FLEET_JOBS jobs queued, then FLEET_WORKERS worker processes launched together;
    timed from the launch to the last outcome read. The async executor runs
    FLEET_ASYNC jobs at once per process, the others THREADS. ``forked``: one
    ``dispatchkit worker --processes FLEET_WORKERS`` launched, instead of
    FLEET_WORKERS commands."""
    ns = f"dkbench-{uuid.uuid4().hex[:8]}"
    fn: Callable[[int], Any] = {"noop": redis_jobs.where, "io": redis_jobs.where_io}[workload]
    concurrency = THREADS
    if executor == "async":
        fn, concurrency = redis_jobs.where_aio, FLEET_ASYNC
    entries = -(-FLEET_JOBS // chunk)
    rows: list[list[float]] = []
    ended: list[float] = []
    command = _worker_command(url, ns, prefetch, concurrency, executor)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        with RedisDispatcher(url, "bench", namespace=ns) as d:

            def consume() -> None:
                rows.extend(d.map(fn, range(FLEET_JOBS), chunk=chunk, window=FLEET_JOBS))
                ended.append(time.time())

            reader = threading.Thread(target=consume, daemon=True)
            reader.start()
            deadline = time.monotonic() + 60
            while d.stats().published < entries:  # every job queued before any worker
                if time.monotonic() > deadline:
                    raise RuntimeError("the fleet's jobs were not all published")
                time.sleep(0.01)
            launch = time.time()
            if forked:
                procs = [
                    subprocess.Popen(
                        [*command, "--processes", str(FLEET_WORKERS)],
                        env=_env(),
                        stderr=subprocess.DEVNULL,
                    )
                ]
            else:
                procs = [
                    subprocess.Popen(command, env=_env(), stderr=subprocess.DEVNULL)
                    for _ in range(FLEET_WORKERS)
                ]
            reader.join(300)
            if not ended:
                raise RuntimeError("the fleet did not finish in 300 s")
    finally:
        _stop(procs)
        _cleanup(url, ns)
    system = f"fleet {'chunked' if chunk > 1 else 'single'}"
    if executor != "thread":
        system += f" {executor} x{concurrency}"
    if forked:
        system += f" (one launch, --processes {FLEET_WORKERS})"
    return _fleet_row(workload, system, ended[0] - launch, rows, launch)


def _fleet_row(
    workload: str, system: str, seconds: float, rows: list[list[float]], launch: float
) -> FleetRow:
    """The row of a fleet run from its ``[pid, time]`` records, one per job."""
    firsts: dict[int, float] = {}
    counts: dict[int, int] = {}
    for pid, at in rows:
        counts[int(pid)] = counts.get(int(pid), 0) + 1
        firsts[int(pid)] = min(firsts.get(int(pid), at), at)
    all_counts = sorted(counts.values(), reverse=True) + [0] * (FLEET_WORKERS - len(counts))
    return FleetRow(
        workload, system, FLEET_WORKERS, FLEET_JOBS, seconds,
        all_counts, sorted(at - launch for at in firsts.values()),
    )  # fmt: skip


def taskiq_installed() -> bool:
    """Whether the taskiq peer can run (taskiq and taskiq-redis: the dev group has them)."""
    return all(importlib.util.find_spec(name) for name in ("taskiq", "taskiq_redis"))


def run_taskiq_fleet(url: str) -> FleetRow:
    """The fleet shape's asyncio run on taskiq: FLEET_JOBS 5-ms tasks queued on its Redis
    stream broker, then FLEET_WORKERS ``taskiq worker`` commands (one worker process
    each, FLEET_ASYNC tasks at once) launched together; timed from the launch until
    every task has recorded itself."""
    ns = f"dkbench-{uuid.uuid4().hex[:8]}"
    env = {**_env(), "DK_BENCH_REDIS": url, "DK_BENCH_NS": ns}
    command = [
        *(sys.executable, "-m", "taskiq", "worker", "benchmarks.taskiq_app:broker"),
        *("--workers", "1", "--max-async-tasks", str(FLEET_ASYNC)),
    ]
    procs: list[subprocess.Popen[bytes]] = []
    client = redis.Redis.from_url(url)
    done = f"{ns}:done"
    try:
        # Sent from a child process: the app module reads its namespace at import.
        sender = "import asyncio, sys; from benchmarks import taskiq_app as t; "
        sender += "asyncio.run(t.send(int(sys.argv[1])))"
        subprocess.run([sys.executable, "-c", sender, str(FLEET_JOBS)], env=env, check=True)
        if client.xlen(f"{ns}:bench") < FLEET_JOBS:
            raise RuntimeError("the taskiq fleet's tasks were not all sent")
        launch = time.time()
        procs = [
            subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
            for _ in range(FLEET_WORKERS)
        ]
        deadline = time.monotonic() + 300
        while client.llen(done) < FLEET_JOBS:
            if time.monotonic() > deadline:
                raise RuntimeError("the taskiq fleet did not finish in 300 s")
            time.sleep(0.005)
        seconds = time.time() - launch
        records = [raw.split() for raw in client.lrange(done, 0, -1)]
    finally:
        _stop(procs)
        _cleanup(url, ns)
    rows = [[float(pid), float(at)] for pid, at in records]
    return _fleet_row("io", f"fleet taskiq async x{FLEET_ASYNC}", seconds, rows, launch)


def run_dramatiq(url: str, workload: str, count: int) -> Row:
    ns = f"dkbench-{uuid.uuid4().hex[:8]}"
    jobs = JOBS[(workload, "dramatiq")]
    env = {**_env(), "DK_BENCH_REDIS": url, "DK_BENCH_NS": ns}
    app = dramatiq_app.App(url, ns)
    command = [sys.executable, "-m", "dramatiq", "benchmarks.dramatiq_app"]
    command += ["--processes", "1", "--threads", str(THREADS), "--queues", "bench"]
    procs = [
        subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        for _ in range(count)
    ]
    try:
        actor = app.actors[workload]
        for i in range(count * 4):  # warm up: every process answers
            actor.send(i)
        app.wait_for(count * 4, timeout=60)
        start = time.perf_counter()
        for i in range(jobs):
            actor.send(i)
        app.wait_for(count * 4 + jobs, timeout=300)
        seconds = time.perf_counter() - start
    finally:
        _stop(procs)
        _cleanup(url, ns)
    return Row(workload, "dramatiq redis", count, jobs, seconds)


def run_in_process(workload: str, count: int) -> Row:
    jobs = JOBS[(workload, "in-process")]
    fn = getattr(redis_jobs, workload)
    with Dispatcher(workers=count * THREADS, strategy="pull", chunk=CHUNK[workload]) as d:
        start = time.perf_counter()
        done = sum(1 for _ in d.map(fn, range(jobs)))
        seconds = time.perf_counter() - start
    assert done == jobs
    return Row(workload, "in-process threads", count, jobs, seconds)


def _cleanup(url: str, ns: str) -> None:
    client = redis.Redis.from_url(url)
    keys = list(client.scan_iter(match=f"{ns}:*", count=1000))
    if keys:
        client.delete(*keys)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--workers", default="1,2,4", help="comma list of worker process counts")
    parser.add_argument("--workloads", default="noop,io")
    parser.add_argument("--no-dramatiq", action="store_true", help="skip the peer queue")
    parser.add_argument("--json", type=Path, help="also write the rows to this file")
    parser.add_argument(
        "--fleet",
        action="store_true",
        help=f"the fleet shape instead: {FLEET_JOBS:,} jobs queued, then {FLEET_WORKERS} "
        "worker processes launched together (the --workloads among noop,io)",
    )
    parser.add_argument("--rounds", type=int, default=1, help="rounds of the fleet shape")
    parser.add_argument(
        "--no-taskiq", action="store_true", help="skip the fleet shape's taskiq peer"
    )
    args = parser.parse_args()
    _compile_sources()
    counts = [int(c) for c in args.workers.split(",")]
    rows: list[Row] = []
    if args.fleet:
        workloads = [w for w in args.workloads.split(",") if w in ("noop", "io")]
        rows = _fleet(args.redis, workloads, args.rounds, taskiq=not args.no_taskiq)
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(
                json.dumps([{**asdict(r), "rate": r.rate} for r in rows], indent=2) + "\n"
            )
        return
    for workload in args.workloads.split(","):
        if workload in ("many", "cpu"):
            run = run_many if workload == "many" else run_cpu
            other = "async" if workload == "many" else "process"
            batch = [run(args.redis, "thread"), run(args.redis, other)]
            for row in batch:
                _print(row)
            rows.extend(batch)
            continue
        for count in counts:
            batch = [
                run_dispatchkit(args.redis, workload, count, chunked=True),
                run_dispatchkit(args.redis, workload, count, chunked=False),
                run_in_process(workload, count),
            ]
            if not args.no_dramatiq:
                batch.append(run_dramatiq(args.redis, workload, count))
            for row in batch:
                _print(row)
            rows.extend(batch)
    _summary(rows)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps([{**asdict(r), "rate": r.rate} for r in rows], indent=2) + "\n"
        )


def _fleet(url: str, workloads: list[str], rounds: int, taskiq: bool = True) -> list[Row]:
    """The fleet shape, interleaved: every workload and entry size once a round; for io,
    the asyncio runs of dispatchkit and taskiq too."""
    if taskiq and "io" in workloads and not taskiq_installed():
        print("taskiq peer skipped: taskiq and taskiq-redis are not installed", flush=True)
        taskiq = False
    runs: list[Callable[[], FleetRow]] = []
    for workload in workloads:
        for chunk in (1, FLEET_CHUNK):
            for forked in (False, True):
                runs.append(functools.partial(run_fleet, url, workload, chunk, forked=forked))
        if workload == "io":
            runs.append(functools.partial(run_fleet, url, "io", 1, executor="async"))
            if taskiq:
                runs.append(functools.partial(run_taskiq_fleet, url))
    rows: list[Row] = []
    for _ in range(rounds):
        for run in runs:
            row = run()
            _print(row)
            ran = row.first_job  # of the workers that ran any
            print(
                f"      first job {ran[0]:.2f}-{ran[-1]:.2f} s after launch "
                f"({len(ran)} of {FLEET_WORKERS} workers ran jobs); jobs per worker "
                f"{row.counts} (busiest / mean {row.counts[0] * FLEET_WORKERS / FLEET_JOBS:.1f})",
                flush=True,
            )
            rows.append(row)
    return rows


def _print(row: Row) -> None:
    print(
        f"{row.workload:5} {row.system:32} workers={row.workers}  "
        f"{row.jobs:>8,} jobs  {row.seconds:7.2f} s  {row.rate:>10,.0f} jobs/s",
        flush=True,
    )


def _summary(rows: list[Row]) -> None:
    def rate(workload: str, system: str, workers: int) -> float | None:
        for row in rows:
            if (row.workload, row.system, row.workers) == (workload, system, workers):
                return row.rate
        return None

    print()
    for workers in sorted({r.workers for r in rows}):
        ours = rate("noop", "dispatchkit redis chunked", workers)
        peer = rate("noop", "dramatiq redis", workers)
        if ours and peer:
            print(f"noop, {workers} workers: chunked dispatchkit / dramatiq = {ours / peer:.1f}x")
    for system in ("dispatchkit redis chunked", "dispatchkit redis single", "dramatiq redis"):
        one, four = rate("io", system, 1), rate("io", system, 4)
        if one and four:
            print(f"io, {system}: 4 workers / 1 worker = {four / one:.2f}x")


if __name__ == "__main__":
    main()
