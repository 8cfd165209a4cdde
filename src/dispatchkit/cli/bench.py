"""``dispatchkit bench``: measure strategies, worker kinds and peers on a workload."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Final

from dispatchkit._directories import check_writable
from dispatchkit.settings import MAX_QUEUE_SIZE, MAX_WORKERS

from .common import (
    UsageError,
    add_command,
    add_list,
    add_output_flags,
    int_in,
    int_list,
    names,
    show_progress,
    strategies,
)
from .constants import EXECUTOR_CHOICES, RET_FAILED, RET_OK

if TYPE_CHECKING:
    from .common import Commands

__all__ = ["add_parser", "command"]

_HELP: Final = """\
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


def add_parser(commands: Commands) -> None:
    """Add ``bench`` and its flags."""
    bench = add_command(commands, "bench", command, description=_HELP)
    add = bench.add_argument
    add_list(
        bench,
        "--workload",
        names(),
        "comma-separated built-in workloads or package.module:function "
        "(default: every built-in one)",
    )
    add(
        "--inputs",
        default=None,
        metavar="SPEC",
        help="inputs of your function: range:N, or a file with one JSON value per line",
    )
    add_list(
        bench,
        "--executor",
        names((*EXECUTOR_CHOICES, "all", "auto")),
        "worker kinds: thread, process, async, all (every kind on every workload) or "
        "auto (default: threads and asyncio everywhere, processes on cpu, mixed and "
        "your own function)",
        default=["auto"],
    )
    add_list(
        bench,
        "--strategies",
        strategies,
        "comma-separated strategies (default round_robin,batch,pull,key)",
    )
    add_list(
        bench,
        "--workers",
        int_list(1, MAX_WORKERS),
        "worker counts to sweep (default 8 and the CPU count)",
    )
    add_list(
        bench,
        "--chunk",
        int_list(1, MAX_QUEUE_SIZE),
        "jobs per hand-off to sweep (default 1,32; 1 with --quick)",
    )
    add(
        "--jobs",
        type=int_in(1, 10**8),
        default=None,
        help="jobs per run (default per workload: noop 10,000, cpu 400, io 300, mixed 400, "
        "skewed 200)",
    )
    add(
        "--repeat",
        type=int_in(1, 1000),
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
    add_output_flags(bench, "print the results as JSON instead of a table")
    add("--no-charts", action="store_true", help="write no PNG charts (faster)")


def command(args: argparse.Namespace) -> int:
    """Run the bench as ``args`` say, write and print its results; the exit code."""
    from dispatchkit import bench

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
        # Before the runs, not after them: a directory that takes no file would lose them.
        check_writable(out)
    except bench.BenchUsageError as exc:
        raise UsageError(str(exc)) from None
    except OSError as exc:
        raise UsageError(f"--out {out}: cannot write there: {exc.strerror or exc}") from None

    with bench.BenchProgress(plan.runs, show_progress(args)) as progress:
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
