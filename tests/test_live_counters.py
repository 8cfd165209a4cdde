"""Counters are current within a burst: ``stats()`` moves as each job ends.

A worker that takes several jobs at once (a chunk, or a burst of queued single
jobs) must not report them only when the last one ends: ``/metrics`` and the
service's "draining" line read these counters while jobs run.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from dispatchkit import AsyncDispatcher, Dispatcher, DispatcherStats
from tests.serve_support import kill_leftovers, start_server

pytestmark = pytest.mark.timeout(30)

JOBS = 6


def wait_until(stats: Callable[[], DispatcherStats], done: int) -> DispatcherStats:
    deadline = time.monotonic() + 5
    while True:
        now = stats()
        if now.succeeded >= done or time.monotonic() > deadline:
            return now
        time.sleep(0.005)


@pytest.mark.parametrize("chunk", [1, 3])
@pytest.mark.parametrize("how", ["dispatch", "map"])
def test_thread_stats_move_one_job_at_a_time(how: str, chunk: int) -> None:
    gate = threading.Semaphore(0)  # each release lets one job end

    def job(x: int) -> int:
        if not gate.acquire(timeout=10):
            raise TimeoutError("the test never released this job")
        return x

    results: list[int] = []
    with Dispatcher(workers=2, strategy="round_robin", chunk=chunk) as d:
        if how == "dispatch":
            assert d.dispatch(job, range(JOBS)) == JOBS
        else:
            consumer = threading.Thread(target=lambda: results.extend(d.map(job, range(JOBS))))
            consumer.start()  # (on a failed check, its map raises JobCancelled in the thread)
        try:
            # Both workers hold several jobs (3 each), all waiting at the gate.
            for done in range(1, JOBS + 1):
                gate.release()
                stats = wait_until(d.stats, done)
                assert stats.succeeded == done, f"after {done} jobs ended, stats say {stats}"
                assert stats.pending == JOBS - done
        finally:
            for _ in range(JOBS):  # a failed check must not leave jobs waiting
                gate.release()
    if how == "map":
        consumer.join(10)
        assert results == list(range(JOBS))


@pytest.mark.parametrize("chunk", [1, 3])
@pytest.mark.parametrize("how", ["dispatch", "map"])
def test_async_stats_move_one_job_at_a_time(how: str, chunk: int) -> None:
    async def main() -> None:
        gate = asyncio.Semaphore(0)

        async def job(x: int) -> int:
            async with asyncio.timeout(10):
                await gate.acquire()
            return x

        async def consume(d: AsyncDispatcher) -> list[int]:
            return [x async for x in d.map(job, range(JOBS))]

        async with AsyncDispatcher(2, strategy="round_robin", chunk=chunk) as d:
            if how == "dispatch":
                assert await d.dispatch(job, range(JOBS)) == JOBS
            else:
                consumer = asyncio.ensure_future(consume(d))
            for done in range(1, JOBS + 1):
                gate.release()
                async with asyncio.timeout(5):
                    while d.stats().succeeded < done:
                        await asyncio.sleep(0.005)
                assert d.stats().pending == JOBS - done
            if how == "map":
                assert await consumer == list(range(JOBS))

    asyncio.run(main())


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def test_serve_metrics_move_while_a_burst_of_thread_jobs_runs(tmp_path: Path) -> None:
    pytest.importorskip("granian")
    out = tmp_path / "handled.txt"
    server = start_server(
        tmp_path,
        *("--handler", "serve_handlers:slow", "--executor", "thread", "--workers", "1"),
        env={"SERVE_TEST_OUT": str(out)},
    )
    try:
        total = 60  # 20 ms each: one worker takes them all in one burst
        assert server.post(list(range(total))) == 202
        deadline = time.monotonic() + 10
        while True:
            status, _, text = server.request("GET", "/metrics")
            assert status == 200
            succeeded = _metric(text, "dispatchkit_jobs_succeeded_total")
            if succeeded > 0 or time.monotonic() > deadline:
                break
            time.sleep(0.01)
        depth = _metric(text, "dispatchkit_queue_depth")
        # Seen as the first jobs end, not only once the whole burst has.
        assert 0 < succeeded < total, text
        assert depth == total - succeeded
        assert server.stop() == 0
    finally:
        kill_leftovers()
