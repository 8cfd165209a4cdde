"""AsyncDispatcher.map, where each chunk's results come back as one block."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from itertools import pairwise
from typing import Any

import pytest

from dispatchkit import AsyncDispatcher, ClosedError, JobStatus, RetryPolicy, TimedOut
from dispatchkit._async_map import ChunkResults
from dispatchkit.core import cancelled_rows
from dispatchkit.errors import JobCancelled


async def square(x: int) -> int:
    await asyncio.sleep(0)
    return x * x


#: Settings whose chunks hold consecutive jobs (auto, pull) or interleaved ones.
SETTINGS = [
    pytest.param({}, id="auto"),
    pytest.param({"strategy": "pull", "chunk": 5}, id="pull-5"),
    pytest.param({"strategy": "round_robin", "chunk": 7}, id="round_robin-7"),
    pytest.param({"strategy": "batch", "chunk": 3}, id="batch-3"),
]


async def _collect(into: list[Any], results: AsyncIterator[Any]) -> None:
    async for result in results:
        into.append(result)


def test_each_job_of_a_chunk_is_timed_from_its_own_start_to_its_own_end() -> None:
    # A chunk reads the clock once per job: a job's start is the end of the one before
    # it. Each span still holds its job's whole wait, and a worker's spans follow one
    # another without overlapping.
    waits = [0.03, 0.0, 0.06, 0.0, 0.0, 0.03] * 4

    async def wait(seconds: float) -> float:
        await asyncio.sleep(seconds)
        return seconds

    async def main() -> None:
        async with AsyncDispatcher(2, chunk=6) as d:
            outcomes = [o async for o in d.map(wait, waits, outcomes=True)]
        by_worker: dict[int | None, list[tuple[float, float]]] = {}
        for o, seconds in zip(outcomes, waits, strict=True):
            assert o.started_at is not None
            assert o.finished_at is not None
            assert o.finished_at - o.started_at >= seconds
            by_worker.setdefault(o.worker, []).append((o.started_at, o.finished_at))
        for spans in by_worker.values():
            spans.sort()
            assert all(end <= start for (_, end), (start, _) in pairwise(spans))

    asyncio.run(main())


@pytest.mark.parametrize("settings", SETTINGS)
def test_a_map_gives_each_job_its_own_times_and_worker(settings: dict[str, Any]) -> None:
    async def main() -> None:
        async with AsyncDispatcher(4, **settings) as d:
            outcomes = [o async for o in d.map(square, range(300), outcomes=True)]
        assert [o.value for o in outcomes] == [x * x for x in range(300)]
        ids = [o.job_id for o in outcomes]
        assert ids == list(range(ids[0], ids[0] + 300))
        for o in outcomes:
            assert o.status is JobStatus.SUCCEEDED
            assert o.worker in range(4)
            assert o.attempts == 1
            assert o.submitted_at is not None
            assert o.started_at is not None
            assert o.finished_at is not None
            assert o.submitted_at <= o.started_at <= o.finished_at
        by_worker: dict[int | None, list[float]] = {}
        for o in outcomes:
            assert o.started_at is not None
            by_worker.setdefault(o.worker, []).append(o.started_at)
        # One worker runs one job at a time: its jobs' starts are all distinct.
        assert all(len(set(starts)) == len(starts) for starts in by_worker.values())

    asyncio.run(main())


@pytest.mark.parametrize("settings", SETTINGS)
def test_a_failure_inside_a_chunk_is_raised_at_its_item(settings: dict[str, Any]) -> None:
    async def job(x: int) -> int:
        await asyncio.sleep(0)
        if x in (137, 170):
            raise ValueError(f"bad {x}")
        return x

    async def main() -> None:
        async with AsyncDispatcher(3, **settings) as d:
            seen: list[int] = []
            with pytest.raises(ValueError, match="bad 137"):
                await _collect(seen, d.map(job, range(300)))
            assert seen == list(range(137))
            outcomes = [o async for o in d.map(job, range(300), outcomes=True)]
        failed = [i for i, o in enumerate(outcomes) if o.status is JobStatus.FAILED]
        assert failed == [137, 170]
        assert isinstance(outcomes[170].error, ValueError)
        assert [o.value for o in outcomes if o.status is JobStatus.SUCCEEDED] == [
            x for x in range(300) if x not in (137, 170)
        ]
        stats = d.stats()
        # The abandoned map's jobs still ran (they were queued): each counted once.
        assert stats.failed == 4
        assert stats.succeeded + stats.failed + stats.cancelled == stats.submitted

    asyncio.run(main())


@pytest.mark.parametrize("settings", SETTINGS)
def test_a_stop_during_a_map_yields_the_queued_rest_cancelled_in_order(
    settings: dict[str, Any],
) -> None:
    async def main() -> None:
        held = asyncio.Event()

        async def job(x: int) -> int:
            if x >= 4:
                held.set()
                await asyncio.sleep(60)
            return x

        async with asyncio.timeout(30):
            async with AsyncDispatcher(2, **settings) as d:

                async def stopper() -> None:
                    await held.wait()  # a worker is held by a job
                    await d.stop(cancel=True)

                stopping = asyncio.create_task(stopper())
                outcomes = []
                # The jobs not yet taken from the input when the stop closed the
                # dispatcher are refused.
                with contextlib.suppress(ClosedError):
                    async for outcome in d.map(job, range(12), outcomes=True):
                        outcomes.append(outcome)
                await stopping
        assert [o.value for o in outcomes[:4]] == [0, 1, 2, 3]
        # The running jobs and any queued behind them.
        assert len(outcomes) >= 5
        assert [o.status for o in outcomes[4:]] == [JobStatus.CANCELLED] * (len(outcomes) - 4)
        ids = [o.job_id for o in outcomes]
        assert ids == list(range(ids[0], ids[0] + len(ids)))
        stats = d.stats()
        assert (stats.succeeded, stats.cancelled) == (4, len(outcomes) - 4)
        assert stats.submitted == len(outcomes)

    asyncio.run(main())


@pytest.mark.parametrize("settings", SETTINGS)
def test_retries_and_timeouts_in_a_map_keep_order_and_attempts(settings: dict[str, Any]) -> None:
    tried: set[int] = set()

    async def flaky(x: int) -> int:
        await asyncio.sleep(0)
        if x not in tried:
            tried.add(x)
            raise ValueError(f"first try of {x}")
        if x == 50:
            await asyncio.sleep(60)  # past the job timeout
        return -x

    async def main() -> None:
        policy = RetryPolicy(max_attempts=2, backoff=0, retry_on=(ValueError,))
        async with asyncio.timeout(30):
            async with AsyncDispatcher(4, retry=policy, job_timeout=0.2, **settings) as d:
                outcomes = [o async for o in d.map(flaky, range(120), outcomes=True)]
        assert all(o.attempts == 2 for o in outcomes)
        assert isinstance(outcomes[50].error, TimedOut)
        assert [o.value for o in outcomes if o.status is JobStatus.SUCCEEDED] == [
            -x for x in range(120) if x != 50
        ]
        ids = [o.job_id for o in outcomes]
        assert ids == sorted(ids)

    asyncio.run(main())


@pytest.mark.parametrize("settings", SETTINGS)
def test_keyed_and_unordered_maps_give_every_result(settings: dict[str, Any]) -> None:
    async def main() -> None:
        async with AsyncDispatcher(4, **settings) as d:
            keyed = [x async for x in d.map(square, range(200), key=lambda x: x % 3)]
            assert keyed == [x * x for x in range(200)]
            unordered = [x async for x in d.map(square, range(200), ordered=False)]
            assert sorted(unordered) == [x * x for x in range(200)]
            outcomes = [o async for o in d.map(square, range(50), ordered=False, outcomes=True)]
            assert sorted(o.value for o in outcomes) == [x * x for x in range(50)]
        stats = d.stats()
        assert stats.succeeded == stats.submitted == 450

    asyncio.run(main())


def test_a_stop_during_a_keyed_auto_map_cancels_the_chunks_waiting_in_a_lane() -> None:
    # One key: its chunks run one after another, the next waiting in the lane
    # while the first is held; the stop cancels and counts both.
    async def main() -> None:
        held = asyncio.Event()

        async def job(x: int) -> int:
            if x == 0:
                held.set()
                await asyncio.sleep(60)
            return x

        async with asyncio.timeout(30):
            async with AsyncDispatcher(2) as d:

                async def stopper() -> None:
                    await held.wait()
                    while d.stats().submitted < 2:  # a chunk behind the held one
                        await asyncio.sleep(0.01)
                    await d.stop(cancel=True)

                stopping = asyncio.create_task(stopper())
                outcomes = []
                with contextlib.suppress(ClosedError):
                    async for outcome in d.map(job, range(40), key=lambda _: 0, outcomes=True):
                        outcomes.append(outcome)
                await stopping
        assert len(outcomes) >= 2
        assert {o.status for o in outcomes} == {JobStatus.CANCELLED}
        stats = d.stats()
        assert stats.cancelled == stats.submitted == len(outcomes)

    asyncio.run(main())


def _assert_ran(outcome: Any, worker_count: int) -> None:
    """An Outcome of a job that ran: on a worker, timed, one attempt, no name."""
    assert outcome.worker in range(worker_count)
    assert outcome.submitted_at is not None
    assert outcome.started_at is not None
    assert outcome.finished_at is not None
    assert outcome.submitted_at <= outcome.started_at <= outcome.finished_at
    assert (outcome.attempts, outcome.name) == (1, None)


@pytest.mark.parametrize("settings", SETTINGS)
def test_a_failed_job_s_outcome_holds_its_error_not_a_value(settings: dict[str, Any]) -> None:
    async def job(x: int) -> int:
        await asyncio.sleep(0)
        if x % 11 == 3:
            raise ValueError(f"bad {x}")
        return x + 1000

    async def main() -> None:
        async with AsyncDispatcher(3, **settings) as d:
            outcomes = [o async for o in d.map(job, range(200), outcomes=True)]
        for x, o in enumerate(outcomes):
            _assert_ran(o, 3)
            if x % 11 == 3:
                assert (o.status, o.value, o.ok) == (JobStatus.FAILED, None, False)
                assert isinstance(o.error, ValueError)
                assert str(o.error) == f"bad {x}"
                with pytest.raises(ValueError, match=f"bad {x}"):
                    o.unwrap()
            else:
                assert (o.status, o.value, o.error, o.ok) == (
                    JobStatus.SUCCEEDED,
                    x + 1000,
                    None,
                    True,
                )

    asyncio.run(main())


@pytest.mark.parametrize("settings", SETTINGS)
def test_a_chunk_cut_short_by_a_stop_keeps_the_outcomes_of_the_jobs_it_ran(
    settings: dict[str, Any],
) -> None:
    async def main() -> None:
        held = asyncio.Event()

        async def job(x: int) -> int:
            # No await before the hold: a worker runs its chunk's first jobs in one go.
            if x == 2:
                raise ValueError("bad 2")
            if x >= 4:
                held.set()
                await asyncio.sleep(60)
            return -x

        async with asyncio.timeout(30):
            async with AsyncDispatcher(2, **settings) as d:

                async def stopper() -> None:
                    await held.wait()
                    await d.stop(cancel=True)

                stopping = asyncio.create_task(stopper())
                outcomes = []
                with contextlib.suppress(ClosedError):
                    async for outcome in d.map(job, range(12), outcomes=True):
                        outcomes.append(outcome)
                await stopping
        assert len(outcomes) >= 5
        for x, o in enumerate(outcomes[:4]):
            _assert_ran(o, 2)
            if x == 2:
                assert (o.status, o.value) == (JobStatus.FAILED, None)
                assert isinstance(o.error, ValueError)
            else:
                assert (o.status, o.value, o.error) == (JobStatus.SUCCEEDED, -x, None)
        for o in outcomes[4:]:
            assert (o.status, o.value, o.worker, o.started_at) == (
                JobStatus.CANCELLED,
                None,
                None,
                None,
            )
            assert o.attempts == 0
            assert isinstance(o.error, JobCancelled)
        ids = [o.job_id for o in outcomes]
        assert ids == list(range(ids[0], ids[0] + len(ids)))

    asyncio.run(main())


def test_a_block_read_without_times_gives_outcomes_without_them() -> None:
    # The values of jobs 7, 8 (failed) and 9, the rest (10, 11) cancelled by a stop.
    error = ValueError("bad 8")
    rows = cancelled_rows([10, 11], 1.0, None)
    block = ChunkResults([7, 8, 9, 10, 11], 1, 1.0, [49, error, 81], {1}, None, rows)
    outcomes = list(block.results(outcomes=True))
    assert [(o.job_id, o.status, o.value, o.error) for o in outcomes] == [
        (7, JobStatus.SUCCEEDED, 49, None),
        (8, JobStatus.FAILED, None, error),
        (9, JobStatus.SUCCEEDED, 81, None),
        (10, JobStatus.CANCELLED, None, rows[0].value),
        (11, JobStatus.CANCELLED, None, rows[1].value),
    ]
    assert [(o.worker, o.started_at, o.finished_at) for o in outcomes[:3]] == [(1, None, None)] * 3
    assert all(o.submitted_at == 1.0 for o in outcomes)
    # Every job ran, untimed: the hot path, the same fields.
    whole = ChunkResults([7, 8], 0, 2.0, [49, 64])
    assert [tuple(o) for o in whole.results(outcomes=True)] == [
        (7, JobStatus.SUCCEEDED, 49, None, 0, 2.0, None, None, 1, None),
        (8, JobStatus.SUCCEEDED, 64, None, 0, 2.0, None, None, 1, None),
    ]
