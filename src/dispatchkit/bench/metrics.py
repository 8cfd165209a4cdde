"""What one run measured, computed from per-job timings. Pure: no clock, no I/O.

Every timestamp of a :class:`JobRecord` is in seconds since the run's start
(the moment before the first job was handed over), so that records from
threads, processes and tasks compare directly.
"""

from __future__ import annotations

import math
import resource
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "JobRecord",
    "RunMetrics",
    "RunRecord",
    "Usage",
    "compute_metrics",
    "percentile",
    "usage_now",
]


@dataclass(frozen=True, slots=True)
class JobRecord:
    """When one job was submitted, started and finished, and on which worker.

    ``index`` is the job's position in the input (-1 when unknown).
    """

    worker: int
    submitted: float
    started: float
    finished: float
    ok: bool = True
    index: int = -1

    @property
    def latency(self) -> float:
        """Seconds from submission to finish."""
        return self.finished - self.submitted


@dataclass(frozen=True, slots=True)
class Usage:
    """Resource use (``getrusage``) of this process and of its reaped children."""

    cpu_seconds: float
    voluntary_switches: int
    involuntary_switches: int

    def __sub__(self, other: Usage) -> Usage:
        return Usage(
            self.cpu_seconds - other.cpu_seconds,
            self.voluntary_switches - other.voluntary_switches,
            self.involuntary_switches - other.involuntary_switches,
        )


def usage_now() -> Usage:
    """This process (all its threads) plus its terminated, waited-for children.

    Worker processes count only once reaped, so take the reading after the
    pool has shut down.
    """
    total = Usage(0.0, 0, 0)
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        r = resource.getrusage(who)
        total = Usage(
            total.cpu_seconds + r.ru_utime + r.ru_stime,
            total.voluntary_switches + r.ru_nvcsw,
            total.involuntary_switches + r.ru_nivcsw,
        )
    return total


@dataclass(frozen=True, slots=True)
class RunRecord:
    """The raw result of one run of one configuration."""

    makespan: float
    workers: int
    jobs: tuple[JobRecord, ...]
    usage: Usage


@dataclass(frozen=True, slots=True)
class RunMetrics:
    """What one run measured.

    Attributes:
        makespan: seconds from handing over the first job to the last job's end.
        throughput: jobs per second over the makespan.
        latency_p50, latency_p95, latency_p99: seconds from submission to finish.
        idle_before_first: per worker, seconds from the start until its first
            job started (the whole makespan for a worker that ran none).
        busy: per worker, seconds spent running jobs.
        utilisation: busy time of all workers over ``workers * makespan``.
        imbalance: the busiest worker's busy time over the mean (1.0 is even).
        cpu_seconds: user + system CPU time of this process and its workers.
        voluntary_switches, involuntary_switches: context switches, likewise.
    """

    jobs: int
    failed: int
    makespan: float
    throughput: float
    latency_p50: float
    latency_p95: float
    latency_p99: float
    idle_before_first: tuple[float, ...]
    busy: tuple[float, ...]
    utilisation: float
    imbalance: float
    cpu_seconds: float
    voluntary_switches: int
    involuntary_switches: int

    @property
    def max_idle_before_first(self) -> float:
        """How long the last worker to start waited for its first job."""
        return max(self.idle_before_first, default=0.0)


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) with linear interpolation, as numpy's default.

    Raises:
        ValueError: no values, or ``q`` outside 0-100.
    """
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be between 0 and 100, got {q}")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def compute_metrics(run: RunRecord) -> RunMetrics:
    """Derive every metric of one run from its job records.

    Raises:
        ValueError: a run without jobs, or a job on a worker index outside
            ``0 .. workers - 1``.
    """
    if not run.jobs:
        raise ValueError("a run without jobs has no metrics")
    busy = [0.0] * run.workers
    first = [math.inf] * run.workers
    for job in run.jobs:
        if not 0 <= job.worker < run.workers:
            raise ValueError(f"job on worker {job.worker}, but the run had {run.workers}")
        busy[job.worker] += job.finished - job.started
        first[job.worker] = min(first[job.worker], job.started)
    makespan = run.makespan
    latencies = [job.latency for job in run.jobs]
    mean_busy = sum(busy) / run.workers
    return RunMetrics(
        jobs=len(run.jobs),
        failed=sum(not job.ok for job in run.jobs),
        makespan=makespan,
        throughput=len(run.jobs) / makespan if makespan > 0 else math.inf,
        latency_p50=percentile(latencies, 50),
        latency_p95=percentile(latencies, 95),
        latency_p99=percentile(latencies, 99),
        idle_before_first=tuple(makespan if math.isinf(f) else max(0.0, f) for f in first),
        busy=tuple(busy),
        utilisation=sum(busy) / (run.workers * makespan) if makespan > 0 else 0.0,
        imbalance=max(busy) / mean_busy if mean_busy > 0 else 1.0,
        cpu_seconds=run.usage.cpu_seconds,
        voluntary_switches=run.usage.voluntary_switches,
        involuntary_switches=run.usage.involuntary_switches,
    )
