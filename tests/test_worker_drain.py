"""``dispatchkit worker`` stops at its drain deadline and leaves the unfinished job for others.

Real worker processes over a real Redis server, a real SIGTERM.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import pytest

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

pytestmark = [pytest.mark.redis, pytest.mark.timeout(60)]

#: The exit status documented for a stop at the drain deadline.
DRAIN_DEADLINE_EXIT = 3
DEADLINE = 1.0


def _pending(client: Any, namespace: str) -> dict[str, int]:
    """Unacknowledged entries of the pull stream, by the worker holding them."""
    summary = client.xpending(f"{namespace}:{QUEUE}:pull", "workers")
    return {c["name"].decode(): int(c["pending"]) for c in summary["consumers"]}


@pytest.mark.parametrize("executor", ["thread", "process", "async"])
def test_a_job_still_running_at_the_drain_deadline_is_left_for_another_worker(
    workers: Workers, redis_url: str, namespace: str, client: Any, executor: str
) -> None:
    options = ("--drain-timeout", str(DEADLINE), "--executor", executor, "--import", "drain_jobs")
    leaving = workers.start(*options, concurrency=1)
    log = f"{namespace}:log"
    d = RedisDispatcher(redis_url, QUEUE, namespace=namespace)
    try:
        # Far longer than the deadline.
        d.submit("t.async_started" if executor == "async" else "t.record", log, 7, 30.0)
        wait_for(lambda: len(runs(client, log)) == 1, 20)
        (holder,) = _pending(client, namespace)

        started = time.monotonic()
        leaving.send_signal(signal.SIGTERM)
        out, _ = leaving.communicate(timeout=DEADLINE + 10)
        waited = time.monotonic() - started

        assert leaving.returncode == DRAIN_DEADLINE_EXIT, out
        assert DEADLINE - 0.5 <= waited <= DEADLINE + 5  # the deadline, not the 30 s job
        last = out.strip().splitlines()[-1]
        assert last.startswith("dispatchkit worker: drain deadline passed: 1 entries left")
        assert "drain deadline passed after 1 s: 1 entries left unacknowledged" in out
        # Nothing of it runs on: the thread or worker process running the job is gone.
        (_, runner_pid), *_ = runs(client, log)
        wait_for(lambda: not Path(f"/proc/{runner_pid}").exists(), 10)
        # Not acknowledged: still pending, in the leaving worker's name ...
        assert _pending(client, namespace) == {holder: 1}
        # ... so another worker claims it and runs it again.
        workers.start(*options, concurrency=1)
        wait_for(lambda: len(runs(client, log)) == 2, 20)
        assert [value for value, _ in runs(client, log)] == [7, 7]
        assert holder not in _pending(client, namespace)
    finally:
        d.shutdown(wait=False)


def test_a_drain_within_the_deadline_still_exits_0(
    workers: Workers, redis_url: str, namespace: str, client: Any
) -> None:
    proc = workers.start("--drain-timeout", "20", concurrency=1)
    log = f"{namespace}:log"
    with RedisDispatcher(redis_url, QUEUE, namespace=namespace) as d:
        handle = d.submit(jobs.record, log, 1, 0.5)
        wait_for(lambda: bool(runs(client, log)), 20)
        proc.send_signal(signal.SIGTERM)
        assert handle.result(timeout=20) == 1
    out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0, out
    assert out.strip().splitlines()[-1].startswith("dispatchkit worker: stopped: 1 succeeded")
    assert _pending(client, namespace) == {}
