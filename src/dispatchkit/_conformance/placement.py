"""Checks of where and how often jobs run: strategies, key order, pull, map, errors."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Hashable
from typing import Any

from dispatchkit.job import JobStatus
from dispatchkit.strategies import Batch, RoundRobin, Strategy

from . import jobs
from .common import (
    error_of,
    examples,
    is_value_error,
    placements,
    scratch,
    worker_counts,
    workers_for,
)
from .face import STRATEGIES, Target

__all__ = [
    "check_batch_blocks",
    "check_error_isolation",
    "check_key_order",
    "check_map",
    "check_pull_runs_each_job_once",
    "check_round_robin_spread",
]


def _check_slots(
    target: Target, strategy: Strategy, workers: int, ran: list[tuple[int, Hashable]]
) -> None:
    """Every job ran on the worker ``strategy`` names for it (up to a renaming of
    the workers where they are known by pid), and each worker's share is right."""
    identity = target.capabilities.identity
    if identity == "none":
        return
    slot_of: dict[Hashable, int] = {}
    worker_of: dict[int, Hashable] = {}
    for job_id, worker in ran:
        slot = strategy.assign(job_id, None, workers)
        if identity == "index":
            assert worker == slot, (
                f"{strategy.name}: job {job_id} ran on worker {worker}, not {slot} "
                f"({workers} workers)"
            )
        else:  # the order of remote workers is the dispatcher's to choose
            assert slot_of.setdefault(worker, slot) == slot, (
                f"{strategy.name}: job {job_id} ran beside the jobs of slot {slot_of[worker]}"
            )
            assert worker_of.setdefault(slot, worker) == worker, (
                f"{strategy.name}: the jobs of slot {slot} ran on two workers"
            )


def check_round_robin_spread(target: Target, *, max_examples: int = 10) -> None:
    """Round robin sends job ``i`` to worker ``i mod k``, by ``submit`` and by ``map``
    and whatever the chunk: each of ``k`` workers gets ⌊n/k⌋ or ⌈n/k⌉ of ``n`` jobs,
    and the results come back in order (under hypothesis)."""
    caps = target.capabilities

    def check(workers: int, count: int, chunk: int) -> None:
        with target.open(workers, strategy="round_robin", chunk=chunk, steal=False) as front:
            ran = placements(target, front, count)
        _check_slots(target, RoundRobin(), workers, ran)
        if caps.identity != "none":
            per_worker = Counter(worker for _, worker in ran)
            low, high = len(ran) // workers, -(-len(ran) // workers)
            assert len(per_worker) == min(workers, len(ran)), per_worker
            assert all(low <= share <= high for share in per_worker.values()), (
                f"{len(ran)} jobs over {workers} workers: {sorted(per_worker.values())}"
            )

    _placement_examples(target, max_examples, check)


def check_batch_blocks(target: Target, *, max_examples: int = 10) -> None:
    """Batch sends ``block`` consecutive jobs to one worker and the next block to the
    next worker, by ``submit`` and by ``map``, whatever the chunk; the results
    concatenate back to the input (under hypothesis)."""

    def check(workers: int, count: int, chunk: int, block: int) -> None:
        with target.open(workers, strategy="batch", chunk=chunk, block=block, steal=False) as front:
            ran = placements(target, front, count)
        _check_slots(target, Batch(block), workers, ran)

    _placement_examples(
        target, max_examples, check, block=lambda st: st.integers(min_value=1, max_value=6)
    )


def _placement_examples(
    target: Target, max_examples: int, check: Callable[..., None], **more: Callable[[Any], Any]
) -> None:
    """Run ``check`` over drawn worker counts, job counts (0 to 25), the target's chunk
    sizes, and the arguments ``more`` draws (as :func:`.common.examples` takes them)."""
    examples(
        max_examples,
        check,
        workers=lambda st: worker_counts(target, st),
        count=lambda st: st.integers(min_value=0, max_value=25),
        chunk=lambda st: st.sampled_from(target.capabilities.chunk),
        **more,
    )


def _keys(count: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    return [rng.randrange(4) for _ in range(count)]


def check_key_order(target: Target) -> None:
    """The key strategy runs one key's jobs one after another, in the order submitted,
    on one worker (where the kind pins keys to workers), by ``submit`` and ``map``."""
    caps = target.capabilities
    for seed, chunk in enumerate(sorted({caps.chunk[0], caps.chunk[-1]})):
        workers = workers_for(target, 3)
        keys = _keys(24, seed)
        with scratch() as tmp, target.open(workers, strategy="key", chunk=chunk) as front:
            log = str(tmp / "log")
            entries = [[log, key, position] for position, key in enumerate(keys)]
            half = len(entries) // 2
            handles = [front.submit(jobs.span, e, key=e[1]) for e in entries[:half]]
            ran_on: dict[int, set[Hashable]] = {}
            if caps.identity == "index":
                outcomes = [front.outcome(h) for h in handles]
                outcomes += front.map(jobs.span, entries[half:], key=lambda e: e[1], outcomes=True)
                assert [o.value for o in outcomes] == list(range(len(keys)))
                for key, outcome in zip(keys, outcomes, strict=True):
                    ran_on.setdefault(key, set()).add(outcome.worker)
            else:
                values = [front.result(h) for h in handles]
                values += front.map(jobs.span, entries[half:], key=lambda e: e[1])
                assert values == list(range(len(keys)))
            lines = jobs.read_log(log)
        assert len(lines) == 2 * len(keys), f"{len(lines)} log lines for {len(keys)} jobs"
        for key in set(keys):
            mine = [line for line in lines if int(line[1]) == key]
            positions = [p for p, k in enumerate(keys) if k == key]
            expected = [(edge, p) for p in positions for edge in ("s", "e")]
            assert [(line[0], int(line[2])) for line in mine] == expected, (
                f"key {key}: runs {mine} are not one after another in submission order"
            )
            if caps.key_pins_worker and caps.identity == "pid":
                ran_on[key] = {line[3] for line in mine}
        for key, where in ran_on.items():
            assert len(where) == 1, f"key {key} ran on workers {where}"


def check_pull_runs_each_job_once(target: Target) -> None:
    """Pull: every job, by ``submit``, ``map`` (and ``dispatch``), runs exactly once."""
    caps = target.capabilities
    for chunk in sorted({caps.chunk[0], caps.chunk[-1]}):
        workers = workers_for(target, 3)
        with scratch() as tmp, target.open(workers, strategy="pull", chunk=chunk) as front:
            log = str(tmp / "log")
            count = 15
            handles = [front.submit(jobs.note, [log, i]) for i in range(count)]
            mapped = front.map(jobs.note, [[log, count + i] for i in range(count)])
            expected = 2 * count
            if "dispatch" in caps.operations:
                batch = [[log, 2 * count + i] for i in range(count)]
                assert front.dispatch(jobs.note, batch) == count
                expected += count
            assert [front.result(h) for h in handles] == list(range(count))
            assert mapped == list(range(count, 2 * count))
            front.join()
            counts = front.counts()
            ran = Counter(int(line[0]) for line in jobs.read_log(log))
        assert ran == Counter(range(expected)), f"runs per job: {ran}"
        assert counts.submitted == counts.succeeded == expected, counts


def check_map(target: Target) -> None:
    """``map`` yields each result in input order with every strategy, however small the
    window, and raises the error of the first failing item, in input order."""
    caps = target.capabilities
    workers = workers_for(target, 2)
    for strategy in STRATEGIES:
        key = (lambda item: item % 3) if strategy == "key" else None
        with target.open(workers, strategy=strategy, chunk=caps.chunk[-1], block=2) as front:
            items = list(range(20))
            assert front.map(jobs.square, items, key=key) == [i * i for i in items]
            for window in (1, 2, 5):
                got = front.map(jobs.square, items, key=key, window=window)
                assert got == [i * i for i in items], f"window={window}: {got}"
            assert front.map(jobs.square, [], key=key) == []
            error = error_of(lambda: front.map(jobs.flaky, [1, 2, 4, 6, 5, 9], key=key))  # noqa: B023
            assert is_value_error(error), f"map of failing jobs raised {error!r}"
            assert "6 is a multiple of 3" in str(error), f"not the first failing item: {error}"


def check_error_isolation(target: Target) -> None:
    """A job that raises fails alone: its handle holds the error, every other job
    succeeds, and the worker that ran it goes on running jobs."""
    for strategy in STRATEGIES:
        workers = workers_for(target, 2)
        # Placement is checked below: no worker may take another's jobs.
        with target.open(workers, strategy=strategy, steal=False) as front:
            items = list(range(12))
            handles = [front.submit(jobs.flaky, i, key=i) for i in items]
            outcomes = [front.outcome(h) for h in handles]
            for i, outcome in zip(items, outcomes, strict=True):
                if i % 3 == 0:
                    assert outcome.status is JobStatus.FAILED, (i, outcome)
                    assert is_value_error(outcome.error), outcome.error
                    error = error_of(lambda: front.result(handles[i]))  # noqa: B023
                    assert is_value_error(error), f"result of failed job {i} raised {error!r}"
                else:
                    assert outcome.status is JobStatus.SUCCEEDED, (i, outcome)
                    assert outcome.value == i
            # The workers that ran the failures still run jobs.
            after = placements(target, front, 4 * workers, keyed=strategy == "key")
            if target.capabilities.identity != "none" and strategy in ("round_robin", "batch"):
                assert len({w for _, w in after}) == workers, after
            front.join()
            counts = front.counts()
        failures = sum(1 for i in items if i % 3 == 0)
        assert counts.failed == failures, counts
        assert counts.succeeded == len(items) - failures + 8 * workers, counts
