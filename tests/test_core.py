"""The one dispatch core under both local front ends: what they now share."""

from __future__ import annotations

import asyncio
from collections.abc import Hashable, Iterator, Sequence
from typing import Any, TypeVar

import pytest

from dispatchkit import AsyncDispatcher, Dispatcher, Job, TimedOut
from dispatchkit.core import JobStatus, MapWindow, RowBlock
from dispatchkit.core.placement import jobs_of
from dispatchkit.strategies import SHARED, ByKey, Pull, RoundRobin, Strategy

T = TypeVar("T")


class EveryoneTakes(Strategy):
    """A user's own pull strategy: it says so, nobody needs to probe ``assign``."""

    name = "everyone_takes"
    shared = True

    def assign(self, seq: int, key: Hashable, workers: int) -> int:
        return SHARED


class FirstLetter(Strategy):
    """A user's own keyed strategy."""

    name = "first_letter"
    needs_key = True

    def assign(self, seq: int, key: Hashable, workers: int) -> int:
        assert isinstance(key, str)
        return ord(key[0]) % workers

    def split(
        self,
        items: Sequence[T],
        first_seq: int,
        workers: int,
        keys: Sequence[Hashable] | None = None,
    ) -> list[tuple[int, Sequence[T]]]:
        assert keys is not None
        return super().split(items, first_seq, workers, keys)


def double(x: int) -> int:
    return 2 * x


def test_strategies_declare_shared_and_needs_key() -> None:
    assert Pull.shared
    assert not Pull.needs_key
    assert ByKey.needs_key
    assert not ByKey.shared
    assert not RoundRobin().shared
    assert not RoundRobin().needs_key
    assert EveryoneTakes.shared
    assert FirstLetter.needs_key


def test_a_declared_keyed_strategy_is_asked_for_keys_on_both_front_ends() -> None:
    with Dispatcher(3, strategy=FirstLetter()) as d:
        with pytest.raises(ValueError, match="key"):
            d.submit(double, 1)
        assert list(d.map(len, ["ab", "c", "def"], key=lambda s: s)) == [2, 1, 3]

    async def main() -> None:
        async with AsyncDispatcher(3, strategy=FirstLetter()) as d:
            with pytest.raises(ValueError, match="key"):
                await d.submit(double, 1)
            assert [r async for r in d.map(len, ["ab", "c"], key=lambda s: s)] == [2, 1]

    asyncio.run(main())


def test_a_declared_shared_strategy_gets_one_queue() -> None:
    with Dispatcher(4, strategy=EveryoneTakes(), queue_size=2) as d:
        assert d.submit_job(Job(double, (4,))).result(timeout=10) == 8
        assert sorted(d.map(double, range(50), ordered=False)) == [2 * i for i in range(50)]
        # One queue for all four workers: the pull queue's room, not one worker's.
        assert len(d._inboxes) == 1


def test_timed_out_is_a_timeout_error() -> None:
    assert issubclass(TimedOut, TimeoutError)
    with pytest.raises(TimeoutError):
        raise TimedOut("job ran longer than its timeout")


@pytest.mark.parametrize("window", [0, -1, True, 2.5])
def test_a_bad_window_raises_on_both_front_ends(window: object) -> None:
    with Dispatcher(2) as d, pytest.raises(ValueError, match="window"):
        d.map(double, range(5), window=window)  # type: ignore[call-overload]

    async def main() -> None:
        async with AsyncDispatcher(2) as d:
            with pytest.raises(ValueError, match="window"):
                async for _ in d.map(double, range(5), window=window):  # type: ignore[arg-type]
                    pass

    asyncio.run(main())


def test_both_front_ends_share_the_window_and_the_outcome_rows() -> None:
    def fail_odd(x: int) -> int:
        if x % 2:
            raise ValueError(x)
        return x

    with Dispatcher(3, chunk=2) as d:
        sync = [(o.job_id, o.status, o.value) for o in d.map(fail_odd, range(9), outcomes=True)]

    async def main() -> list[tuple[object, ...]]:
        async with AsyncDispatcher(3, chunk=2) as d:
            return [
                (o.job_id, o.status, o.value)
                async for o in d.map(fail_odd, range(9), outcomes=True, window=2)
            ]

    assert asyncio.run(main()) == sync
    assert [row[0] for row in sync] == list(range(9))


def test_async_shutdown_has_the_sync_signature() -> None:
    async def slow(x: int) -> int:
        await asyncio.sleep(5)
        return x

    async def main() -> tuple[int, int]:
        async with AsyncDispatcher(1, queue_size=10) as d:
            for i in range(3):
                await d.submit(slow, i)
            await asyncio.sleep(0.01)
            await d.shutdown(wait=True, cancel_futures=True)
            await d.shutdown()  # idempotent
            stats = d.stats()
            return stats.submitted, stats.cancelled

    assert asyncio.run(asyncio.wait_for(main(), 10)) == (3, 3)


def test_every_consumer_reads_the_one_worker_kind_registry() -> None:
    from dispatchkit import cli, settings, testing
    from dispatchkit.bench import config as bench_config
    from dispatchkit.executors import WORKER_KINDS, kind_names, worker_kind
    from dispatchkit.service import config as service_config

    assert tuple(WORKER_KINDS) == ("thread", "process", "async")
    assert settings.EXECUTORS == kind_names(front_end="Dispatcher") == ("thread", "process")
    assert testing.EXECUTORS == bench_config.EXECUTORS == cli.EXECUTOR_CHOICES == kind_names()
    assert ("auto", *kind_names(in_process=True)) == service_config.EXECUTORS
    for name, kind in WORKER_KINDS.items():
        pool = kind.pool_class()
        assert callable(pool.kill), name  # every pool can be asked to stop its jobs
        assert kind.front_end_class().__name__ == kind.front_end, name
    assert [k.name for k in WORKER_KINDS.values() if k.takes_coroutines] == ["async"]
    with pytest.raises(ValueError, match="choose one of thread, process"):
        worker_kind("async", front_end="Dispatcher")


class _Block(RowBlock):
    """A block whose jobs' results are their sequence numbers."""

    def results(self, outcomes: bool) -> Iterator[int]:
        return iter(self.seqs)


def test_the_window_orders_blocks_among_rows_and_counts_their_jobs() -> None:
    window = MapWindow(10, ordered=True)
    window.admit_block(range(0, 3))
    window.admit(3, 1)
    window.admit_block(range(4, 8))
    assert (window.in_flight, window.room()) == (8, 2)
    # Rows and blocks travel in one list type; the window tells them apart.
    late: Any = _Block(range(4, 8))
    row: Any = (3, JobStatus.SUCCEEDED, 3)
    early: Any = _Block(range(0, 3))
    assert window.release([late]) == []
    assert window.release([row]) == []  # its turn comes after the first block
    assert window.release([early]) == [early, row, late]
    assert window.in_flight == 0

    unordered = MapWindow(10, ordered=False)
    unordered.admit_block([5, 1, 9])  # jobs interleaved with another worker's: no order
    block: Any = _Block([5, 1, 9])
    assert unordered.release([block]) == [block]
    assert unordered.in_flight == 0


def test_jobs_of_a_chunk_are_its_seqs_jobs_sliced_or_gathered() -> None:
    block = [f"job{seq}" for seq in range(100, 110)]  # numbered from 100
    assert jobs_of(block, 100, range(102, 105)) == ["job102", "job103", "job104"]
    assert jobs_of(block, 100, [103, 104]) == ["job103", "job104"]
    assert jobs_of(block, 100, range(101, 110, 3)) == ["job101", "job104", "job107"]
    assert jobs_of(block, 100, [100, 102, 109]) == ["job100", "job102", "job109"]
    assert jobs_of(block, 100, []) == []


def test_strategies_keep_a_range_of_seqs_a_range() -> None:
    seqs = range(7, 17)
    for strategy in (Pull(), RoundRobin()):
        parts = strategy.split(seqs, 7, 3)
        assert all(type(part) is range for _, part in parts)
        as_lists = strategy.split(list(seqs), 7, 3)
        assert [(w, list(p)) for w, p in parts] == [(w, list(p)) for w, p in as_lists]
