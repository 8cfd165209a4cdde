"""A worker gives back the entries it cannot start soon: real worker processes, real Redis."""

from __future__ import annotations

import signal
from typing import Any

import pytest

from dispatchkit import JobHandle
from dispatchkit.remote import RedisDispatcher
from tests import redis_test_jobs as jobs
from tests.redis_support import (
    QUEUE,
    Workers,
    client,
    namespace,
    redis_url,
    runs,
    wait_for,
    workers,
)

__all__ = ["client", "namespace", "redis_url", "workers"]  # fixtures, imported for pytest

pytestmark = [pytest.mark.redis, pytest.mark.timeout(90)]

SLOW = 100
QUICK = range(101, 107)


def _held_behind_a_slow_job(
    d: RedisDispatcher, client: Any, log: str, gate: str
) -> tuple[JobHandle[int], list[JobHandle[int]]]:
    """Quick jobs first, so that the worker measures a short entry time and holds entries
    ahead (eight: its --prefetch); then a slow job and quick ones behind it."""
    warm = [d.submit(jobs.record, log, i) for i in range(20)]
    assert [h.result(timeout=20) for h in warm] == list(range(20))
    slow = d.submit(jobs.hold, log, SLOW, gate, 60.0)
    quick = [d.submit(jobs.record, log, value) for value in QUICK]
    wait_for(lambda: any(value == SLOW for value, _ in runs(client, log)), 20)
    return slow, quick


def _ran_once_each(client: Any, log: str) -> list[tuple[int, int]]:
    started = runs(client, log)
    assert sorted(v for v, _ in started) == [*range(20), SLOW, *QUICK]
    return started


def test_entries_held_behind_a_slow_job_are_run_by_an_idle_worker(
    workers: Workers, redis_url: str, namespace: str, client: Any
) -> None:
    workers.start("--prefetch", "8", concurrency=1)
    log, gate = f"{namespace}:log", f"{namespace}:gate"
    with RedisDispatcher(redis_url, QUEUE, namespace=namespace) as d:
        slow, quick = _held_behind_a_slow_job(d, client, log, gate)
        idle = workers.start(concurrency=1)
        # The slow job keeps the first worker's only slot: the second runs them.
        assert [h.result(timeout=30) for h in quick] == list(QUICK)
        assert not slow.done()
        client.rpush(gate, "go")
        assert slow.result(timeout=30) == SLOW
    started = _ran_once_each(client, log)
    assert {pid for value, pid in started if value in QUICK} == {idle.pid}


def test_a_draining_worker_gives_back_its_unstarted_entries_before_its_drain_ends(
    workers: Workers, redis_url: str, namespace: str, client: Any
) -> None:
    leaving = workers.start("--prefetch", "8", "--drain-timeout", "60", concurrency=1)
    log, gate = f"{namespace}:log", f"{namespace}:gate"
    with RedisDispatcher(redis_url, QUEUE, namespace=namespace) as d:
        slow, quick = _held_behind_a_slow_job(d, client, log, gate)
        leaving.send_signal(signal.SIGTERM)
        other = workers.start(concurrency=1)
        assert [h.result(timeout=30) for h in quick] == list(QUICK)
        assert leaving.poll() is None  # still draining: its slow job runs on
        client.rpush(gate, "go")
        assert slow.result(timeout=30) == SLOW
    out, _ = leaving.communicate(timeout=30)
    assert leaving.returncode == 0, out
    assert "stopped: 21 succeeded" in out  # the first twenty and the slow one
    started = _ran_once_each(client, log)
    assert {pid for value, pid in started if value in QUICK} == {other.pid}
