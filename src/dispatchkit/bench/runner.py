"""Plan the sweep, run every configuration ``repeat`` times, keep every run.

Repeats are interleaved (every configuration once, then again), so that a
noisy minute on a shared machine spreads over all configurations instead of
spoiling one of them.
"""

from __future__ import annotations

import gc
import os
import platform
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from time import perf_counter
from typing import Final

from dispatchkit import __version__
from dispatchkit.executors.registry import WORKER_KINDS
from dispatchkit.strategies import parse_strategy

from .adapters import available, check_available, run_kind
from .config import EXECUTORS, PEERS, Config
from .errors import BenchUsageError
from .metrics import RunMetrics, RunRecord, compute_metrics
from .peers import PEER_RUNNERS
from .workloads import BUILTIN, Workload, calibrate_cpu, resolve_workload

__all__ = [
    "DEFAULT_CHUNKS",
    "DEFAULT_REPEAT",
    "DEFAULT_STRATEGIES",
    "DEFAULT_WORKERS",
    "DEFAULT_WORKLOADS",
    "BenchOptions",
    "BenchResults",
    "ConfigResult",
    "Plan",
    "make_plan",
    "run_bench",
]

DEFAULT_WORKLOADS: Final = tuple(BUILTIN)
DEFAULT_STRATEGIES: Final = ("round_robin", "batch", "pull", "key")
#: More workers than this machine class's 2 cores, so that I/O-bound jobs overlap,
#: and the CPU count, what CPU-bound jobs want.
DEFAULT_WORKERS: Final = tuple(sorted({8, os.cpu_count() or 1}))
#: The seed's one job per hand-off, and a chunked form.
DEFAULT_CHUNKS: Final = (1, 32)
DEFAULT_REPEAT: Final = 3
#: The built-in workloads that ``--executor auto`` runs on process workers too.
CPU_BOUND: Final = ("cpu", "mixed")
#: ``--quick`` runs this fraction of the jobs, with this many repeats.
QUICK_JOB_DIVISOR: Final = 5
QUICK_REPEAT: Final = 2


@dataclass(frozen=True, slots=True)
class BenchOptions:
    """What to measure. Every sequence must be non-empty.

    Attributes:
        workloads: built-in names or ``package.module:function``.
        executors: ``thread``, ``process``, ``async``, ``all`` (every kind on
            every workload), or ``auto``: threads and asyncio everywhere, and
            processes where they are the point, on the CPU-bound built-in
            workloads (``cpu``, ``mixed``) and on your own function.
        strategies: dispatchkit strategies.
        workers: worker counts to sweep.
        chunks: chunk sizes to sweep.
        jobs: jobs per run (None: each workload's default).
        inputs: inputs of the user's function (``range:N`` or a JSON-lines file).
        repeat: runs per configuration (None: 3, or 2 with ``quick``).
        peers: also run the standard library's pools on the same jobs.
        quick: fewer jobs, repeats and chunks, for a first look.
    """

    workloads: tuple[str, ...] = DEFAULT_WORKLOADS
    executors: tuple[str, ...] = ("auto",)
    strategies: tuple[str, ...] = DEFAULT_STRATEGIES
    workers: tuple[int, ...] = DEFAULT_WORKERS
    chunks: tuple[int, ...] | None = None
    jobs: int | None = None
    inputs: str | None = None
    repeat: int | None = None
    peers: bool = False
    quick: bool = False


@dataclass(slots=True)
class Plan:
    """The configurations to run, and why some asked for were left out."""

    workloads: dict[str, Workload]
    configs: list[Config]
    repeat: int
    notes: list[str] = field(default_factory=list)

    @property
    def runs(self) -> int:
        return len(self.configs) * self.repeat


def _check_sweep(name: str, values: tuple[object, ...] | None) -> None:
    if values is not None and not values:
        raise BenchUsageError(f"{name} needs at least one value")


def _executors(asked: tuple[str, ...], notes: list[str]) -> list[str]:
    if "all" in asked or "auto" in asked:
        missing = [e for e in EXECUTORS if not available(e)]
        if missing:
            notes.append(f"not measured, not available in this version: {', '.join(missing)}")
        return [e for e in EXECUTORS if available(e)]
    for executor in asked:
        if executor not in EXECUTORS:
            raise BenchUsageError(
                f"unknown executor {executor!r}: expected {', '.join(EXECUTORS)} or all"
            )
        check_available(executor)
    return list(dict.fromkeys(asked))


def make_plan(options: BenchOptions) -> Plan:
    """Check the options and list the configurations to run.

    Raises:
        BenchUsageError: an empty sweep, a worker count or chunk below 1, an
            unknown workload, strategy or executor, a workload that cannot be
            loaded, or nothing left to run.
        ExecutorUnavailable: an executor asked for by name that this version lacks.
    """
    for name, values in (
        ("--workload", options.workloads),
        ("--executor", options.executors),
        ("--strategies", options.strategies),
        ("--workers", options.workers),
        ("--chunk", options.chunks),
    ):
        _check_sweep(name, values)
    for name, numbers in (("--workers", options.workers), ("--chunk", options.chunks or ())):
        if any(n < 1 for n in numbers):
            raise BenchUsageError(f"{name} values must be at least 1")
    if options.jobs is not None and options.jobs < 1:
        raise BenchUsageError("--jobs must be at least 1")
    if options.repeat is not None and options.repeat < 1:
        raise BenchUsageError("--repeat must be at least 1")
    try:
        strategies = list(dict.fromkeys(parse_strategy(s).name for s in options.strategies))
    except ValueError as exc:
        raise BenchUsageError(str(exc)) from None
    notes: list[str] = []
    executors = _executors(options.executors, notes)
    auto = "auto" in options.executors
    if options.quick and auto:
        # Starting worker processes for every configuration would take most of
        # the 30 s a quick look may last; ask for them with --executor process.
        left_out = [e for e in executors if not WORKER_KINDS[e].in_process]
        executors = [e for e in executors if e not in left_out]
        for name in left_out:
            notes.append(f"--quick: {name} workers not measured (add --executor {name})")
    chunks = options.chunks or (DEFAULT_CHUNKS[:1] if options.quick else DEFAULT_CHUNKS)
    repeat = options.repeat or (QUICK_REPEAT if options.quick else DEFAULT_REPEAT)

    workloads: dict[str, Workload] = {}
    for spec in dict.fromkeys(options.workloads):
        jobs = options.jobs
        if jobs is None and options.quick and spec in BUILTIN:
            jobs = max(1, BUILTIN[spec][2] // QUICK_JOB_DIVISOR)
        workloads[spec] = resolve_workload(spec, jobs, options.inputs)

    configs: list[Config] = []
    for spec, workload in workloads.items():
        for executor in executors:
            kind = WORKER_KINDS[executor]
            if auto and not kind.in_process and spec in BUILTIN and spec not in CPU_BOUND:
                continue  # processes buy nothing on waits; --executor all measures them
            if (workload.afn if kind.takes_coroutines else workload.fn) is None:
                notes.append(
                    f"{spec}: {executor} workers skipped (the function is not "
                    f"{'a coroutine function' if kind.takes_coroutines else 'synchronous'})"
                )
                continue
            for workers in options.workers:
                # What a user gets with no arguments, judged beside the sweep.
                configs.append(Config.defaults(spec, executor, workers))
                for strategy in strategies:
                    for chunk in chunks:
                        configs.append(Config(spec, executor, strategy, chunk, workers))
        if options.peers:
            configs.extend(_peer_configs(workload, chunks, options.workers))
    if not configs:
        raise BenchUsageError("nothing to run: " + ("; ".join(notes) or "empty sweep"))
    return Plan(workloads, configs, repeat, notes)


def _peer_configs(
    workload: Workload, chunks: tuple[int, ...], workers: tuple[int, ...]
) -> list[Config]:
    configs: list[Config] = []
    for n in workers:
        for peer in PEERS:
            if (workload.afn if peer == "asyncio" else workload.fn) is None:
                continue
            # Only the process pools take a chunksize.
            peer_chunks = chunks if "Process" in peer or "multiprocessing" in peer else (1,)
            configs.extend(
                Config(workload.name, peer, None, c, n) for c in dict.fromkeys(peer_chunks)
            )
    return configs


@dataclass(slots=True)
class ConfigResult:
    """Every run of one configuration, and their metrics."""

    config: Config
    runs: list[RunRecord] = field(default_factory=list)
    metrics: list[RunMetrics] = field(default_factory=list)

    def median(self, name: str) -> float:
        """The median over the repeats of a numeric :class:`RunMetrics` field."""
        return float(statistics.median(float(getattr(m, name)) for m in self.metrics))

    def median_run(self) -> RunRecord:
        """The run whose makespan is the median (the lower one for an even count)."""
        order = sorted(range(len(self.runs)), key=lambda i: self.runs[i].makespan)
        return self.runs[order[(len(order) - 1) // 2]]


@dataclass(slots=True)
class BenchResults:
    """Everything a bench measured, ready to be shown, judged and saved."""

    options: BenchOptions
    plan: Plan
    results: list[ConfigResult]
    machine: dict[str, object]
    started: str
    seconds: float
    command: str = ""

    def by_workload(self) -> dict[str, list[ConfigResult]]:
        grouped: dict[str, list[ConfigResult]] = {}
        for result in self.results:
            grouped.setdefault(result.config.workload, []).append(result)
        return grouped


def machine_info() -> dict[str, object]:
    """What the numbers depend on: CPUs, Python, platform, version."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on every platform
        usable = os.cpu_count() or 1
    try:
        load: list[float] | None = [round(x, 2) for x in os.getloadavg()]
    except OSError:  # not available
        load = None
    return {
        # Other work on the machine skews every figure: keep how busy it was.
        "load_average_1_5_15_min": load,
        "cpu_count": os.cpu_count(),
        "usable_cpus": usable,
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "dispatchkit": __version__,
    }


def run_bench(
    options: BenchOptions,
    *,
    plan: Plan | None = None,
    on_run: Callable[[int, int, Config], None] | None = None,
    command: str = "",
) -> BenchResults:
    """Run every configuration of the plan ``repeat`` times.

    Args:
        options: what to measure.
        plan: a plan already made from ``options`` (made here if None).
        on_run: called before each run with (runs done, runs in all, config).
        command: the command line that asked for this, kept with the results.

    Raises:
        BenchUsageError: see :func:`make_plan`.
        ExecutorUnavailable: see :func:`make_plan`.
    """
    plan = plan or make_plan(options)
    started = datetime.now(UTC).isoformat(timespec="seconds")
    clock = perf_counter()
    machine = machine_info()
    if any(w.builtin and w.name in ("cpu", "mixed") for w in plan.workloads.values()):
        machine["cpu_job_loops"] = calibrate_cpu()
    results = [ConfigResult(config) for config in plan.configs]
    done = 0
    for _ in range(plan.repeat):
        for result in results:
            if on_run is not None:
                on_run(done, plan.runs, result.config)
            run = _run_one(plan.workloads[result.config.workload], result.config)
            result.runs.append(run)
            result.metrics.append(compute_metrics(run))
            done += 1
    return BenchResults(options, plan, results, machine, started, perf_counter() - clock, command)


def _run_one(workload: Workload, config: Config) -> RunRecord:
    # Garbage from the last run must not be collected on this one's clock.
    gc.collect()
    if config.is_peer:
        return PEER_RUNNERS[config.executor](workload, config)
    return run_kind(workload, config)
