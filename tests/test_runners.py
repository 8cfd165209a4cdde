"""The remote worker's runners: threads, and tasks on one event loop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from dispatchkit.remote.runners import AsyncRunner, ThreadRunner, make_runner


def test_the_async_runner_awaits_many_tasks_at_once_and_drains_on_shutdown() -> None:
    runner = AsyncRunner(concurrency=50)
    runner.start()
    in_flight = peak = 0
    done: list[int] = []

    async def job(n: int) -> None:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.05)
        in_flight -= 1
        done.append(n)

    def task(n: int) -> Callable[[], Coroutine[Any, Any, None]]:
        return lambda: job(n)

    def submit_from(first: int) -> None:
        for n in range(first, first + 50):
            runner.submit(task(n))

    # Submitted from other threads, as the worker's fetch and acker threads do.
    submitters = [threading.Thread(target=submit_from, args=(first,)) for first in (0, 50)]
    for thread in submitters:
        thread.start()
    for thread in submitters:
        thread.join()
    runner.submit(lambda: done.append(-1))  # a plain call runs on the loop too
    runner.shutdown(wait=True)  # runs everything queued first
    assert sorted(done) == [-1, *range(100)]
    assert peak == 50  # as many waiting at once as the concurrency allows
    runner.shutdown()  # idempotent


def test_a_failing_task_is_logged_and_the_runner_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    ran: list[str] = []

    def fail() -> None:
        raise ZeroDivisionError

    def note(name: str) -> Callable[[], None]:
        return lambda: ran.append(name)

    for runner in (ThreadRunner(1), AsyncRunner(1)):
        runner.start()
        runner.submit(fail)
        runner.submit(note(type(runner).__name__))
        runner.shutdown(wait=True)
    assert ran == ["ThreadRunner", "AsyncRunner"]
    assert caplog.text.count("internal error") == 2


def test_make_runner_names_the_kinds() -> None:
    assert isinstance(make_runner("async", 3), AsyncRunner)  # no loop until started
    with pytest.raises(ValueError, match="async, process, thread"):
        make_runner("fiber", 1)
    with pytest.raises(ValueError, match="at least 1"):
        AsyncRunner(0)
