"""The adaptive chunk controller (core/adaptive.py) and the ``auto`` strategy end to end."""

from __future__ import annotations

import asyncio
import random
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from dispatchkit import AsyncDispatcher, Dispatcher
from dispatchkit._conformance.jobs import read_log, span
from dispatchkit._lanes import Lanes
from dispatchkit._work import BulkChunk, cancel_message
from dispatchkit.core.adaptive import (
    GAP_FACTOR,
    MAX_CHUNK,
    MAX_TARGET_SECONDS,
    TAIL_FACTOR,
    AdaptiveFeed,
    BulkRun,
    ChunkController,
    chunk_size,
    tuning,
)
from dispatchkit.errors import ClosedError
from dispatchkit.settings import Settings
from dispatchkit.stats import DispatcherStats
from dispatchkit.strategies import SHARED, Auto, parse_strategy
from tests import jobs

seconds = st.floats(min_value=1e-7, max_value=10.0, allow_nan=False)
spreads = st.floats(min_value=0.0, max_value=20.0, allow_nan=False)
targets = st.floats(min_value=1e-4, max_value=1.0, allow_nan=False)
workers = st.integers(min_value=1, max_value=2000)
remainings = st.one_of(st.none(), st.integers(min_value=0, max_value=10**7))
previous = st.integers(min_value=1, max_value=MAX_CHUNK)


@given(st.one_of(st.none(), seconds), spreads, targets, workers, remainings, previous)
def test_chunk_size_stays_in_its_bounds(
    job: float | None, spread: float, target: float, n: int, remaining: int | None, prev: int
) -> None:
    size = chunk_size(job, spread, target, n, remaining, prev)
    assert 1 <= size <= MAX_CHUNK
    if job is not None:
        assert size <= 2 * prev  # grows gradually
    if remaining is not None:
        # Near the end, a chunk is a small share of what is left (or a single job).
        assert size <= max(1, remaining // (TAIL_FACTOR * n))


tails = st.floats(min_value=0.0, max_value=0.01, allow_nan=False)


@given(seconds, spreads, targets, workers, st.integers(0, 10**7), previous, tails)
@example(1e-6, 0.0, 0.002, 2, 200, MAX_CHUNK, 1e-4)  # floor 100 above the share, 50
def test_the_tail_shrinks_no_chunk_below_its_seconds(
    job: float, spread: float, target: float, n: int, remaining: int, prev: int, tail: float
) -> None:
    size = chunk_size(job, spread, target, n, remaining, prev, tail_seconds=tail)
    untailed = chunk_size(job, spread, target, n, None, prev)
    floor = int(tail / job)
    # Still a share of what is left, or the jobs that fill the tail's seconds ...
    assert size <= max(1, remaining // (TAIL_FACTOR * n), floor)
    # ... and never fewer than those, unless the rule's other bounds say so.
    assert size >= min(untailed, max(1, floor))


#: Any measured job time, down to none at all (a clock too coarse to see a job).
measured = st.one_of(st.just(0.0), seconds)


@given(measured, measured, spreads, targets, workers, remainings, previous, tails)
@example(0.0, 1e-9, 0.0, 0.002, 4, 800, 512, 50e-6)  # the random draws rarely pair these
def test_with_a_tail_floor_longer_jobs_still_never_get_larger_chunks(
    a: float,
    b: float,
    spread: float,
    target: float,
    n: int,
    remaining: int | None,
    prev: int,
    tail: float,
) -> None:
    short, long = sorted((a, b))
    assert chunk_size(long, spread, target, n, remaining, prev, tail_seconds=tail) <= chunk_size(
        short, spread, target, n, remaining, prev, tail_seconds=tail
    )


def test_the_tail_floor_of_a_vanishing_job_time_is_capped_not_overflowed() -> None:
    # 50 µs over the least float is past any int(): the count is capped first.
    assert chunk_size(5e-324, 0.0, 0.002, 4, 800, 512, tail_seconds=50e-6) == MAX_CHUNK


def test_the_tail_of_tiny_jobs_stops_shrinking_at_a_hand_off_s_worth() -> None:
    controller = ChunkController(workers=2, min_target=1.0, tail_seconds=1e-4)
    for _ in range(12):
        size = controller.next_chunk()
        controller.observe(size, size * 1e-6)  # 1 µs a job
    assert controller.next_chunk(remaining=10**6) == MAX_CHUNK
    assert controller.next_chunk(remaining=800) == 800 // (TAIL_FACTOR * 2)
    # 1e-4 s of 1 µs jobs: 100 of them, however little is left.
    assert controller.next_chunk(remaining=200) == 100
    assert controller.next_chunk(remaining=5) == 100


def test_nothing_measured_gives_a_single_job() -> None:
    assert chunk_size(None, 0.0, 0.01, 4, None, 512) == 1


@given(seconds, seconds, spreads, targets, workers, remainings, previous)
def test_longer_jobs_never_get_larger_chunks(
    a: float, b: float, spread: float, target: float, n: int, remaining: int | None, prev: int
) -> None:
    short, long = sorted((a, b))
    assert chunk_size(long, spread, target, n, remaining, prev) <= chunk_size(
        short, spread, target, n, remaining, prev
    )


@given(seconds, spreads, spreads, targets, workers, remainings, previous)
def test_more_variation_never_gets_larger_chunks(
    job: float, a: float, b: float, target: float, n: int, remaining: int | None, prev: int
) -> None:
    low, high = sorted((a, b))
    assert chunk_size(job, high, target, n, remaining, prev) <= chunk_size(
        job, low, target, n, remaining, prev
    )


@given(
    seconds,
    spreads,
    targets,
    workers,
    st.integers(min_value=0, max_value=10**7),
    st.integers(min_value=0, max_value=10**7),
    previous,
)
def test_less_input_left_never_gets_larger_chunks(
    job: float, spread: float, target: float, n: int, a: int, b: int, prev: int
) -> None:
    fewer, more = sorted((a, b))
    assert chunk_size(job, spread, target, n, fewer, prev) <= chunk_size(
        job, spread, target, n, more, prev
    )
    assert chunk_size(job, spread, target, n, more, prev) <= chunk_size(
        job, spread, target, n, None, prev
    )


@given(seconds, spreads, targets, targets, workers, remainings, previous)
def test_a_longer_target_never_gets_smaller_chunks(
    job: float, spread: float, a: float, b: float, n: int, remaining: int | None, prev: int
) -> None:
    low, high = sorted((a, b))
    assert chunk_size(job, spread, low, n, remaining, prev) <= chunk_size(
        job, spread, high, n, remaining, prev
    )


def test_short_jobs_grow_the_chunk_step_by_step_up_to_the_target() -> None:
    controller = ChunkController(workers=4, min_target=0.01)
    sizes = []
    for _ in range(12):
        size = controller.next_chunk()
        sizes.append(size)
        controller.observe(size, size * 0.0001)  # 0.1 ms a job
    assert sizes[:4] == [1, 2, 4, 8]  # doubling, not a leap
    assert sizes == sorted(sizes)
    assert sizes[-1] == 100  # 10 ms of 0.1 ms jobs


def test_long_jobs_keep_single_job_hand_offs() -> None:
    controller = ChunkController(workers=20, min_target=0.002)
    for _ in range(10):
        controller.observe(controller.next_chunk(), 0.005)
    assert controller.next_chunk() == 1


def test_varying_job_times_give_smaller_chunks_than_steady_ones_of_the_same_mean() -> None:
    steady, skewed = ChunkController(2, 0.02), ChunkController(2, 0.02)
    for i in range(200):
        steady.observe(1, 0.0005)
        # The same mean (0.5 ms): 1 job in 10 takes 11 times as long as the others.
        skewed.observe(1, 0.00275 if i % 10 == 0 else 0.00025)
    assert skewed.spread > steady.spread
    for _ in range(12):
        steady.next_chunk()
        skewed.next_chunk()
    assert skewed.next_chunk() < steady.next_chunk()


def test_the_tail_factor_is_the_controller_s() -> None:
    many = ChunkController(workers=10, min_target=1.0, tail_factor=1)
    for _ in range(12):
        many.observe(many.next_chunk(), 1e-6)
    assert many.next_chunk(remaining=1000) == 100  # a whole fair share


def test_the_end_of_a_known_input_shrinks_the_chunks() -> None:
    controller = ChunkController(workers=2, min_target=1.0)
    for _ in range(12):
        controller.observe(controller.next_chunk(), 1e-6)
    assert controller.next_chunk(remaining=10**6) == MAX_CHUNK
    assert controller.next_chunk(remaining=800) == 800 // (TAIL_FACTOR * 2)
    assert controller.next_chunk(remaining=5) == 1


def test_slow_hand_offs_make_the_chunks_last_longer() -> None:
    quick, slow = ChunkController(2, 0.002), ChunkController(2, 0.002)
    assert quick.target == slow.target == 0.002  # nothing measured: the floor
    for _ in range(20):
        quick.observe_gap(0.00001)  # 10 us between two chunks: below the floor
        slow.observe_gap(0.001)  # 1 ms between two chunks (a loaded machine, a pipe)
    assert quick.target == 0.002
    assert slow.target == pytest.approx(GAP_FACTOR * 0.001)
    for _ in range(12):
        for controller in (quick, slow):
            controller.observe(controller.next_chunk(), 0.0001 * controller.last)
    assert quick.next_chunk() == 20
    assert slow.next_chunk() == 500
    for _ in range(50):
        slow.observe_gap(100.0)
    assert slow.target == MAX_TARGET_SECONDS


def test_the_feed_measures_the_gap_between_a_worker_s_chunks() -> None:
    feed = AdaptiveFeed(ChunkController(2, 0.002), lambda: 0, total=None)
    feed.observe_rows([(0, None, None, 0, 0.0, 1.0, 1.5, 1)])
    feed.observe_rows([(1, None, None, 1, 0.0, 1.2, 1.7, 1)])  # another worker: no gap yet
    assert feed.controller.gap_seconds is None
    feed.observe_rows([(2, None, None, 0, 0.0, 1.6, 2.0, 1)])
    assert feed.controller.gap_seconds == pytest.approx(0.1)
    feed.observe_rows([(3, None, None, 1, 0.0, None, None, 0)])  # cancelled: not measured
    assert feed.controller.gap_seconds == pytest.approx(0.1)


def test_a_dispatched_range_stays_ranges_down_to_the_chunks() -> None:
    # A worker process is then sent each chunk's bounds, not its numbers.
    feed = AdaptiveFeed(ChunkController(2, 0.002), lambda: 0, total=100)
    feed.size = 30
    assert feed.slices(range(10, 100)) == [range(10, 40), range(40, 70), range(70, 100)]
    assert feed.slices([1, 2, 3, 4]) == [[1, 2, 3, 4]]
    assert feed.cut(range(3)) == [[0, 1, 2]]  # map's chunks stay lists
    with Dispatcher(2) as pool:
        blocks = pool._range_blocks(range(7), None, lambda: 3, exact=True)
        assert [(block, first) for block, first, _ in blocks] == [
            (range(0, 3), 0), (range(3, 6), 3), (range(6, 7), 6),
        ]  # fmt: skip
        pool._next_seq = 0  # numbers were taken but no job placed: given back


def test_observe_ignores_empty_and_negative_samples() -> None:
    controller = ChunkController(2, 0.01)
    controller.observe(0, 1.0)
    controller.observe(3, -1.0)
    assert controller.job_seconds is None


def test_controller_checks_its_arguments() -> None:
    with pytest.raises(ValueError, match="workers"):
        ChunkController(0, 0.01)
    with pytest.raises(ValueError, match="min_target"):
        ChunkController(1, 0.0)


def test_feed_paces_the_input_and_cuts_blocks_at_the_decided_size() -> None:
    queued = [0]
    feed = AdaptiveFeed(ChunkController(3, 0.01), lambda: queued[0], total=100)
    assert feed.wants_more(in_flight=3)
    assert feed.block_limit(room=1000) == 3  # nothing measured: one job per worker
    assert feed.cut([0, 1, 2]) == [[0], [1], [2]]
    queued[0] = 6  # two chunks per worker wait: enough
    assert not feed.wants_more(in_flight=3)
    assert feed.wants_more(in_flight=0)  # nothing of its own out: place anyway
    feed.observe_rows([(0, None, None, 0, 0.0, 1.0, 1.001, 1)])
    feed.observe_rows([(1, None, None, 0, 0.0, 2.0, 2.001, 1)])
    assert feed.block_limit(room=1000) == 6  # grown to 2 a chunk (doubling)
    assert feed.cut(list(range(6))) == [[0, 1], [2, 3], [4, 5]]
    assert feed.remaining() == 91
    assert feed.block_limit(room=4) == 4  # never past the map's window


def test_auto_strategy_is_shared_and_adaptive() -> None:
    assert parse_strategy("auto") == Auto()
    assert Auto.shared
    assert Auto.adaptive
    assert not Auto.needs_key
    assert Auto().assign(7, None, 3) == SHARED
    assert Auto().split([1, 2, 3], 0, 2) == [(SHARED, [1, 2, 3])]
    assert Auto().split([], 0, 2) == []


# -- end to end ---------------------------------------------------------------

#: Long enough never to be reached when the jobs can overtake the blocked one.
_BLOCK_LIMIT = 60.0


def _blocked_first(count: int) -> Callable[[int], bool]:
    """A job whose first call waits until every other call has run: it can only
    end if the idle workers take all of them, none queued behind it."""
    done = 0
    lock = threading.Lock()
    all_others = threading.Event()

    def job(i: int) -> bool:
        nonlocal done
        if i == 0:
            return all_others.wait(_BLOCK_LIMIT)
        with lock:
            done += 1
            if done == count - 1:
                all_others.set()
        return True

    return job


def test_a_blocked_job_holds_back_no_other_job_on_threads() -> None:
    with Dispatcher(4, strategy="auto", chunk="auto") as pool:
        results = list(pool.map(_blocked_first(400), range(400)))
    assert results == [True] * 400


def test_auto_keeps_the_order_and_every_result_on_threads() -> None:
    with Dispatcher(3, strategy="auto", chunk="auto") as pool:
        assert list(pool.map(abs, range(-5000, 0))) == list(range(5000, 0, -1))
        assert sorted(pool.map(abs, iter(range(3000)), ordered=False)) == list(range(3000))
        stats = pool.stats()
    assert stats.submitted == stats.succeeded == 8000


def test_auto_on_processes_gives_every_result() -> None:
    with Dispatcher(2, executor="process", strategy="auto", chunk="auto") as pool:
        assert list(pool.map(abs, range(-3000, 0))) == list(range(3000, 0, -1))


def test_a_blocked_job_holds_back_no_other_job_on_asyncio() -> None:
    async def main() -> list[bool]:
        count = 300
        done = 0
        all_others = asyncio.Event()

        async def job(i: int) -> bool:
            nonlocal done
            if i == 0:
                await asyncio.wait_for(all_others.wait(), _BLOCK_LIMIT)
                return True
            done += 1
            if done == count - 1:
                all_others.set()
            await asyncio.sleep(0)
            return True

        async with AsyncDispatcher(4, strategy="auto", chunk="auto") as pool:
            return [r async for r in pool.map(job, range(count))]

    assert asyncio.run(main()) == [True] * 300


def test_an_explicit_chunk_is_kept_under_auto() -> None:
    with Dispatcher(2, strategy="auto", chunk=7) as pool:
        assert pool._adaptive is False
        assert list(pool.map(abs, range(-50, 0))) == list(range(50, 0, -1))


def test_chunk_auto_adapts_only_with_an_adaptive_strategy() -> None:
    auto = Settings(strategy="auto", chunk="auto")
    assert auto.adaptive_chunk
    assert auto.fixed_chunk == 1
    named = Settings(strategy="round_robin", chunk="auto")
    assert not named.adaptive_chunk
    assert named.fixed_chunk == 1  # the seed's one job a hand-off
    assert not Settings(strategy="auto", chunk=8).adaptive_chunk
    assert Settings.from_env({"DISPATCHKIT_CHUNK": "AUTO"}).chunk == "auto"
    with pytest.raises(ValueError, match="DISPATCHKIT_CHUNK='some'"):
        Settings.from_env({"DISPATCHKIT_CHUNK": "some"})
    with pytest.raises(TypeError, match="chunk must be an integer"):
        Settings(chunk="big")  # type: ignore[arg-type]


def test_auto_is_what_every_front_end_uses_by_default() -> None:
    from dispatchkit.futures import ProcessPoolExecutor, ThreadPoolExecutor
    from dispatchkit.service.config import ServeConfig

    assert Settings().resolved_strategy == Auto()
    assert Settings().chunk == "auto"
    assert Settings().adaptive_chunk
    with Dispatcher(2) as pool, ThreadPoolExecutor(2) as threads:
        assert pool.strategy == Auto()
        assert threads.strategy == Auto()
    with ProcessPoolExecutor(1) as processes:
        assert processes.strategy == Auto()

    async def strategy_of_async() -> object:
        async with AsyncDispatcher(2) as pool:
            return pool.strategy

    assert asyncio.run(strategy_of_async()) == Auto()
    assert ServeConfig.__dataclass_fields__["strategy"].default == "auto"


def test_with_the_defaults_a_blocked_job_holds_back_no_other_job() -> None:
    # As the first end-to-end test, with no strategy or chunk given: what a user
    # who writes Dispatcher(n).map(...) gets.
    with Dispatcher(3) as pool:
        assert list(pool.map(_blocked_first(200), range(200))) == [True] * 200


# -- auto with a key: one key's jobs in order ------------------------------------


def _check_key_runs(lines: list[list[str]], keys: list[int]) -> None:
    """Each key's jobs ran one after another (start, end, start, end...), in input order."""
    assert len(lines) == 2 * len(keys)
    for key in set(keys):
        mine = [(line[0], int(line[2])) for line in lines if int(line[1]) == key]
        positions = [p for p, k in enumerate(keys) if k == key]
        assert mine == [(edge, p) for p in positions for edge in ("s", "e")], key


@pytest.mark.parametrize("executor", ["thread", "process"])
def test_auto_with_a_key_runs_each_key_s_jobs_in_order(executor: str, tmp_path: Path) -> None:
    rng = random.Random(7)
    keys = [rng.randrange(6) for _ in range(300)]
    log = str(tmp_path / "log")
    entries = [[log, key, position] for position, key in enumerate(keys)]
    with Dispatcher(3, executor=executor) as pool:
        assert list(pool.map(span, entries, key=lambda e: e[1])) == list(range(len(keys)))
        stats = pool.stats()
    _check_key_runs(read_log(log), keys)
    assert stats.submitted == stats.succeeded == len(keys)


def test_auto_with_a_key_keeps_order_with_an_explicit_chunk(tmp_path: Path) -> None:
    keys = [i % 5 for i in range(120)]
    log = str(tmp_path / "log")
    entries = [[log, key, position] for position, key in enumerate(keys)]
    with Dispatcher(4, chunk=7) as pool:
        assert sorted(pool.map(span, entries, key=lambda e: e[1], ordered=False)) == list(
            range(120)
        )
    _check_key_runs(read_log(log), keys)


def test_auto_with_a_key_runs_each_key_s_jobs_in_order_on_asyncio() -> None:
    rng = random.Random(3)
    keys = [rng.randrange(5) for _ in range(400)]
    ran: list[tuple[int, int]] = []
    running: set[int] = set()

    async def job(position: int) -> int:
        key = keys[position]
        assert key not in running  # one key's jobs never overlap
        running.add(key)
        await asyncio.sleep(rng.random() / 1000)
        running.discard(key)
        ran.append((key, position))
        return position

    async def main() -> list[int]:
        async with AsyncDispatcher(8) as pool:
            return [r async for r in pool.map(job, range(len(keys)), key=keys.__getitem__)]

    assert asyncio.run(main()) == list(range(len(keys)))
    for key in set(keys):
        mine = [p for k, p in ran if k == key]
        assert mine == sorted(mine)
        assert len(mine) == keys.count(key)


def test_a_blocked_key_holds_back_no_other_key() -> None:
    # Key 0's first job waits until every job of the other keys has run: they
    # must neither queue behind it nor wait on its lane.
    keys = [i % 4 for i in range(200)]
    others = sum(1 for k in keys if k != 0)
    done = 0
    lock = threading.Lock()
    all_others = threading.Event()

    def job(i: int) -> bool:
        nonlocal done
        if i == 0:
            return all_others.wait(_BLOCK_LIMIT)
        if keys[i] != 0:
            with lock:
                done += 1
                if done == others:
                    all_others.set()
        return True

    with Dispatcher(3) as pool:
        assert all(pool.map(job, range(len(keys)), key=keys.__getitem__))


def test_stop_counts_the_jobs_waiting_in_lanes() -> None:
    # Jobs of few keys: chunks wait in their lanes behind the running ones when
    # the stop comes; every job still ends counted exactly once.
    gate = threading.Event()
    started = threading.Semaphore(0)

    def job(i: int) -> int:
        started.release()
        gate.wait(_BLOCK_LIMIT)
        return i

    pool = Dispatcher(2)
    outcomes: list[object] = []

    def consume() -> None:
        try:
            outcomes.extend(pool.map(job, range(300), key=lambda i: i % 3, outcomes=True))
        except Exception as exc:  # the map ends with the stop (ClosedError)
            outcomes.append(exc)

    consumer = threading.Thread(target=consume)
    consumer.start()
    assert started.acquire(timeout=_BLOCK_LIMIT)
    assert started.acquire(timeout=_BLOCK_LIMIT)  # both workers hold a job
    stats: list[DispatcherStats] = []
    stopper = threading.Thread(target=lambda: stats.append(pool.stop(cancel=True)))
    stopper.start()
    while not pool._control.stopping:
        threading.Event().wait(0.001)
    gate.set()
    stopper.join()
    consumer.join()
    final = stats[0]
    assert final.cancelled > 0
    assert final.submitted == final.succeeded + final.failed + final.cancelled


def test_cancelling_a_chunk_that_holds_its_lanes_turn_cancels_what_waits_behind_it() -> None:
    # A process worker that cannot start gives the chunks it took back to the queue,
    # one of them holding its lane's turn while the lane's next chunk waits behind it
    # (taken meanwhile by another worker, which left it with the lane). A stop that
    # cancels the given-back chunk off the queue cancels and counts the waiting one
    # too: no worker would ever end that lane's turn.
    lanes = Lanes(1)
    pieces = lanes.pieces([0, 1, 2, 3], ["k"] * 4, size=2)
    first = lanes.wrap(pieces[0], BulkChunk(str, [0, 1], None))
    second = lanes.wrap(pieces[1], BulkChunk(str, [2, 3], None))
    assert first.claim()  # its turn: a worker took it
    assert not second.claim()  # not yet its turn: it waits with its lane
    assert cancel_message(first) == 4
    assert (first.inner.items, second.inner.items) == ([], [])  # both cancelled
    assert lanes.drop(0) == []


def test_a_map_started_while_another_fills_the_queue_gets_every_result_on_threads() -> None:
    # The first map's chunks fill the shared queue: the second still places its
    # own first block, or nothing would ever come to wake it.
    with Dispatcher(2) as pool:
        first = pool.map(pow, range(300), [2] * 300)
        second = pool.map(abs, range(-300, 0))
        assert list(second) == list(range(300, 0, -1))
        assert list(first) == [i * i for i in range(300)]


def test_a_map_started_while_another_fills_the_queue_gets_every_result_on_asyncio() -> None:
    # Two maps begun in one tick: the first fills the shared queue before any
    # worker runs; the second still places its own first block.
    async def main() -> tuple[list[int], list[int]]:
        async def slow(i: int) -> int:
            await asyncio.sleep(0.001)
            return i

        async def plain(i: int) -> int:
            return -i

        async def every(results: AsyncIterator[int]) -> list[int]:
            return [r async for r in results]

        async with AsyncDispatcher(2) as pool:
            return await asyncio.gather(
                every(pool.map(slow, range(300))), every(pool.map(plain, range(500)))
            )

    first, second = asyncio.run(main())
    assert first == list(range(300))
    assert second == [-i for i in range(500)]


# -- dispatch under auto ------------------------------------------------------


def test_a_bulk_run_sizes_chunks_from_the_reports_and_paces_the_input() -> None:
    queued = [0]
    wakes: list[int] = []
    feed = AdaptiveFeed(ChunkController(2, 0.01), lambda: queued[0], total=1000)
    run = BulkRun(feed, lambda: wakes.append(1))
    assert run.limit() == 2  # nothing measured: a job per worker
    assert run.cut([0, 1]) == [[0], [1]]
    queued[0] = 4  # two chunks per worker wait: enough
    assert not run.wants_more()
    run.waiting = True
    assert run.may_sleep()
    run.ended(0, 1, 1.0, 1.001)
    assert wakes == []  # more than a chunk per worker still waits: sleep on
    queued[0] = 2
    run.ended(1, 1, 1.0, 1.001)
    assert wakes == [1]  # down to a chunk per worker: wake up and refill
    run.waiting = False
    assert run.wants_more()
    assert run.limit() == 4  # measured 1 ms a job: grown to 2 a chunk (doubling)
    assert run.cut([2, 3, 4, 5]) == [[2, 3], [4, 5]]
    queued[0] = 100  # another call's messages fill the queue
    assert not run.wants_more()
    run.waiting = True
    run.ended(0, 2, 2.0, 2.002)
    run.ended(1, 2, 2.0, 2.002)
    assert wakes == [1, 1]  # every chunk of the call ended: nothing else would wake it
    run.waiting = False
    assert run.wants_more()
    run.limit()
    run.cut(list(range(6, 1000)))
    assert run.wants_more()  # the whole known input is placed: return at once


def test_process_workers_take_larger_fire_and_forget_chunks() -> None:
    assert tuning("thread").max_dispatch_chunk == tuning("asyncio").max_dispatch_chunk == MAX_CHUNK
    assert tuning("process").max_dispatch_chunk > MAX_CHUNK


def test_each_worker_kind_s_calls_are_sized_with_its_own_bounds() -> None:
    def bounds(feed: AdaptiveFeed | None) -> tuple[float, int, float, int]:
        assert feed is not None
        c = feed.controller
        return c.min_target, c.tail_factor, c.tail_seconds, c.max_chunk

    def expected(kind: str, max_chunk: int = MAX_CHUNK) -> tuple[float, int, float, int]:
        t = tuning(kind)
        return t.target, t.tail_factor, t.tail_seconds, max_chunk

    for kind in ("thread", "process"):
        with Dispatcher(2, executor=kind) as pool:
            assert bounds(pool._adaptive_feed(range(10), lambda: 0)) == expected(kind)
            run = pool._bulk_run(range(10), lambda: 0, lambda: None)
            assert run is not None
            assert bounds(run.feed) == expected(kind, tuning(kind).max_dispatch_chunk)

    async def main() -> tuple[float, int, float, int]:
        async with AsyncDispatcher(3) as d:
            return bounds(d._adaptive_feed(range(10), lambda: 0))

    assert asyncio.run(main()) == expected("asyncio")


def test_dispatch_under_auto_runs_every_job_once_on_threads() -> None:
    seen: list[int] = []
    errors: list[int] = []

    def job(i: int) -> None:
        seen.append(i)  # list.append is atomic
        if i % 7 == 0:
            raise ValueError(i)

    with Dispatcher(3) as pool:
        assert pool.dispatch(job, range(20_000), on_error=lambda i, e: errors.append(i)) == 20_000
        # An input of unknown length: no tail rule, the same count.
        assert pool.dispatch(job, iter(range(20_000, 23_000))) == 3_000
    stats = pool.stats()
    assert sorted(seen) == list(range(23_000))
    assert sorted(errors) == list(range(0, 20_000, 7))
    assert stats.submitted == 23_000
    assert (stats.succeeded, stats.failed, stats.cancelled) == (23_000 - 3_286, 3_286, 0)


def test_dispatch_under_auto_runs_every_job_once_on_processes() -> None:
    failed: list[int] = []
    with Dispatcher(2, executor="process") as pool:
        assert pool.dispatch(jobs.flaky, range(30_000), on_error=lambda i, e: failed.append(i)) == (
            30_000
        )
    stats = pool.stats()
    assert sorted(failed) == list(range(0, 30_000, 3))  # each multiple of 3 failed once
    assert (stats.submitted, stats.succeeded, stats.failed) == (30_000, 20_000, 10_000)
    assert stats.cancelled == 0


def test_dispatch_under_auto_with_a_job_timeout_runs_every_job_once_on_processes() -> None:
    # Each job is reported on its own (to keep the timeout): the chunk's span comes from them.
    failed: list[int] = []
    with Dispatcher(2, executor="process", job_timeout=30) as pool:
        pool.dispatch(jobs.flaky, range(3_000), on_error=lambda i, e: failed.append(i))
    stats = pool.stats()
    assert sorted(failed) == list(range(0, 3_000, 3))
    assert (stats.submitted, stats.succeeded, stats.failed) == (3_000, 2_000, 1_000)


@pytest.mark.parametrize("coroutine", [False, True])
def test_dispatch_under_auto_runs_every_job_once_on_asyncio(coroutine: bool) -> None:
    seen: list[int] = []
    errors: list[int] = []

    def plain(i: int) -> None:
        seen.append(i)
        if i % 7 == 0:
            raise ValueError(i)

    async def awaited(i: int) -> None:
        plain(i)

    async def main() -> DispatcherStats:
        async with AsyncDispatcher(5) as pool:
            job = awaited if coroutine else plain
            sent = await pool.dispatch(job, range(10_000), on_error=lambda i, e: errors.append(i))
            assert sent == 10_000
            await pool.join()
        return pool.stats()

    stats = asyncio.run(main())
    assert sorted(seen) == list(range(10_000))
    assert sorted(errors) == list(range(0, 10_000, 7))
    assert (stats.submitted, stats.succeeded, stats.failed) == (10_000, 10_000 - 1_429, 1_429)


#: Most of the input an adaptive dispatch takes while every worker is blocked on
#: its first job: two chunks per worker queued, one running, one block, all of
#: one job (nothing has been measured). An eager dispatch takes blocks of 1024.
_PACED = 4 * 2


def test_dispatch_under_auto_takes_the_input_as_the_workers_need_it_on_threads() -> None:
    gate = threading.Event()
    blocked = threading.Semaphore(0)
    drawn = 0

    def job(i: int) -> None:
        if i < 2:
            blocked.release()
            gate.wait(_BLOCK_LIMIT)

    def items() -> Iterator[int]:
        nonlocal drawn
        for i in range(3_000):
            drawn += 1
            yield i

    with Dispatcher(2) as pool:
        sender = threading.Thread(target=pool.dispatch, args=(job, items()))
        sender.start()
        assert blocked.acquire(timeout=_BLOCK_LIMIT)
        assert blocked.acquire(timeout=_BLOCK_LIMIT)  # both workers hold a blocked job
        taken = drawn
        gate.set()
        sender.join()
    assert taken <= _PACED
    assert pool.stats().succeeded == 3_000


def test_dispatch_under_auto_takes_the_input_as_the_workers_need_it_on_asyncio() -> None:
    async def main() -> tuple[int, DispatcherStats]:
        gate = asyncio.Event()
        blocked = asyncio.Semaphore(0)
        drawn = 0

        async def job(i: int) -> None:
            if i < 2:
                blocked.release()
                await asyncio.wait_for(gate.wait(), _BLOCK_LIMIT)

        def items() -> Iterator[int]:
            nonlocal drawn
            for i in range(3_000):
                drawn += 1
                yield i

        async with AsyncDispatcher(2) as pool:
            sender = asyncio.ensure_future(pool.dispatch(job, items()))
            for _ in range(2):  # both workers hold a blocked job
                await asyncio.wait_for(blocked.acquire(), _BLOCK_LIMIT)
            taken = drawn
            gate.set()
            assert await sender == 3_000
        return taken, pool.stats()

    taken, stats = asyncio.run(main())
    assert taken <= _PACED
    assert stats.succeeded == 3_000


def test_a_stop_ends_an_adaptive_dispatch_and_counts_every_job() -> None:
    gate = threading.Event()
    blocked = threading.Semaphore(0)
    raised: list[BaseException] = []

    def job(i: int) -> None:
        if i < 2:
            blocked.release()
            gate.wait(_BLOCK_LIMIT)

    def send() -> None:
        try:
            pool.dispatch(job, range(100_000))
        except ClosedError as exc:
            raised.append(exc)

    pool = Dispatcher(2)
    sender = threading.Thread(target=send)
    sender.start()
    assert blocked.acquire(timeout=_BLOCK_LIMIT)
    assert blocked.acquire(timeout=_BLOCK_LIMIT)
    stopper = threading.Thread(target=lambda: stats.append(pool.stop(cancel=True)))
    stats: list[DispatcherStats] = []
    stopper.start()
    while not pool._control.stopping:
        threading.Event().wait(0.001)
    gate.set()
    stopper.join()
    sender.join()
    assert len(raised) == 1  # the paced dispatch woke and found the dispatcher closed
    final = stats[0]
    assert final.cancelled > 0
    assert final.submitted == final.succeeded + final.failed + final.cancelled < 100_000
