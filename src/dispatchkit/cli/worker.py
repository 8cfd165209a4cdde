"""``dispatchkit worker``: run the registered jobs published to a Redis queue."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Final

from dispatchkit._environ import available_cpus
from dispatchkit._limits import MAX_PROCESSES, MAX_WORKERS

from .common import (
    UsageError,
    add_command,
    add_drain_timeout,
    add_seconds,
    drain_timeout,
    int_in,
)
from .constants import EXECUTOR_CHOICES, RET_DRAIN_DEADLINE, RET_FAILED, RET_OK, RET_USAGE

if TYPE_CHECKING:
    from collections.abc import Callable

    from dispatchkit.remote import WorkerReport

    from .common import Commands

__all__ = ["add_parser", "command"]

#: Rewrapped to the terminal's width (``raw=False``).
_HELP: Final = (
    "Run the registered jobs published to a Redis queue until SIGTERM or "
    "Ctrl-C, which drain: jobs in hand finish and are acknowledged, then it exits 0. "
    f"Jobs still running at --drain-timeout are left unacknowledged, for other workers "
    f"to claim, and it exits {RET_DRAIN_DEADLINE}. Needs dispatchkit[redis]."
)


def add_parser(commands: Commands) -> None:
    """Add ``worker`` and its flags."""
    worker = add_command(commands, "worker", command, description=_HELP, raw=False)
    add = worker.add_argument
    add("--redis", required=True, metavar="URL", help="redis://HOST:PORT/DB")
    add("--queue", default="default", help="the queue's name (default 'default')")
    add(
        "--concurrency",
        type=int_in(1, MAX_WORKERS),
        default=1,
        help="jobs run at once (default 1)",
    )
    add(
        "--executor",
        choices=EXECUTOR_CHOICES,
        default="thread",
        help="where jobs run: thread (plain functions, --concurrency threads), process "
        "(plain functions in --concurrency worker processes, for CPU-bound jobs) or async "
        "(coroutine functions, --concurrency tasks on one event loop) (default thread)",
    )
    add(
        "--import",
        dest="imports",
        action="append",
        default=[],
        metavar="MODULE",
        help="module that registers the jobs (repeatable)",
    )
    add("--namespace", default=None, help="first part of every Redis key (default dispatchkit)")
    add(
        "--prefetch",
        type=int_in(1, 100_000),
        default=None,
        help="entries held at once at most (default 2 x concurrency); fewer while "
        "entries take long, so that other workers get them",
    )
    add_seconds(worker, "--heartbeat", 1.0, "seconds between heartbeats (default 1)", metavar=None)
    add_seconds(
        worker,
        "--visibility-timeout",
        60.0,
        "seconds an untouched entry waits before another worker claims it (default 60)",
        metavar=None,
    )
    add(
        "--max-attempts",
        type=int_in(1, 1000),
        default=3,
        help="deliveries of one job before it is dead-lettered (default 3)",
    )
    add_seconds(
        worker,
        "--unreachable-timeout",
        30.0,
        "seconds Redis may stay unreachable before the worker exits 1, whatever it "
        "holds; its entries stay pending for live workers to claim (default 30)",
    )
    add_drain_timeout(worker, "the jobs in hand")
    add(
        "--processes",
        type=_processes,
        default=1,
        metavar="N",
        help="workers forked from this process once the job modules are imported, each "
        "with --concurrency of its own: N, or auto for one per CPU this process may run "
        "on (default 1: this process is the worker). They start together, in the time of "
        "one import; SIGTERM and Ctrl-C drain them all, a worker killed by a signal is "
        "replaced, and the exit code is the highest of theirs",
    )


def _processes(text: str) -> int:
    if text == "auto":
        return available_cpus()
    return int_in(1, MAX_PROCESSES)(text)


def command(args: argparse.Namespace) -> int:
    """Run a worker as ``args`` say, until a signal; the exit code."""
    import logging

    from dispatchkit.errors import TransportUnavailable

    try:
        from dispatchkit.remote import run_worker
    except TransportUnavailable as exc:
        raise UsageError(str(exc)) from None
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if args.processes > 1:
        from dispatchkit.remote.forked import run_forked
        from dispatchkit.remote.worker import import_job_modules

        # Imported once, here, for every worker forked: redis-py and the job modules;
        # and the URL checked once (no connection is made: each worker makes its own).
        try:
            from dispatchkit.transports.redis import RedisTransport

            import_job_modules(args.imports)
            RedisTransport(args.redis, queue=args.queue)
        except (TransportUnavailable, ValueError, ImportError) as exc:
            raise UsageError(str(exc)) from None
        return run_forked(
            args.processes, lambda started: _run_forked_one(args, run_worker, started)
        )
    return _run_one(args, run_worker)


def _run_forked_one(
    args: argparse.Namespace,
    run_worker: Callable[..., WorkerReport],
    started: Callable[[], None],
) -> int:
    """:func:`_run_one` in a forked worker, which says its own usage errors."""
    try:
        return _run_one(args, run_worker, started)
    except UsageError as exc:
        print(f"dispatchkit worker: error: {exc}", file=sys.stderr)
        return RET_USAGE


def _run_one(
    args: argparse.Namespace,
    run_worker: Callable[..., WorkerReport],
    started: Callable[[], None] | None = None,
) -> int:
    """Run one worker in this process until a signal; the exit code."""
    from dispatchkit.errors import TransportError

    options: dict[str, object] = {
        "prefetch": args.prefetch,
        "heartbeat": args.heartbeat,
        "visibility_timeout": args.visibility_timeout,
        "max_attempts": args.max_attempts,
        "drain_timeout": drain_timeout(args),
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
            started=started,
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
