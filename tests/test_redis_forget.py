"""``dispatch(forget=True)``: no outcome is written, and the counts still add up (real Redis)."""

from __future__ import annotations

import signal
from typing import Any

import pytest

from dispatchkit.errors import QueueFull
from dispatchkit.remote import RedisDispatcher
from tests import redis_test_jobs as jobs
from tests.redis_support import (
    QUEUE,
    Workers,
    client,
    namespace,
    redis_url,
    wait_for,
    workers,
)

__all__ = ["client", "namespace", "redis_url", "workers"]  # fixtures, imported for pytest

pytestmark = [pytest.mark.redis, pytest.mark.timeout(60)]


def test_forgotten_jobs_write_no_outcome_and_their_failures_are_the_workers(
    workers: Workers, redis_url: str, namespace: str, client: Any
) -> None:
    proc = workers.start(concurrency=2)
    log = f"{namespace}:log"
    pull = f"{namespace}:{QUEUE}:pull"
    with RedisDispatcher(redis_url, QUEUE, namespace=namespace) as d:
        results = d.keys.results(d.name)
        bodies = [{"log": log, "id": i} for i in range(50)]
        assert d.dispatch(jobs.payload, bodies, forget=True) == 50
        assert d.dispatch(jobs.fail, ["alone"], forget=True) == 1
        assert d.dispatch(jobs.fail, ["a", "b", "c"], chunk=3, forget=True) == 3
        assert d.join(30)  # waits for them to be published, not run
        wait_for(lambda: client.llen(log) == 50 and client.xlen(pull) == 0, 30)
        assert not client.exists(results)  # not one outcome came back
        stats = d.stats()
        assert (stats.submitted, stats.forgotten, stats.pending) == (54, 54, 0)
        assert (stats.succeeded, stats.failed, stats.cancelled) == (0, 0, 0)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    # The worker tells and counts the failures nobody else hears of.
    assert "job 't.fail' failed: ValueError: alone" in out
    assert "job 't.fail': 3 of 3 calls failed, the first: ValueError: a" in out
    assert "stopped: 50 succeeded, 4 failed, 0 dead-lettered" in out


def test_outcomes_still_come_back_without_forget_beside_forgotten_jobs(
    workers: Workers, redis_url: str, namespace: str, client: Any
) -> None:
    workers.start(concurrency=2)
    with RedisDispatcher(redis_url, QUEUE, namespace=namespace) as d:
        assert d.dispatch(jobs.echo, range(10), forget=True) == 10
        assert d.dispatch(jobs.echo, range(10), chunk=5) == 10
        assert d.join(30)
        stats = d.stats()
    assert (stats.submitted, stats.succeeded, stats.forgotten) == (20, 10, 10)
    assert stats.submitted == stats.succeeded + stats.failed + stats.cancelled + stats.forgotten


def test_forgotten_jobs_are_bounded_by_their_streams_length(
    workers: Workers, redis_url: str, namespace: str, client: Any
) -> None:
    pull = f"{namespace}:{QUEUE}:pull"
    d = RedisDispatcher(redis_url, QUEUE, namespace=namespace, capacity=5, put_timeout=1)
    try:
        # No worker yet: the stream takes five, the outbox five more, then it is full.
        with pytest.raises(QueueFull):
            d.dispatch(jobs.echo, range(50), forget=True)
        assert client.xlen(pull) == 5
        workers.start(concurrency=2)
        assert d.join(30)
        stats = d.stats()
        assert stats.forgotten == stats.submitted == 10
        wait_for(lambda: client.xlen(pull) == 0, 30)  # and they ran
    finally:
        d.shutdown(wait=False)


@pytest.mark.parametrize("how", ["dispatch", "dispatch(forget=True)", "map"])
def test_a_queue_full_in_the_middle_of_a_spread_block_counts_only_what_was_sent(
    workers: Workers, redis_url: str, namespace: str, client: Any, how: str
) -> None:
    workers.start(concurrency=1)
    workers.start(concurrency=1)
    gate = f"{namespace}:gate"
    d = RedisDispatcher(
        redis_url, QUEUE, namespace=namespace, strategy="round_robin", capacity=2, put_timeout=0.2
    )
    try:
        # Round robin over two workers with chunk 2: each block of four jobs is two
        # entries, one per worker. The held jobs keep both entries of the first block
        # (and, forgotten, the streams) full, so the next block's first entry is refused.
        def send() -> None:
            items = [gate] * 40
            if how == "map":
                list(d.map(jobs.wait_for_key, items, chunk=2))
            else:
                d.dispatch(jobs.wait_for_key, items, chunk=2, forget="forget" in how)

        with pytest.raises(QueueFull):
            send()
        client.set(gate, 1)
        assert d.join(30)
        stats = d.stats()
    finally:
        d.shutdown(wait=False)
    ended = stats.succeeded + stats.failed + stats.cancelled + stats.forgotten
    assert stats.submitted == ended  # a refused entry's block mates were never sent
    assert stats.published * 2 == stats.submitted


@pytest.mark.parametrize("how", ["dispatch", "map"])
def test_a_key_that_raises_mid_block_leaves_the_counts_whole(
    workers: Workers, redis_url: str, namespace: str, how: str
) -> None:
    workers.start(concurrency=2)

    def key(item: int) -> int:
        if item == 3:
            raise ValueError("no key for 3")
        return item

    d = RedisDispatcher(redis_url, QUEUE, namespace=namespace, strategy="key")

    def send() -> None:
        if how == "map":
            list(d.map(jobs.echo, range(10), key=key))
        else:
            d.dispatch(jobs.echo, range(10), key=key)

    try:
        with pytest.raises(ValueError, match="no key for 3"):
            send()
        # The jobs before the failing key were sent; it and those after it never were.
        assert d.join(30), "join waited on a job that was never sent"
        stats = d.stats()
    finally:
        d.shutdown(wait=False)
    assert stats.submitted == stats.succeeded + stats.failed + stats.cancelled == 3
