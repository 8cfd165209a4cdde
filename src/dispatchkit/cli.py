"""The ``dispatchkit`` command. It parses arguments and calls public functions; no logic.

Exit codes: 0 success, 1 a failure while running, 2 bad input (a wrong flag,
setting or environment variable), 3 ``serve`` or ``worker`` stopped at its
drain deadline (--drain-timeout) with work still open, 4 (serve) payloads
answered 202 could not be stored, 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import Final, NoReturn

from . import __version__
from ._durations import MAX_SECONDS, parse_seconds
from .demo import (
    DEFAULT_JOBS,
    DEFAULT_STRATEGIES,
    DEFAULT_WORKERS,
    Interrupted,
    SeedResult,
    auto_chunk,
    fastest,
    run_seed,
)
from .errors import DispatchError, QueueFull, WorkerStartError
from .executors.registry import kind_names, worker_kind
from .settings import ENV_PREFIX, MAX_QUEUE_SIZE, MAX_WORKERS, Settings, env_fields, env_value
from .settings import EXECUTORS as SETTINGS_EXECUTORS
from .strategies import parse_strategy

__all__ = ["main"]

RET_OK: Final = 0
RET_FAILED: Final = 1
RET_USAGE: Final = 2
RET_DRAIN_DEADLINE: Final = 3
RET_INTERRUPTED: Final = 130
#: serve: payloads answered 202 could not be stored (an fsync failed).
RET_UNSTORED: Final = 4

#: Worker kinds every command that runs jobs accepts with --executor.
EXECUTOR_CHOICES: Final = kind_names()

#: Seconds a signal waits for work in hand before ``serve`` and ``worker`` give up on it.
DEFAULT_DRAIN_TIMEOUT: Final = 30.0
#: Longest --drain-timeout accepted, in seconds (a day).
MAX_DRAIN_TIMEOUT: Final = 86400.0


class UsageError(DispatchError):
    """Bad input from the user: reported on one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, no usage dump: the message says what is wrong and --help how to fix it.
        self.exit(RET_USAGE, f"{self.prog}: error: {message} (see --help)\n")


# -- argument types ---------------------------------------------------------


def _int_in(low: int, high: int) -> Callable[[str], int]:
    # argparse puts "argument --flag: " before these messages: they do not name the flag.
    def parse(text: str) -> int:
        try:
            value = int(text.replace("_", ""))
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low:,} and {high:,}, got {value:,}")
        return value

    return parse


def _seconds(*, zero_ok: bool = False, maximum: float = MAX_SECONDS) -> Callable[[str], float]:
    """An argparse type for a duration: finite seconds, > 0 (>= 0 if ``zero_ok``), <= ``maximum``.

    Its error reads "argument --heartbeat: must be a finite number of seconds > 0, not 'nan'".
    """

    def parse(text: str) -> float:
        try:
            return parse_seconds(text, zero_ok=zero_ok, maximum=maximum)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return parse


#: The argparse type of every duration flag where 0 makes no sense (an interval, a timeout).
_positive_seconds: Final = _seconds()
#: The argparse type of a duration flag where 0 means "do not wait".
_non_negative_seconds: Final = _seconds(zero_ok=True)


def _add_drain_timeout(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--drain-timeout",
        type=_seconds(zero_ok=True, maximum=MAX_DRAIN_TIMEOUT),
        default=None,
        metavar="SECONDS",
        help=f"seconds SIGTERM or SIGINT waits for {what}, then gives up on them and "
        f"exits {RET_DRAIN_DEADLINE} (default {ENV_PREFIX}DRAIN_TIMEOUT or "
        f"{DEFAULT_DRAIN_TIMEOUT:g})",
    )


def _drain_timeout(args: argparse.Namespace) -> float:
    """--drain-timeout, else its environment variable, else the default.

    Raises:
        UsageError: the environment variable is not a valid number of seconds.
    """
    if args.drain_timeout is not None:
        value: float = args.drain_timeout
        return value
    variable = ENV_PREFIX + "DRAIN_TIMEOUT"
    try:
        text = env_value(variable, "a number of seconds")
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if text is None:
        return DEFAULT_DRAIN_TIMEOUT
    try:
        return parse_seconds(text, zero_ok=True, maximum=MAX_DRAIN_TIMEOUT)
    except ValueError as exc:
        raise UsageError(f"{variable} {exc}") from None


def _strategies(text: str) -> list[str]:
    names = [part for part in text.replace(" ", "").split(",") if part]
    if not names:
        raise argparse.ArgumentTypeError("needs at least one strategy")
    try:
        return [parse_strategy(name).name for name in names]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _one_strategy(text: str) -> str:
    names = _strategies(text)
    if len(names) != 1:
        raise argparse.ArgumentTypeError(f"takes only one strategy, got {len(names)}")
    return names[0]


def _chunks(text: str) -> list[int | None]:
    """A comma list of chunk sizes; ``auto`` (None) picks one from the job count."""
    values: list[int | None] = []
    parse = _int_in(1, MAX_QUEUE_SIZE)
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        values.append(None if part == "auto" else parse(part))
    if not values:
        raise argparse.ArgumentTypeError("needs at least one value")
    return values


# -- the parser -------------------------------------------------------------

_RUN_HELP: Final = f"""\
Run the seed's demo: {DEFAULT_JOBS:,} jobs on {DEFAULT_WORKERS} workers, each job
returning its own index as a string. Every strategy runs one after the other,
first faithfully (chunk 1: one job per hand-off, as the seed sends one message
at a time), then in its best chunked form; a table compares them and a last
line names the fastest.

strategies: batch (seed approach 1: blocks of --block jobs to one worker, then
the next), round_robin (seed approach 2: one job to each worker in turn), pull
(one shared queue, idle workers take the next job: the Go article's design),
key (a hash of the job's key picks the worker).

Defaults come from the environment when set (a flag wins over its variable):
{ENV_PREFIX}WORKERS, {ENV_PREFIX}STRATEGY (one strategy), {ENV_PREFIX}CHUNK (one
chunk), {ENV_PREFIX}BLOCK, {ENV_PREFIX}QUEUE_SIZE, {ENV_PREFIX}EXECUTOR,
{ENV_PREFIX}PUT_TIMEOUT, {ENV_PREFIX}JOB_TIMEOUT. An empty variable is an error.
"""


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="dispatchkit",
        description="Dispatch jobs to a pool of workers with the strategy you choose, "
        "and measure which strategy is faster.",
    )
    parser.add_argument("--version", action="version", version=f"dispatchkit {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    run = commands.add_parser(
        "run",
        help="run the seed's demo with every strategy and compare them",
        description=_RUN_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument(
        "--jobs",
        type=_int_in(1, 10**10),
        default=DEFAULT_JOBS,
        help=f"number of jobs (default {DEFAULT_JOBS:,})",
    )
    run.add_argument(
        "--workers",
        type=_int_in(1, MAX_WORKERS),
        default=None,
        help=f"number of workers (default {ENV_PREFIX}WORKERS or {DEFAULT_WORKERS})",
    )
    run.add_argument(
        "--strategy",
        type=_strategies,
        default=None,
        metavar="LIST",
        help=f"comma-separated strategies to run (default {ENV_PREFIX}STRATEGY or "
        f"{','.join(DEFAULT_STRATEGIES)})",
    )
    run.add_argument(
        "--chunk",
        type=_chunks,
        default=None,
        metavar="LIST",
        help="comma-separated jobs per hand-off; 'auto' picks the best chunked form "
        f"for the job count (default {ENV_PREFIX}CHUNK or 1,auto)",
    )
    run.add_argument(
        "--block",
        type=_int_in(1, MAX_QUEUE_SIZE),
        default=None,
        help=f"block size of the batch strategy (default {ENV_PREFIX}BLOCK or 100)",
    )
    run.add_argument(
        "--queue-size",
        type=_int_in(1, MAX_QUEUE_SIZE),
        default=None,
        help=f"jobs an inbox holds before dispatch waits (default {ENV_PREFIX}QUEUE_SIZE or 1024)",
    )
    run.add_argument(
        "--executor",
        choices=EXECUTOR_CHOICES,
        default=None,
        help=f"where the workers run: threads, processes or asyncio tasks "
        f"(default {ENV_PREFIX}EXECUTOR or thread)",
    )
    run.add_argument(
        "--put-timeout",
        type=_non_negative_seconds,
        default=None,
        metavar="SECONDS",
        help=f"seconds a hand-off waits for room in a full inbox before the run fails "
        f"(default {ENV_PREFIX}PUT_TIMEOUT or no limit)",
    )
    run.add_argument(
        "--job-timeout",
        type=_positive_seconds,
        default=None,
        metavar="SECONDS",
        help=f"seconds one job may run before it is stopped, with --executor process "
        f"(default {ENV_PREFIX}JOB_TIMEOUT or no limit)",
    )
    run.add_argument("--json", action="store_true", help="print the results as JSON")
    run.add_argument("--no-progress", action="store_true", help="do not show a progress bar")
    run.set_defaults(handler=_cmd_run)
    _add_worker_parser(commands)
    _add_bench_parser(commands)
    _add_serve_parser(commands)
    return parser


def _add_worker_parser(commands: argparse._SubParsersAction[_Parser]) -> None:
    worker = commands.add_parser(
        "worker",
        help="run jobs from a Redis queue (on this or any other host)",
        description="Run the registered jobs published to a Redis queue until SIGTERM or "
        "Ctrl-C, which drain: jobs in hand finish and are acknowledged, then it exits 0. "
        f"Jobs still running at --drain-timeout are left unacknowledged, for other workers "
        f"to claim, and it exits {RET_DRAIN_DEADLINE}. Needs dispatchkit[redis].",
    )
    worker.add_argument("--redis", required=True, metavar="URL", help="redis://HOST:PORT/DB")
    worker.add_argument("--queue", default="default", help="the queue's name (default 'default')")
    worker.add_argument(
        "--concurrency",
        type=_int_in(1, MAX_WORKERS),
        default=1,
        help="jobs run at once (default 1)",
    )
    worker.add_argument(
        "--executor",
        choices=EXECUTOR_CHOICES,
        default="thread",
        help="where jobs run: thread (plain functions, --concurrency threads), process "
        "(plain functions in --concurrency worker processes, for CPU-bound jobs) or async "
        "(coroutine functions, --concurrency tasks on one event loop) (default thread)",
    )
    worker.add_argument(
        "--import",
        dest="imports",
        action="append",
        default=[],
        metavar="MODULE",
        help="module that registers the jobs (repeatable)",
    )
    worker.add_argument("--namespace", default=None, help="first part of every Redis key")
    worker.add_argument(
        "--prefetch",
        type=_int_in(1, 100_000),
        default=None,
        help="entries held at once, read in one request (default 2 x concurrency)",
    )
    worker.add_argument(
        "--heartbeat",
        type=_positive_seconds,
        default=1.0,
        help="seconds between heartbeats (default 1)",
    )
    worker.add_argument(
        "--visibility-timeout",
        type=_positive_seconds,
        default=60.0,
        help="seconds an untouched entry waits before another worker claims it (default 60)",
    )
    worker.add_argument(
        "--max-attempts",
        type=_int_in(1, 1000),
        default=3,
        help="deliveries of one job before it is dead-lettered (default 3)",
    )
    worker.add_argument(
        "--unreachable-timeout",
        type=_positive_seconds,
        default=30.0,
        metavar="SECONDS",
        help="seconds Redis may stay unreachable before the worker exits 1, whatever it "
        "holds; its entries stay pending for live workers to claim (default 30)",
    )
    _add_drain_timeout(worker, "the jobs in hand")
    worker.set_defaults(handler=_cmd_worker)


_SERVE_HELP: Final = f"""\
Serve the HTTP ingest service of the Go article on a dispatcher.

POST /v1/payloads takes {{"version", "token", "request_id", "payloads": [object, ...]}}
and answers 202 with the number of payloads accepted: written to NDJSON segment
files in --sink before the answer (fsynced within --fsync-interval), or each
queued as a job that calls --handler. A full queue or a sink that cannot write
answers 503 with Retry-After; all payloads of a request are accepted together or
not at all. GET /healthz (503 with the reason when no work can be taken) and
GET /metrics (Prometheus; open unless --metrics-token) too.
SIGTERM or SIGINT stops intake, drains the queue, fsyncs the sink and exits 0;
requests still open after --drain-timeout have their connections closed, the
queue is drained all the same, and it exits {RET_DRAIN_DEADLINE}. It exits
{RET_UNSTORED} if payloads answered 202 could not be stored (an fsync failed).
The bearer tokens may come from {ENV_PREFIX}TOKEN and {ENV_PREFIX}METRICS_TOKEN.
"""


def _add_serve_parser(commands: argparse._SubParsersAction[_Parser]) -> None:
    serve = commands.add_parser(
        "serve",
        help="serve the HTTP ingest service (needs dispatchkit[serve])",
        description=_SERVE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=_int_in(0, 65535), default=8080, help="port (default 8080)")
    serve.add_argument(
        "--workers",
        type=_int_in(1, MAX_WORKERS),
        default=2,
        help="workers (default 2)",
    )
    serve.add_argument(
        "--queue-size",
        type=_int_in(1, MAX_QUEUE_SIZE),
        default=4096,
        help="payload jobs an inbox holds before requests get 503 (default 4096)",
    )
    serve.add_argument(
        "--executor",
        choices=("auto", *kind_names(in_process=True)),
        default="auto",
        help="workers: async (tasks on the server's loop), thread (for a blocking handler), "
        "or auto: async for the sink and coroutine handlers, thread for plain handlers "
        "(default auto)",
    )
    serve.add_argument(
        "--strategy",
        type=_one_strategy,
        default="pull",
        help="round_robin, batch, pull or key (default pull)",
    )
    serve.add_argument("--sink", default=None, metavar="DIR", help="directory of NDJSON segments")
    serve.add_argument(
        "--handler",
        dest="job_handler",
        default=None,
        metavar="MODULE:FUNCTION",
        help="call this function with each decoded payload instead of storing it "
        "(modules are found in the current directory too)",
    )
    serve.add_argument(
        "--token", default=None, help=f"bearer token required to post ({ENV_PREFIX}TOKEN)"
    )
    serve.add_argument(
        "--metrics-token",
        default=None,
        help=f"bearer token required on GET /metrics ({ENV_PREFIX}METRICS_TOKEN; "
        "default: /metrics is open)",
    )
    serve.add_argument(
        "--max-depth",
        type=_int_in(3, 512),  # the service's MAX_MAX_DEPTH
        default=64,
        metavar="LEVELS",
        help="deepest nesting of arrays and objects in a request body, the body's own "
        "object counting 1; deeper bodies get 400 (default 64, at most 512)",
    )
    serve.add_argument(
        "--max-body",
        type=_int_in(1, 1 << 30),
        default=1 << 20,
        metavar="BYTES",
        help="largest request body (default 1 MiB)",
    )
    serve.add_argument(
        "--segment-bytes",
        type=_int_in(1, 1 << 40),
        default=64 << 20,
        metavar="BYTES",
        help="size at which a new segment file starts (default 64 MiB)",
    )
    serve.add_argument(
        "--fsync-interval",
        type=_positive_seconds,
        default=1.0,
        metavar="SECONDS",
        help="seconds between two flushes of the sink to disk (default 1)",
    )
    serve.add_argument(
        "--redis",
        default=None,
        metavar="URL",
        help="hand each payload to remote workers (dispatchkit worker) through this Redis "
        "server instead of a sink or handler here; needs dispatchkit[redis]",
    )
    serve.add_argument(
        "--queue", default="ingest", help="with --redis: the workers' --queue (default ingest)"
    )
    serve.add_argument(
        "--namespace",
        default="dispatchkit",
        help="with --redis: the workers' --namespace (default dispatchkit)",
    )
    serve.add_argument(
        "--job",
        default="dispatchkit.payload",
        metavar="NAME",
        help="with --redis: the registered job the workers run with each payload "
        "(default dispatchkit.payload)",
    )
    serve.add_argument("--access-log", action="store_true", help="log every request (slower)")
    serve.add_argument(
        "--interface",
        choices=("rsgi", "asgi"),
        default="rsgi",
        help="how the server calls the app: rsgi, granian's own (faster), or asgi (default rsgi)",
    )
    _add_drain_timeout(serve, "open requests")
    serve.set_defaults(handler=_cmd_serve)


# -- commands ---------------------------------------------------------------


def _cmd_run(args: argparse.Namespace) -> int:
    if args.job_timeout is not None and args.executor and worker_kind(args.executor).in_process:
        raise UsageError(
            "--job-timeout needs --executor process: a running thread, or a plain function "
            "on the event loop, cannot be stopped"
        )
    try:
        settings = Settings.from_env(
            workers=args.workers,
            queue_size=args.queue_size,
            block=args.block,
            # Settings checks the kinds Dispatcher runs; another front end's need no check.
            executor=args.executor if args.executor in SETTINGS_EXECUTORS else None,
            put_timeout=args.put_timeout,
            job_timeout=args.job_timeout,
            # A flag's list stands for its variable, which is then not read.
            strategy=args.strategy[0] if args.strategy else None,
            chunk=1 if args.chunk else None,
        )
        in_env = env_fields()
    except (ValueError, TypeError) as exc:
        raise UsageError(str(exc)) from None
    # The demo's own defaults (the seed's 20 workers, every strategy, chunk 1 and auto)
    # apply where neither a flag nor a variable says otherwise.
    workers = args.workers or (settings.workers if "workers" in in_env else DEFAULT_WORKERS)
    strategies = args.strategy or (
        [settings.resolved_strategy.name] if "strategy" in in_env else list(DEFAULT_STRATEGIES)
    )
    chunks: list[int | None] = args.chunk or ([settings.chunk] if "chunk" in in_env else [1, None])
    plan: list[tuple[str, int]] = []
    for strategy in strategies:
        for chunk in chunks:
            resolved = auto_chunk(args.jobs, workers) if chunk is None else chunk
            if (strategy, resolved) not in plan:
                plan.append((strategy, resolved))

    from ._progress import RunProgress

    results: list[SeedResult] = []
    show_progress = not args.json and not args.no_progress and sys.stderr.isatty()
    try:
        with RunProgress(total=args.jobs * len(plan), enabled=show_progress) as progress:
            for strategy, chunk in plan:
                result = run_seed(
                    jobs=args.jobs,
                    workers=workers,
                    strategy=strategy,
                    chunk=chunk,
                    block=settings.block,
                    queue_size=settings.queue_size,
                    executor=args.executor or settings.executor,
                    put_timeout=settings.put_timeout,
                    job_timeout=settings.job_timeout,
                    on_start=progress.follow,
                )
                progress.finish_one(args.jobs)
                results.append(result)
    except QueueFull as exc:
        # Only with a put timeout: the workers did not make room in time.
        print(f"dispatchkit run: failed: {exc} (the put timeout)", file=sys.stderr)
        return RET_FAILED
    except WorkerStartError as exc:  # more workers than this machine allows
        raise UsageError(str(exc)) from None

    if args.json:
        print(json.dumps([r.to_dict() for r in results], indent=2))
    else:
        from ._render import print_seed_results

        print_seed_results(results, fastest(results))
    return RET_OK if all(r.failed == 0 for r in results) else RET_FAILED


def _cmd_worker(args: argparse.Namespace) -> int:
    import logging

    from .errors import TransportError, TransportUnavailable

    try:
        from .remote import run_worker
    except TransportUnavailable as exc:
        raise UsageError(str(exc)) from None
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    options: dict[str, object] = {
        "prefetch": args.prefetch,
        "heartbeat": args.heartbeat,
        "visibility_timeout": args.visibility_timeout,
        "max_attempts": args.max_attempts,
        "drain_timeout": _drain_timeout(args),
        "unreachable_timeout": args.unreachable_timeout,
    }
    if args.namespace:
        options["namespace"] = args.namespace
    try:
        report = run_worker(
            args.redis,
            args.queue,
            imports=args.imports,
            concurrency=args.concurrency,
            executor=args.executor,
            **options,
        )
    except (ValueError, ImportError) as exc:
        raise UsageError(str(exc)) from None
    except TransportError as exc:
        print(f"dispatchkit worker: {exc}", file=sys.stderr)
        return RET_FAILED
    counts = (
        f"{report.succeeded} succeeded, {report.failed} failed, "
        f"{report.dead_lettered} dead-lettered"
    )
    if report.abandoned:
        print(
            f"dispatchkit worker: drain deadline passed: {report.abandoned} entries left "
            f"unacknowledged for other workers to claim; {counts}",
            file=sys.stderr,
        )
        return RET_DRAIN_DEADLINE
    print(f"dispatchkit worker: stopped: {counts}", file=sys.stderr)
    return RET_OK


# -- bench --------------------------------------------------------------------

_BENCH_HELP: Final = """\
Measure which strategy, chunk, worker kind and worker count is fastest on a
workload, and say so: a table, a verdict per workload ("no clear winner" when
the repeats overlap), results.json with every repeat, and PNG charts
(throughput, latency, a per-worker timeline) in --out. For your own function
(--workload package.module:function) one line recommends what to use.

built-in workloads: noop (returns its input), cpu (about 1 ms of pure-Python
arithmetic), io (waits 5 ms), mixed (half cpu, half io), skewed (io, but 1% of
jobs take 50x longer).

Charts need the bench extra: pip install 'dispatchkit[bench]'.
"""


def _list(choices: Sequence[str] | None = None) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        values = [part for part in text.replace(" ", "").split(",") if part]
        if not values:
            raise argparse.ArgumentTypeError("needs at least one value")
        for value in values:
            if choices is not None and value not in choices:
                raise argparse.ArgumentTypeError(
                    f"unknown value {value!r} (expected {', '.join(choices)})"
                )
        return values

    return parse


def _int_list(low: int, high: int) -> Callable[[str], list[int]]:
    parse_one = _int_in(low, high)

    def parse(text: str) -> list[int]:
        return [parse_one(part) for part in _list()(text)]

    return parse


def _add_bench_parser(commands: argparse._SubParsersAction[_Parser]) -> None:
    bench = commands.add_parser(
        "bench",
        help="measure strategies, worker kinds and peers on a workload, with charts and a verdict",
        description=_BENCH_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = bench.add_argument
    add(
        "--workload",
        type=_list(),
        default=None,
        metavar="LIST",
        help="comma-separated built-in workloads or package.module:function "
        "(default: every built-in one)",
    )
    add(
        "--inputs",
        default=None,
        metavar="SPEC",
        help="inputs of your function: range:N, or a file with one JSON value per line",
    )
    add(
        "--executor",
        type=_list((*EXECUTOR_CHOICES, "all", "auto")),
        default=["auto"],
        metavar="LIST",
        help="worker kinds: thread, process, async, all (every kind on every workload) or "
        "auto (default: threads and asyncio everywhere, processes on cpu and mixed)",
    )
    add(
        "--strategies",
        type=_strategies,
        default=None,
        metavar="LIST",
        help="comma-separated strategies (default round_robin,batch,pull,key)",
    )
    add(
        "--workers",
        type=_int_list(1, MAX_WORKERS),
        default=None,
        metavar="LIST",
        help="worker counts to sweep (default 8)",
    )
    add(
        "--chunk",
        type=_int_list(1, MAX_QUEUE_SIZE),
        default=None,
        metavar="LIST",
        help="jobs per hand-off to sweep (default 1,32; 1 with --quick)",
    )
    add(
        "--jobs",
        type=_int_in(1, 10**8),
        default=None,
        help="jobs per run (default per workload: noop 20,000, cpu and mixed 600, "
        "io and skewed 300)",
    )
    add(
        "--repeat",
        type=_int_in(1, 1000),
        default=None,
        help="runs per configuration; medians are reported (default 3, 2 with --quick)",
    )
    add(
        "--peers",
        action="store_true",
        help="also run ThreadPoolExecutor, ProcessPoolExecutor, multiprocessing.Pool and asyncio",
    )
    add(
        "--out",
        default="bench-results",
        metavar="DIR",
        help="where results.json, the charts and the report go (default bench-results)",
    )
    add(
        "--quick", action="store_true", help="a first look: a third of the jobs, 2 repeats, chunk 1"
    )
    add("--report", action="store_true", help="also write a Markdown report with the charts")
    add("--json", action="store_true", help="print the results as JSON instead of a table")
    add("--no-progress", action="store_true", help="do not show a progress bar")
    add("--no-charts", action="store_true", help="write no PNG charts (faster)")
    bench.set_defaults(handler=_cmd_bench)


def _cmd_bench(args: argparse.Namespace) -> int:
    from pathlib import Path

    from . import bench

    defaults = bench.BenchOptions()
    options = bench.BenchOptions(
        workloads=tuple(args.workload or defaults.workloads),
        executors=tuple(args.executor),
        strategies=tuple(args.strategies or defaults.strategies),
        workers=tuple(args.workers or defaults.workers),
        chunks=tuple(args.chunk) if args.chunk else None,
        jobs=args.jobs,
        inputs=args.inputs,
        repeat=args.repeat,
        peers=args.peers,
        quick=args.quick,
    )
    out = Path(args.out)
    try:
        plan = bench.make_plan(options)
        if args.report:
            bench.require_charts()
        out.mkdir(parents=True, exist_ok=True)
    except bench.BenchUsageError as exc:
        raise UsageError(str(exc)) from None
    except OSError as exc:
        raise UsageError(f"--out {out}: {exc.strerror}") from None

    show_progress = not args.json and not args.no_progress and sys.stderr.isatty()
    with bench.BenchProgress(plan.runs, show_progress) as progress:
        results = bench.run_bench(
            options, plan=plan, on_run=progress.on_run, command=_bench_command(options, args)
        )
    written = [bench.write_results(results, out)]
    if args.report or (not args.no_charts and bench.charts_available()):
        written += bench.draw_charts(results, out)
    if args.report:
        written.append(bench.write_report(results, out, written[1:]))
    if args.json:
        print(json.dumps(bench.to_json(results), indent=2))
    else:
        bench.print_table(results)
        print(f"Wrote {', '.join(str(p) for p in written)} in {results.seconds:.0f} s.")
    if not args.no_charts and not bench.charts_available():
        print("No charts: install dispatchkit[bench] for matplotlib.", file=sys.stderr)
    failed = sum(m.failed for r in results.results for m in r.metrics)
    if failed:
        print(f"dispatchkit bench: {failed:,} jobs failed", file=sys.stderr)
        return RET_FAILED
    return RET_OK


def _bench_command(options: object, args: argparse.Namespace) -> str:
    """The command line that reproduces a bench, for its results and report."""
    import shlex

    parts = ["dispatchkit", "bench"]
    for flag in ("workload", "executor", "strategies", "workers", "chunk"):
        value = getattr(args, flag)
        if value:
            parts += [f"--{flag}", ",".join(str(v) for v in value)]
    for flag in ("inputs", "jobs", "repeat"):
        if getattr(args, flag) is not None:
            parts += [f"--{flag}", str(getattr(args, flag))]
    parts += [f"--{flag}" for flag in ("peers", "quick", "report") if getattr(args, flag)]
    parts += ["--out", args.out]
    return shlex.join(parts)


def _cmd_serve(args: argparse.Namespace) -> int:
    try:
        from . import service
    except ImportError as exc:
        raise UsageError(str(exc)) from None
    chosen = [
        flag
        for flag, value in (
            ("--sink", args.sink),
            ("--handler", args.job_handler),
            ("--redis", args.redis),
        )
        if value is not None
    ]
    if not chosen:
        raise UsageError("--sink DIR is required (or --handler MODULE:FUNCTION, or --redis URL)")
    if len(chosen) > 1:
        raise UsageError(f"choose one of {', '.join(chosen)}: where payloads go")
    try:
        config = service.ServeConfig(
            sink=None if args.sink is None else Path(args.sink),
            host=args.host,
            port=args.port,
            workers=args.workers,
            executor=args.executor,
            queue_size=args.queue_size,
            strategy=args.strategy,
            handler=args.job_handler,
            token=args.token if args.token is not None else _token_from_env(),
            metrics_token=args.metrics_token
            if args.metrics_token is not None
            else _token_from_env("METRICS_TOKEN"),
            max_depth=args.max_depth,
            max_body=args.max_body,
            segment_bytes=args.segment_bytes,
            fsync_interval=args.fsync_interval,
            access_log=args.access_log,
            interface=args.interface,
            redis=args.redis,
            queue=args.queue,
            namespace=args.namespace,
            job=args.job,
            drain_timeout=_drain_timeout(args),
        )
        service.configure_logging()
        clean = service.serve(config)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    except service.UnstoredPayloads as exc:
        print(f"dispatchkit serve: error: {exc}", file=sys.stderr)
        return RET_UNSTORED
    except (OSError, RuntimeError) as exc:
        print(f"dispatchkit serve: error: {exc}", file=sys.stderr)
        return RET_FAILED
    # The worker logged the final line: stopped, or what the deadline cut short.
    return RET_OK if clean else RET_DRAIN_DEADLINE


def _token_from_env(name: str = "TOKEN") -> str | None:
    try:
        return env_value(ENV_PREFIX + name, "a bearer token")
    except ValueError as exc:
        raise UsageError(str(exc)) from None


# -- entry point -------------------------------------------------------------


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    # SIGTERM does what Ctrl-C does: Python's handler raises KeyboardInterrupt;
    # under asyncio.run, asyncio's handler cancels the main task instead, since
    # a KeyboardInterrupt raised inside an asyncio job only fails that job.
    on_sigint = signal.getsignal(signal.SIGINT)
    if callable(on_sigint):
        on_sigint(signal.SIGINT, frame)
        return
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # no event loop here
        raise KeyboardInterrupt from None
    # SIGINT is ignored, so asyncio.run installed no handler of its own: cancel
    # its tasks, as it does itself when it ends.
    for task in asyncio.all_tasks(loop):
        task.cancel()


def _look_in_current_directory() -> None:
    """Find modules named on the command line in the current directory too.

    As with ``python -m dispatchkit``, for --handler, --import and a bench
    function. Appended, not put first: a ``redis.py`` lying there must not shadow the
    packages dispatchkit itself imports.
    """
    with contextlib.suppress(OSError):  # the current directory was deleted
        here = os.getcwd()
        if here not in sys.path and "" not in sys.path:
            sys.path.append(here)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    _look_in_current_directory()
    # SIGTERM stops a run the way Ctrl-C does: queued jobs cancelled, counts reported.
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        handler: Callable[[argparse.Namespace], int] = args.handler
        return handler(args)
    except UsageError as exc:
        print(f"dispatchkit {args.command}: error: {exc}", file=sys.stderr)
        return RET_USAGE
    except Interrupted as exc:
        print(f"dispatchkit {args.command}: {exc}", file=sys.stderr)
        return RET_INTERRUPTED
    except KeyboardInterrupt:
        print(f"dispatchkit {args.command}: interrupted", file=sys.stderr)
        return RET_INTERRUPTED
    finally:
        signal.signal(signal.SIGTERM, previous)
