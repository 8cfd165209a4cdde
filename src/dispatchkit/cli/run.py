"""``dispatchkit run``: the seed's demo with every strategy, compared in a table."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Final

from dispatchkit.demo import (
    DEFAULT_JOBS,
    DEFAULT_STRATEGIES,
    DEFAULT_WORKERS,
    MAX_EVEN_CHUNK,
    SeedResult,
    fastest,
    run_seed,
    seed_plan,
)
from dispatchkit.errors import QueueFull, WorkerStartError
from dispatchkit.executors.registry import worker_kind
from dispatchkit.settings import ENV_PREFIX, MAX_QUEUE_SIZE, Settings, env_fields
from dispatchkit.settings import EXECUTORS as SETTINGS_EXECUTORS

from .common import (
    UsageError,
    add_command,
    add_list,
    add_output_flags,
    add_pool,
    add_seconds,
    chunks,
    int_in,
    show_progress,
    strategies,
)
from .constants import EXECUTOR_CHOICES, RET_FAILED, RET_OK

if TYPE_CHECKING:
    from .common import Commands

__all__ = ["add_parser", "command"]

_HELP: Final = f"""\
Run the seed's demo: {DEFAULT_JOBS:,} jobs on {DEFAULT_WORKERS} workers, each job
returning its own index as a string. By default batch, round_robin and pull
run one after the other, first faithfully (chunk 1: one job per hand-off, as
the seed sends one message at a time), then with an even chunk worked out from
the job count; then auto, the library's defaults, with hand-offs sized as it
runs. A table compares them and a last line names the fastest.

strategies: batch (seed approach 1: blocks of --block jobs to one worker, then
the next), round_robin (seed approach 2: one job to each worker in turn), pull
(one shared queue, idle workers take the next job: the Go article's design),
auto (pull's shared queue, chunks sized from measured job times), key (a hash
of the job's key picks the worker).

chunks: a number of jobs per hand-off; even (jobs / (4 x workers), at most
{MAX_EVEN_CHUNK:,}: a fixed share for each hand-off); auto (the library's chunk="auto":
adaptive with the auto strategy, one job a hand-off with the others).

Defaults come from the environment when set (a flag wins over its variable):
{ENV_PREFIX}WORKERS, {ENV_PREFIX}STRATEGY (one strategy), {ENV_PREFIX}CHUNK (one
chunk), {ENV_PREFIX}BLOCK, {ENV_PREFIX}QUEUE_SIZE, {ENV_PREFIX}EXECUTOR,
{ENV_PREFIX}PUT_TIMEOUT, {ENV_PREFIX}JOB_TIMEOUT. An empty variable is an error.
"""


def add_parser(commands: Commands) -> None:
    """Add ``run`` and its flags."""
    run = add_command(commands, "run", command, description=_HELP)
    run.add_argument(
        "--jobs",
        type=int_in(1, 10**10),
        default=DEFAULT_JOBS,
        help=f"number of jobs (default {DEFAULT_JOBS:,})",
    )
    add_pool(
        run,
        workers=(None, f"number of workers (default {ENV_PREFIX}WORKERS or {DEFAULT_WORKERS})"),
        queue_size=(
            None,
            f"jobs an inbox holds before dispatch waits (default {ENV_PREFIX}QUEUE_SIZE or 1024)",
        ),
        executor=(
            EXECUTOR_CHOICES,
            None,
            f"where the workers run: threads, processes or asyncio tasks "
            f"(default {ENV_PREFIX}EXECUTOR or thread)",
        ),
    )
    add_list(
        run,
        "--strategy",
        strategies,
        f"comma-separated strategies to run (default {ENV_PREFIX}STRATEGY or "
        f"{','.join(DEFAULT_STRATEGIES)})",
    )
    add_list(
        run,
        "--chunk",
        chunks,
        "comma-separated jobs per hand-off, 'even' or 'auto' (see above; default "
        f"{ENV_PREFIX}CHUNK, or 1,even for batch, round_robin and pull and auto for auto)",
    )
    run.add_argument(
        "--block",
        type=int_in(1, MAX_QUEUE_SIZE),
        default=None,
        help=f"block size of the batch strategy (default {ENV_PREFIX}BLOCK or 100)",
    )
    add_seconds(
        run,
        "--put-timeout",
        None,
        f"seconds a hand-off waits for room in a full inbox before the run fails "
        f"(default {ENV_PREFIX}PUT_TIMEOUT or no limit)",
        zero_ok=True,
    )
    add_seconds(
        run,
        "--job-timeout",
        None,
        f"seconds one job may run before it is stopped, with --executor process "
        f"(default {ENV_PREFIX}JOB_TIMEOUT or no limit)",
    )
    add_output_flags(run, "print the results as JSON")


def command(args: argparse.Namespace) -> int:
    """Run the demo as ``args`` say; the exit code."""
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
    # The demo's own defaults (the seed's 20 workers, every strategy, its chunks)
    # apply where neither a flag nor a variable says otherwise.
    workers = args.workers or (settings.workers if "workers" in in_env else DEFAULT_WORKERS)
    chosen = args.strategy or (
        [settings.resolved_strategy.name] if "strategy" in in_env else list(DEFAULT_STRATEGIES)
    )
    sizes = args.chunk or ([settings.chunk] if "chunk" in in_env else None)
    plan = seed_plan(chosen, sizes, args.jobs, workers)

    from dispatchkit._progress import RunProgress

    results: list[SeedResult] = []
    try:
        with RunProgress(total=args.jobs * len(plan), enabled=show_progress(args)) as progress:
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
        from dispatchkit._render import print_seed_results

        print_seed_results(results, fastest(results))
    return RET_OK if all(r.failed == 0 for r in results) else RET_FAILED
