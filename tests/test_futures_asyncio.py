"""What cancelling a task that awaits a job does to the job, on every front end.

asyncio's rule for a ``concurrent.futures.Future`` (``asyncio.wrap_future``,
``loop.run_in_executor``): cancelling the awaiting task calls the future's
``cancel()``, so a queued job is cancelled and never runs while a running job
runs to completion and keeps its result. The same tests run on the stdlib's
thread and process pools and on dispatchkit's executors; ``AsyncJobHandle``
follows the same rule.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import multiprocessing
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import dispatchkit
import dispatchkit.futures as dkf
from dispatchkit import Dispatcher, JobStatus
from tests import gate_jobs

#: Seconds any wait in these tests may take before it counts as a hang.
PATIENCE = 10

EXECUTORS: dict[str, Callable[[], cf.Executor]] = {
    "stdlib-thread": lambda: cf.ThreadPoolExecutor(1),
    "dispatchkit-thread": lambda: dkf.ThreadPoolExecutor(1),
    "dispatcher-pull": lambda: Dispatcher(1, strategy="pull"),
    "dispatcher-round-robin": lambda: Dispatcher(1, strategy="round_robin"),
}


@pytest.fixture(params=list(EXECUTORS))
def executor(request: pytest.FixtureRequest) -> Iterator[cf.Executor]:
    """A one-worker executor, shut down (waiting) after the test."""
    made = EXECUTORS[request.param]()
    yield made
    made.shutdown(wait=True)


class Gate:
    """A blocking job that says it started, then waits until the gate opens."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.opened = threading.Event()

    def job(self) -> str:
        self.started.set()
        assert self.opened.wait(PATIENCE), "the gate never opened"
        return "through"


async def cancelled_task(awaitable: Any) -> None:
    """Start a task awaiting ``awaitable``, let it block, cancel it, check it ended cancelled."""
    task = asyncio.ensure_future(awaitable)
    for _ in range(3):  # let the task reach its wait
        await asyncio.sleep(0)
    assert task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # asyncio passes a cancellation on in done callbacks: let them run.
    await asyncio.sleep(0)


@pytest.mark.parametrize("how", ["run_in_executor", "wrap_future"])
def test_cancelling_the_awaiter_cancels_a_queued_job(executor: cf.Executor, how: str) -> None:
    gate = Gate()
    ran: list[int] = []

    async def main() -> cf.Future[None] | None:
        loop = asyncio.get_running_loop()
        blocking = executor.submit(gate.job)
        assert await loop.run_in_executor(None, gate.started.wait, PATIENCE)
        queued: cf.Future[None] | None = None
        if how == "wrap_future":
            queued = executor.submit(ran.append, 1)
            await cancelled_task(asyncio.wrap_future(queued))
        else:
            await cancelled_task(loop.run_in_executor(executor, ran.append, 1))
        gate.opened.set()
        assert await asyncio.wrap_future(blocking) == "through"
        return queued

    queued = asyncio.run(main())
    executor.shutdown(wait=True)
    assert ran == []
    assert queued is None or queued.cancelled()


def test_cancelling_the_awaiter_leaves_a_running_job_its_result(executor: cf.Executor) -> None:
    gate = Gate()

    async def main() -> cf.Future[str]:
        running = executor.submit(gate.job)
        await asyncio.get_running_loop().run_in_executor(None, gate.started.wait, PATIENCE)
        await cancelled_task(asyncio.wrap_future(running))
        assert running.running()
        return running

    running = asyncio.run(main())
    gate.opened.set()
    assert running.result(PATIENCE) == "through"


# -- AsyncJobHandle ---------------------------------------------------------------


class AsyncGate:
    """An async job that says it started, then waits until the gate opens."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.opened = asyncio.Event()

    async def job(self) -> str:
        self.started.set()
        await self.opened.wait()
        return "through"


async def record(ran: list[int], value: int) -> int:
    ran.append(value)
    return value


async def stop_awaiting(how: str, handle: dispatchkit.AsyncJobHandle[Any]) -> None:
    """Await ``handle`` in a way that ``how`` cancels before the job ends."""
    if how == "task":
        await cancelled_task(handle)
    elif how == "gather":
        await cancelled_task(asyncio.gather(handle))
    else:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0):
                await handle


@pytest.mark.parametrize("how", ["task", "gather", "timeout"])
def test_cancelling_the_awaiter_of_a_queued_async_job_cancels_it(how: str) -> None:
    ran: list[int] = []

    async def main() -> dispatchkit.DispatcherStats:
        gate = AsyncGate()
        async with dispatchkit.AsyncDispatcher(1) as d:
            blocking = await d.submit(gate.job)
            await gate.started.wait()
            queued = await d.submit(record, ran, 1)
            await stop_awaiting(how, queued)
            assert queued.cancelled()
            assert queued.status is JobStatus.CANCELLED
            gate.opened.set()
            assert await blocking == "through"
            assert await (await d.submit(record, ran, 2)) == 2  # the worker goes on
        return d.stats()

    stats = asyncio.run(main())
    assert ran == [2]
    assert (stats.succeeded, stats.cancelled) == (2, 1)


def test_cancelling_the_awaiter_of_a_running_async_job_leaves_it_its_result() -> None:
    async def main() -> None:
        gate = AsyncGate()
        async with dispatchkit.AsyncDispatcher(1) as d:
            running = await d.submit(gate.job)
            await gate.started.wait()
            await cancelled_task(running)
            assert not running.done()
            assert running.status is JobStatus.RUNNING
            gate.opened.set()
            assert await running == "through"
            assert running.result() == "through"
        assert (d.stats().succeeded, d.stats().cancelled) == (1, 0)

    asyncio.run(main())


def test_a_shielded_queued_async_job_survives_its_awaiter() -> None:
    ran: list[int] = []

    async def main() -> None:
        gate = AsyncGate()
        async with dispatchkit.AsyncDispatcher(1) as d:
            await d.submit(gate.job)
            await gate.started.wait()
            queued = await d.submit(record, ran, 1)
            await cancelled_task(asyncio.shield(queued))
            assert not queued.cancelled()
            gate.opened.set()
            assert await queued == 1

    asyncio.run(main())
    assert ran == [1]


def test_many_awaiters_of_one_async_job_each_get_its_result() -> None:
    async def main() -> None:
        gate = AsyncGate()
        async with dispatchkit.AsyncDispatcher(1) as d:
            handle = await d.submit(gate.job)
            waiting = [asyncio.ensure_future(handle) for _ in range(3)]
            await gate.started.wait()
            waiting[0].cancel()  # the job runs: only that awaiter stops
            gate.opened.set()
            results = await asyncio.gather(*waiting, return_exceptions=True)
            assert isinstance(results[0], asyncio.CancelledError)
            assert results[1:] == ["through", "through"]

    asyncio.run(main())


# -- process pools ------------------------------------------------------------------


def _forkserver() -> multiprocessing.context.BaseContext:
    return multiprocessing.get_context("forkserver")


PROCESS_POOLS: dict[str, Callable[[], cf.Executor]] = {
    "stdlib-process": lambda: cf.ProcessPoolExecutor(1, _forkserver()),
    "dispatchkit-process": lambda: dkf.ProcessPoolExecutor(1, _forkserver()),
}


@pytest.mark.parametrize("pool", list(PROCESS_POOLS))
def test_cancelling_the_awaiter_cancels_a_queued_process_job(pool: str, tmp_path: Path) -> None:
    executor = PROCESS_POOLS[pool]()
    started, gate, ran = tmp_path / "started", tmp_path / "gate", tmp_path / "ran"

    async def main() -> None:
        loop = asyncio.get_running_loop()
        blocking = executor.submit(gate_jobs.hold, str(started), str(gate))
        # The stdlib's call queue holds a job per worker and one more; once the
        # worker has taken the blocking job, two more can be moved there, out of
        # cancelling's reach. Two fillers take those places; the job after them
        # stays queued, whichever pool this is.
        handed_on = [executor.submit(pow, 2, 2) for _ in range(2)]
        while not started.exists():
            await asyncio.sleep(0.01)
        await cancelled_task(loop.run_in_executor(executor, gate_jobs.touch, str(ran)))
        gate.write_text("open")
        assert await asyncio.wrap_future(blocking) == "through"
        assert [await asyncio.wrap_future(f) for f in handed_on] == [4, 4]

    try:
        asyncio.run(main())
    finally:
        gate.write_text("open")
        executor.shutdown(wait=True)
    assert not ran.exists()
