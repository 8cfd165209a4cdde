"""AsyncDispatcher under hostile jobs: KeyboardInterrupt, SystemExit, self-cancellation,
timeouts that cannot be kept.

Threads and processes fail such a job alone; asyncio workers must too, although
asyncio lets KeyboardInterrupt and SystemExit out of a task and out of the loop.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from dispatchkit import AsyncDispatcher, Job, JobStatus, RetryPolicy, TimedOut
from tests.serve_fatal_handlers import FATAL_ID
from tests.serve_support import kill_leftovers, start_server
from tests.signals import CLI_TAKING_SIGINT

pytestmark = pytest.mark.timeout(30)

#: How each kind of fault shows in the failed job's exception.
FAULTS = {
    "KeyboardInterrupt": KeyboardInterrupt,
    "SystemExit": SystemExit,
    "self-cancel": RuntimeError,  # the job cancelled its own worker task
}


async def coroutine_job(what: str) -> str:
    if what == "KeyboardInterrupt":
        raise KeyboardInterrupt
    if what == "SystemExit":
        raise SystemExit(3)
    if what == "self-cancel":
        task = asyncio.current_task()
        assert task is not None
        task.cancel()
        await asyncio.sleep(5)  # the cancellation lands here
    await asyncio.sleep(0)
    return what


async def coroutine_job_cancelling_and_returning(what: str) -> str:
    """Cancels its task but never awaits again: the cancellation would hit the worker next."""
    if what == "self-cancel":
        task = asyncio.current_task()
        assert task is not None
        task.cancel()
        return "returned anyway"
    return await coroutine_job(what)


def plain_job(what: str) -> str:
    if what == "KeyboardInterrupt":
        raise KeyboardInterrupt
    if what == "SystemExit":
        raise SystemExit(3)
    if what == "self-cancel":
        task = asyncio.current_task()
        assert task is not None
        task.cancel()  # a plain call cannot be interrupted: it fires at the worker's next await
    return what


def run_guarded(main: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    """``asyncio.run(main())``; a KeyboardInterrupt or SystemExit escaping it fails the test
    (instead of ending the test session)."""
    try:
        return asyncio.run(main())
    except (KeyboardInterrupt, SystemExit) as exc:
        escaped = type(exc).__name__
    pytest.fail(f"{escaped} escaped the dispatcher: it ended the event loop", pytrace=False)


JOBS = {
    "coroutine": coroutine_job,
    "coroutine-returning": coroutine_job_cancelling_and_returning,
    "plain": plain_job,
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
@pytest.mark.parametrize("job_kind", sorted(JOBS))
@pytest.mark.parametrize("with_policy", [False, True], ids=["bare", "policy"])
def test_a_fatal_looking_job_fails_alone(job_kind: str, fault: str, with_policy: bool) -> None:
    job: Callable[[str], Any] = JOBS[job_kind]
    expected = FAULTS[fault]
    # A retry policy for other errors, and for coroutines a timeout never reached:
    # the jobs then run through the timeout and retry wrapper.
    policy: dict[str, Any] = {}
    if with_policy:
        policy["retry"] = RetryPolicy(max_attempts=2, backoff=0, retry_on=(ValueError,))
        if job_kind != "plain":  # (a plain function on the loop cannot have one: see below)
            policy["job_timeout"] = 10.0

    async def main() -> None:
        async with asyncio.timeout(15):
            async with AsyncDispatcher(2, strategy="pull", chunk=3, **policy) as d:
                handle = await d.submit(job, fault)
                with pytest.raises(expected):
                    await handle
                assert handle.status is JobStatus.FAILED
                assert isinstance(handle.exception(), expected)
                if fault == "self-cancel":
                    assert "cancelled its own worker task" in str(handle.exception())
                # The next jobs are accepted and run, on every worker.
                after = [await d.submit(job, f"ok {n}") for n in range(4)]
                assert [await h for h in after] == [f"ok {n}" for n in range(4)]

                # The same in the middle of a map chunk: the chunk's other jobs run.
                items = ["a", fault, "b"]
                outcomes = [o async for o in d.map(job, items, outcomes=True)]
                assert [o.status for o in outcomes] == [
                    JobStatus.SUCCEEDED,
                    JobStatus.FAILED,
                    JobStatus.SUCCEEDED,
                ]
                assert isinstance(outcomes[1].error, expected)

                # And fire and forget: counted, told to on_error.
                errors: list[BaseException] = []
                await d.dispatch(job, items, on_error=lambda _, exc: errors.append(exc))
                await d.join()
        assert [type(e) for e in errors] == [expected]
        if fault == "self-cancel":
            assert "cancelled its own worker task" in str(errors[0])
        stats = d.stats()
        assert stats.submitted == 1 + 4 + 3 + 3
        assert stats.failed == 3
        assert stats.cancelled == 0
        assert stats.submitted == stats.succeeded + stats.failed + stats.cancelled

    run_guarded(main)


def test_a_stop_still_cancels_running_jobs() -> None:
    """A real stop is told apart from a job's own cancellation: it still ends the job."""

    async def main() -> None:
        async with AsyncDispatcher(2) as d:
            running = await d.submit(asyncio.sleep, 10)
            await asyncio.sleep(0.05)
            stats = await d.stop(cancel=True)
        assert running.status is JobStatus.CANCELLED
        assert stats.cancelled == 1

    asyncio.run(main())


def test_cancelling_the_owner_while_it_waits_for_the_jobs_ends_them() -> None:
    """The block ended; while it waits for a long job, its task is cancelled: the job
    is cancelled too (a stop, not the job's failure), and nothing hangs."""

    async def submit_and_leave(d: AsyncDispatcher) -> None:
        async with d:
            await d.submit(asyncio.sleep, 10)

    async def main() -> AsyncDispatcher:
        d = AsyncDispatcher(2)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(submit_and_leave(d), 0.3)
        return d

    started = time.monotonic()
    d = asyncio.run(main())
    assert time.monotonic() - started < 5
    stats = d.stats()
    assert (stats.submitted, stats.cancelled, stats.failed) == (1, 1, 0)


# -- job_timeout with plain functions ------------------------------------------


def blocking(seconds: float) -> str:
    time.sleep(seconds)
    return "slept"


def test_a_timeout_for_a_plain_function_on_the_loop_is_refused() -> None:
    """A plain call on the event loop cannot be stopped: the timeout is refused, not ignored."""

    async def main() -> None:
        async with AsyncDispatcher(2, job_timeout=0.5) as d:
            with pytest.raises(ValueError, match="cannot stop the plain function blocking"):
                await d.submit(blocking, 5)
            with pytest.raises(ValueError, match="sync_in_thread=True"):
                async for _ in d.map(blocking, [5]):
                    pass
            with pytest.raises(ValueError, match="cannot stop the plain function"):
                await d.dispatch(blocking, [5])
            with pytest.raises(ValueError, match="cannot stop the plain function"):
                d.offer(blocking, [5])
            assert d.stats().submitted == 0  # nothing was accepted
            # Coroutines keep their timeout.
            with pytest.raises(TimedOut):
                await (await d.submit(asyncio.sleep, 5))
        async with AsyncDispatcher(2) as d:
            with pytest.raises(ValueError, match="cannot stop the plain function"):
                await d.submit_job(Job(blocking, (5,), timeout=0.5))
            assert await (await d.submit(blocking, 0)) == "slept"  # no timeout: runs

    asyncio.run(main())


def test_a_timed_out_job_in_a_thread_is_abandoned_and_its_thread_runs_on() -> None:
    release = threading.Event()
    ended = threading.Event()

    def held(_: object) -> str:
        release.wait(10)
        ended.set()
        return "done"

    async def main() -> None:
        async with AsyncDispatcher(1, job_timeout=0.3, sync_in_thread=True) as d:
            handle = await d.submit(held, None)
            with pytest.raises(TimedOut):
                await handle
            assert not ended.is_set()  # reported at the timeout, the function still runs
            # The worker goes on at once.
            assert await (await d.submit(blocking, 0)) == "slept"
            outcomes = [o async for o in d.map(held, [None], outcomes=True)]
            assert isinstance(outcomes[0].error, TimedOut)
            release.set()
        stats = d.stats()
        assert (stats.succeeded, stats.failed) == (1, 2)

    asyncio.run(main())  # waits for the default executor's threads at its end
    assert ended.is_set()  # the thread ran on to its end


# -- the command line ------------------------------------------------------------


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


#: The command line with SIGINT ignored, as a shell without job control starts it
#: in the background: asyncio.run then installs no SIGINT handler.
CLI_IGNORING_SIGINT = [
    sys.executable,
    "-c",
    "import signal; signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
    "import sys; from dispatchkit.cli import main; sys.exit(main(sys.argv[1:]))",
]


@pytest.mark.parametrize(
    ("sig", "cli"),
    [
        (signal.SIGTERM, CLI_TAKING_SIGINT),
        (signal.SIGINT, CLI_TAKING_SIGINT),
        (signal.SIGTERM, CLI_IGNORING_SIGINT),
    ],
    ids=["SIGTERM", "SIGINT", "SIGTERM-with-SIGINT-ignored"],
)
def test_a_signal_still_interrupts_an_async_run(sig: signal.Signals, cli: list[str]) -> None:
    """A signal's KeyboardInterrupt must not be taken for one job's failure: the
    run with asyncio workers stops, says what it cancelled, exits 130."""
    process = subprocess.Popen(
        [
            *cli,
            *("run", "--jobs", "50000000", "--executor", "async"),
            *("--strategy", "round_robin", "--chunk", "1", "--no-progress"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while _cpu_seconds(process.pid) < 1.5:  # well into the jobs
            assert process.poll() is None, "the run ended before the signal"
            assert time.monotonic() < deadline, "the run never started"
            time.sleep(0.05)
        process.send_signal(sig)
        _, stderr = process.communicate(timeout=15)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130, stderr
    assert "interrupted:" in stderr
    assert "cancelled" in stderr
    assert "Traceback" not in stderr


# -- the service ---------------------------------------------------------------------


@pytest.mark.parametrize("handler", ["exit_on_13", "interrupt_on_13"])
def test_serve_keeps_serving_when_an_async_handler_raises_exit_or_interrupt(
    tmp_path: Path, handler: str
) -> None:
    pytest.importorskip("granian")
    out = tmp_path / "handled.txt"
    server = start_server(
        tmp_path,
        *("--handler", f"serve_fatal_handlers:{handler}", "--workers", "2"),
        env={"SERVE_TEST_OUT": str(out)},
    )
    try:
        assert server.listening()["executor"] == "async"
        assert server.post([1, FATAL_ID, 2]) == 202
        deadline = time.monotonic() + 10
        while sorted(_handled(out)) != [1, 2]:
            assert server.process.poll() is None, "the server exited"
            assert time.monotonic() < deadline, _handled(out)
            time.sleep(0.02)
        # Still serving: the next payloads run, on both workers.
        assert server.post([3, 4, 5]) == 202
        assert server.request("GET", "/healthz")[0] == 200
        assert server.stop() == 0
    finally:
        kill_leftovers()
    assert sorted(_handled(out)) == [1, 2, 3, 4, 5]
    failed = [e for e in server.log_entries() if e["message"] == "payload job failed"]
    assert len(failed) == 1
    assert failed[0]["error"].startswith(("SystemExit", "KeyboardInterrupt"))


def _handled(out: Path) -> list[int]:
    return [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
