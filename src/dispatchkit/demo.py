"""The seed's demo: many tiny jobs, each returning its own index as a string.

The Rust program this project grows from sends 2,000,000 such jobs to 20
workers, one message at a time and round-robin (its approach 2); its README
also describes approach 1, batch: blocks of 100 messages to one worker after
another. :func:`run_seed` runs one configuration and reports what happened.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from time import perf_counter
from typing import Any, Final

from .errors import Interrupted
from .executors.registry import worker_kind
from .settings import AUTO, ChunkSetting
from .stats import DispatcherStats
from .strategies import DEFAULT_BLOCK, parse_strategy

__all__ = [
    "DEFAULT_JOBS",
    "DEFAULT_STRATEGIES",
    "DEFAULT_WORKERS",
    "EVEN",
    "Interrupted",
    "SeedResult",
    "even_chunk",
    "fastest",
    "run_seed",
    "seed_job",
    "seed_key",
    "seed_plan",
]

#: The seed's demo: 2M jobs on 20 workers.
DEFAULT_JOBS: Final = 2_000_000
DEFAULT_WORKERS: Final = 20
#: Seed approach 1, seed approach 2, the Go article's design, then the library's
#: default (``auto``: a shared queue and adaptive hand-offs).
DEFAULT_STRATEGIES: Final = ("batch", "round_robin", "pull", "auto")

#: The demo's chunk that is a fixed even share of the input (see :func:`even_chunk`).
EVEN: Final = "even"

#: Largest chunk ``even_chunk`` picks: beyond it a block of input held in
#: memory grows with no gain in speed (measured on the seed workload).
MAX_EVEN_CHUNK: Final = 20_000


def seed_job(index: int) -> str:
    """The seed's job: return its own index formatted as a string."""
    return str(index)


def seed_key(index: int) -> int:
    """The seed job's key under a strategy that needs one: its own index, so the
    keys' hash spreads the jobs over the workers."""
    return index


def even_chunk(jobs: int, workers: int) -> int:
    """A good fixed chunk for ``jobs`` tiny jobs on ``workers`` workers, known in advance.

    About four hand-offs per worker: few enough that hand-off costs vanish,
    enough that no worker waits long for its first job.
    """
    return max(1, min(MAX_EVEN_CHUNK, jobs // (workers * 4)))


def seed_plan(
    strategies: Sequence[str],
    chunks: Sequence[int | str] | None,
    jobs: int,
    workers: int,
) -> list[tuple[str, ChunkSetting]]:
    """The ``(strategy, chunk)`` runs of the demo, in order, without repeats.

    A chunk is a number, ``"even"`` (:func:`even_chunk` of the job count) or
    ``"auto"``, the library's ``chunk="auto"``: adaptive under a strategy that
    adapts, one job a hand-off under any other (so it runs as chunk 1).
    ``chunks`` None: the demo's defaults, chunk 1 (the seed's one message at a
    time) and ``"even"`` for a fixed strategy, ``"auto"`` for an adaptive one.

    Raises:
        ValueError: an unknown strategy or chunk.
    """
    plan: list[tuple[str, ChunkSetting]] = []
    for name in strategies:
        strategy = parse_strategy(name)
        given = chunks or ([AUTO] if strategy.adaptive else [1, EVEN])
        for chunk in given:
            resolved: ChunkSetting
            if chunk == EVEN:
                resolved = even_chunk(jobs, workers)
            elif chunk == AUTO:
                resolved = AUTO if strategy.adaptive else 1
            elif isinstance(chunk, int) and not isinstance(chunk, bool) and chunk >= 1:
                resolved = chunk
            else:
                raise ValueError(f"unknown chunk {chunk!r}: a whole number, {EVEN!r} or {AUTO!r}")
            if (strategy.name, resolved) not in plan:
                plan.append((strategy.name, resolved))
    return plan


@dataclass(frozen=True, slots=True)
class SeedResult:
    """One configuration's run of the seed workload."""

    strategy: str
    #: Jobs per hand-off, or ``"auto"``: sized as the run went.
    chunk: ChunkSetting
    jobs: int
    workers: int
    executor: str
    completed: int
    failed: int
    cancelled: int
    seconds: float
    #: Seconds between the first and the last worker starting its first job.
    first_start_spread: float | None

    @property
    def jobs_per_second(self) -> float:
        return self.completed / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["jobs_per_second"] = self.jobs_per_second
        return data


def run_seed(
    *,
    jobs: int = DEFAULT_JOBS,
    workers: int = DEFAULT_WORKERS,
    strategy: str = "round_robin",
    chunk: ChunkSetting = 1,
    block: int = DEFAULT_BLOCK,
    queue_size: int | None = None,
    executor: str = "thread",
    put_timeout: float | None = None,
    job_timeout: float | None = None,
    job: Callable[[int], object] = seed_job,
    on_start: Callable[[Any], None] | None = None,
    stop_timeout: float = 5.0,
) -> SeedResult:
    """Run the seed workload once and measure it.

    The clock covers creating the jobs, dispatching them and waiting for the
    last one (the workers' start-up is outside it, as in the seed). Jobs are
    created lazily from ``range(jobs)``: memory stays bounded by the inboxes.

    Args:
        executor: ``thread``, ``process`` or ``async`` workers.
        put_timeout, job_timeout: as for :class:`Dispatcher` (None: no limit).
        on_start: called with the dispatcher before the jobs are sent (used to
            show progress).

    Raises:
        ValueError, TypeError: an invalid setting.
        QueueFull: an inbox stayed full past ``put_timeout``.
        Interrupted: a KeyboardInterrupt arrived; queued jobs were cancelled
            and the workers stopped within ``stop_timeout`` seconds.
    """
    options: dict[str, Any] = {
        "strategy": strategy,
        "chunk": chunk,
        "block": block,
        "queue_size": queue_size,
        "put_timeout": put_timeout,
        "job_timeout": job_timeout,
    }
    # A strategy that needs keys (``key``) refuses a dispatch without them.
    key = seed_key if parse_strategy(strategy).needs_key else None
    # The front end comes from the registry, loaded now: importing this module
    # (as the CLI does for every command, ``worker`` too) starts no dispatcher code.
    kind = worker_kind(executor)
    if kind.takes_coroutines:
        return asyncio.run(
            _run_seed_async(kind.front_end_class(), jobs, workers, options, job, key, on_start)
        )
    dispatcher = kind.front_end_class()(workers, executor=executor, **options)
    try:
        if on_start is not None:
            on_start(dispatcher)
        started = perf_counter()
        dispatcher.dispatch(job, range(jobs), key=key)
        dispatcher.join()
        seconds = perf_counter() - started
    except KeyboardInterrupt:
        raise Interrupted(dispatcher.stop(cancel=True, timeout=stop_timeout)) from None
    except BaseException:
        dispatcher.stop(cancel=True, timeout=stop_timeout)
        raise
    return _result(dispatcher, jobs, workers, executor, seconds)


async def _run_seed_async(
    front_end: Any,
    jobs: int,
    workers: int,
    options: dict[str, Any],
    job: Callable[[int], object],
    key: Callable[[int], int] | None,
    on_start: Callable[[Any], None] | None,
) -> SeedResult:
    dispatcher = front_end(workers, **options)
    try:
        async with dispatcher:
            if on_start is not None:
                on_start(dispatcher)
            started = perf_counter()
            await dispatcher.dispatch(job, range(jobs), key=key)
            await dispatcher.join()
            seconds = perf_counter() - started
    except (KeyboardInterrupt, asyncio.CancelledError):
        raise Interrupted(dispatcher.stats()) from None
    return _result(dispatcher, jobs, workers, "async", seconds)


def _result(dispatcher: Any, jobs: int, workers: int, executor: str, seconds: float) -> SeedResult:
    settings = dispatcher.settings
    stats: DispatcherStats = dispatcher.stats()
    return SeedResult(
        strategy=dispatcher.strategy.name,
        # What the run did: "auto" only where the hand-offs adapted.
        chunk=AUTO if settings.adaptive_chunk else settings.fixed_chunk,
        jobs=jobs,
        workers=workers,
        executor=executor,
        completed=stats.succeeded,
        failed=stats.failed,
        cancelled=stats.cancelled,
        seconds=seconds,
        first_start_spread=stats.first_start_spread,
    )


def fastest(results: list[SeedResult]) -> tuple[SeedResult, float | None, float | None]:
    """The fastest run, how many times faster it was than the runner-up, and
    than the slowest (None when there is nothing to compare with).

    Raises:
        ValueError: for an empty list.
    """
    if not results:
        raise ValueError("no results to compare")
    ranked = sorted(results, key=lambda r: r.seconds)
    best = ranked[0]
    if len(ranked) == 1 or best.seconds <= 0:
        return best, None, None
    return best, ranked[1].seconds / best.seconds, ranked[-1].seconds / best.seconds
