"""Each strategy's assignment, as pure functions (no threads)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dispatchkit.strategies import (
    SHARED,
    Batch,
    ByKey,
    Pull,
    RoundRobin,
    Strategy,
    parse_strategy,
    stable_hash,
)

workers = st.integers(min_value=1, max_value=40)
firsts = st.integers(min_value=0, max_value=10_000)
counts = st.integers(min_value=0, max_value=500)


@given(workers, firsts, counts)
def test_round_robin_sends_job_i_to_worker_i_mod_n(n: int, first: int, count: int) -> None:
    strategy = RoundRobin()
    assert strategy.targets(first, count, n) == [(first + i) % n for i in range(count)]
    for seq in range(first, first + count):
        assert strategy.assign(seq, None, n) == seq % n


@given(workers, counts)
def test_round_robin_gives_each_worker_floor_or_ceil(n: int, count: int) -> None:
    per_worker = [0] * n
    for worker in RoundRobin().targets(0, count, n):
        per_worker[worker] += 1
    assert set(per_worker) <= {count // n, -(-count // n)}


@given(workers, st.integers(min_value=1, max_value=300), firsts, counts)
def test_batch_sends_consecutive_blocks(n: int, block: int, first: int, count: int) -> None:
    targets = Batch(block).targets(first, count, n)
    for i, worker in enumerate(targets):
        assert worker == ((first + i) // block) % n
    # A worker changes only at a block boundary.
    for i in range(1, count):
        if (first + i) % block != 0:
            assert targets[i] == targets[i - 1]


@pytest.mark.parametrize("strategy", [RoundRobin(), Batch(7), Pull(), ByKey()])
@given(n=workers, first=firsts, items=st.lists(st.integers(), max_size=300))
def test_split_agrees_with_assign_and_keeps_every_job_once(
    strategy: Strategy, n: int, first: int, items: list[int]
) -> None:
    keys = [f"k{item % 13}" for item in items] if strategy.needs_key else None
    parts = strategy.split(items, first, n, keys)
    # Tag every item with its position to check nothing is lost or duplicated.
    tagged = list(range(len(items)))
    tagged_parts = strategy.split(tagged, first, n, keys)
    seen = sorted(i for _, part in tagged_parts for i in part)
    assert seen == tagged
    assert len({worker for worker, _ in parts}) == len(parts)  # one part per worker
    for worker, part in tagged_parts:
        assert part == sorted(part)  # each worker's jobs keep their order
        for position in part:
            key = keys[position] if keys is not None else None
            assert strategy.assign(first + position, key, n) == worker


@given(workers, st.integers(min_value=1, max_value=50), firsts, counts)
def test_batch_blocks_concatenate_back_to_the_input(
    n: int, block: int, first: int, count: int
) -> None:
    items = list(range(count))
    targets = Batch(block).targets(first, count, n)
    runs: list[list[int]] = []
    for item, worker in zip(items, targets, strict=True):
        if runs and targets[item - 1] == worker and (first + item) % block != 0:
            runs[-1].append(item)
        else:
            runs.append([item])
    assert [i for run in runs for i in run] == items
    assert all(len(run) <= block for run in runs)


@pytest.mark.parametrize("strategy", [RoundRobin(), Batch(7), Pull()])
@given(n=workers, first=firsts, count=counts)
def test_a_range_splits_as_its_list_does(
    strategy: Strategy, n: int, first: int, count: int
) -> None:
    as_range = strategy.split(range(count), first, n)
    as_list = strategy.split(list(range(count)), first, n)
    assert [(w, list(part)) for w, part in as_range] == as_list


def test_batch_keeps_a_range_where_a_worker_has_one_run() -> None:
    # Each worker one block: its part is the block's range (sent to a process as bounds).
    assert Batch(4).split(range(100, 108), 0, 2) == [(0, range(100, 104)), (1, range(104, 108))]
    # A worker with two blocks: one list of both, in order.
    assert Batch(2).split(range(6), 0, 2) == [(0, [0, 1, 4, 5]), (1, range(2, 4))]
    # A caller's list is never a part itself (offer lets the caller reuse it).
    items = [1, 2, 3]
    for strategy in (Batch(8), RoundRobin()):
        ((_, part),) = strategy.split(items, 0, 1)
        assert part == items
        assert part is not items


def test_pull_uses_the_shared_queue() -> None:
    assert Pull().assign(5, None, 3) == SHARED
    assert Pull().targets(0, 4, 3) == [SHARED] * 4


@given(st.one_of(st.text(), st.binary(), st.integers()), workers)
def test_key_is_stable_and_in_range(key: object, n: int) -> None:
    strategy = ByKey()
    worker = strategy.assign(0, key, n)
    assert 0 <= worker < n
    assert all(strategy.assign(seq, key, n) == worker for seq in range(1, 20))


def test_stable_hash_is_the_same_across_processes() -> None:
    # CRC-32 of UTF-8: a fixed value, unlike hash(), which PYTHONHASHSEED changes.
    assert stable_hash("user-1") == 2_116_437_524
    assert stable_hash(b"user-1") == stable_hash("user-1")
    assert stable_hash(42) == 42


@pytest.mark.parametrize("bad", [1.5, None, ("a",), True])
def test_stable_hash_rejects_other_keys(bad: object) -> None:
    with pytest.raises(TypeError, match="key must be an int, str or bytes"):
        stable_hash(bad)  # type: ignore[arg-type,unused-ignore]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("round_robin", RoundRobin()),
        ("ROUND-ROBIN", RoundRobin()),
        ("batch", Batch(100)),
        ("pull", Pull()),
        ("key", ByKey()),
    ],
)
def test_parse_strategy(name: str, expected: Strategy) -> None:
    assert parse_strategy(name) == expected


def test_parse_strategy_errors() -> None:
    with pytest.raises(ValueError, match="unknown strategy 'fifo'"):
        parse_strategy("fifo")
    with pytest.raises(TypeError):
        parse_strategy(3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="block must be at least 1"):
        Batch(0)
