"""AsyncDispatcher: asyncio tasks as workers, owned by a TaskGroup."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable

import pytest

from dispatchkit import (
    AsyncDispatcher,
    ClosedError,
    Job,
    JobCancelled,
    JobStatus,
    QueueFull,
    RetryPolicy,
    TimedOut,
)


async def double(x: int) -> int:
    await asyncio.sleep(0)
    return 2 * x


async def fail(x: int) -> int:
    raise ValueError(f"bad {x}")


def run(coroutine: object) -> object:
    return asyncio.run(coroutine)  # type: ignore[arg-type]


def test_submit_map_dispatch_and_stats() -> None:
    async def main() -> None:
        async with AsyncDispatcher(8, strategy="round_robin", chunk=4) as d:
            handle = await d.submit(double, 21)
            assert await handle == 42
            assert handle.outcome().worker == 0
            assert [x async for x in d.map(double, range(30))] == [2 * x for x in range(30)]
            unordered = [x async for x in d.map(double, range(30), ordered=False)]
            assert sorted(unordered) == [2 * x for x in range(30)]
            assert await d.dispatch(double, range(100)) == 100
            outcomes = [o async for o in d.map(fail, range(3), outcomes=True)]
            assert [o.status for o in outcomes] == [JobStatus.FAILED] * 3
            with pytest.raises(ValueError, match="bad 0"):
                async for _ in d.map(fail, range(3)):
                    pass
            failed = await d.submit(fail, 7)
            with pytest.raises(ValueError, match="bad 7"):
                await failed
            # Plain functions run too, in the loop.
            assert await (await d.submit(len, "abcd")) == 4
        stats = d.stats()
        assert stats.submitted == 1 + 30 + 30 + 100 + 3 + 3 + 1 + 1
        assert stats.succeeded + stats.failed == stats.submitted
        assert stats.failed == 7

    run(main())


def test_thousands_of_workers_and_nothing_left_pending() -> None:
    async def main() -> None:
        async with AsyncDispatcher(2000, strategy="pull") as d:
            assert await d.dispatch(asyncio.sleep, [0.01] * 5000) == 5000
        assert d.stats().succeeded == 5000
        assert asyncio.all_tasks() == {asyncio.current_task()}

    run(main())


def test_job_timeout_and_retries() -> None:
    async def slow(seconds: float) -> str:
        await asyncio.sleep(seconds)
        return "done"

    calls = 0

    async def flaky() -> int:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise ConnectionError("try again")
        return calls

    async def main() -> None:
        async with AsyncDispatcher(2, job_timeout=0.05) as d:
            late = await d.submit(slow, 5)
            with pytest.raises(TimedOut):
                await late
            patient = await d.submit_job(Job(slow, (0.1,), timeout=2))
            assert await patient == "done"
        policy = RetryPolicy(max_attempts=5, backoff=0.001, retry_on=(ConnectionError,))
        async with AsyncDispatcher(1, retry=policy) as d:
            handle = await d.submit(flaky)
            assert await handle == 3
            assert handle.attempts == 3

    run(main())


def test_stop_cancels_queued_and_running_jobs_and_counts_them() -> None:
    started = asyncio.Event

    async def main() -> None:
        gate = started()

        async def hang() -> None:
            gate.set()
            await asyncio.sleep(60)

        d = AsyncDispatcher(1, strategy="round_robin")
        async with d:
            running = await d.submit(hang)
            queued = [await d.submit(double, i) for i in range(10)]
            await gate.wait()
            stats = await d.stop(cancel=True)
        assert running.cancelled()
        assert all(h.cancelled() for h in queued)
        with pytest.raises(JobCancelled):
            queued[0].result()
        assert stats.submitted == 11 == stats.cancelled
        with pytest.raises(ClosedError):
            await d.submit(double, 1)

    run(main())


def test_a_stop_during_backoff_uses_no_attempt() -> None:
    async def main() -> None:
        policy = RetryPolicy(max_attempts=5, backoff=30)
        async with AsyncDispatcher(1, retry=policy) as d:
            handle = await d.submit(fail, 1)
            await asyncio.sleep(0.05)  # first attempt failed; now waiting 30 s
            await d.stop(cancel=True)
        assert handle.cancelled()
        assert handle.attempts == 1  # the interrupted wait used no attempt
        stats = d.stats()
        assert (stats.cancelled, stats.failed) == (1, 0)

    run(main())


def test_leaving_the_block_with_an_error_cancels_everything() -> None:
    async def main() -> AsyncDispatcher:
        d = AsyncDispatcher(2)

        async def user_code() -> None:
            async with d:
                for _ in range(10):
                    await d.submit(asyncio.sleep, 60)
                raise RuntimeError("user code failed")

        with pytest.raises(RuntimeError, match="user code failed"):
            await user_code()
        return d

    d = run(main())
    assert isinstance(d, AsyncDispatcher)
    assert d.stats().cancelled == 10


def test_sync_functions_can_run_in_threads() -> None:
    async def main() -> None:
        loop_thread = threading.get_ident()
        async with AsyncDispatcher(4, sync_in_thread=True) as d:
            where = await (await d.submit(threading.get_ident))
            values = [x async for x in d.map(abs, [-1, -2])]
        assert where != loop_thread
        assert values == [1, 2]

    run(main())


def test_backpressure_and_misuse() -> None:
    async def main() -> None:
        d = AsyncDispatcher(1, queue_size=1, put_timeout=0.05)
        with pytest.raises(RuntimeError, match="async with"):
            await d.submit(double, 1)
        async with d:
            gate = asyncio.Event()
            await d.submit(gate.wait)
            await asyncio.sleep(0.01)  # the worker takes it
            await d.submit(double, 1)  # fills the inbox
            with pytest.raises(QueueFull):
                await d.submit(double, 2)
            gate.set()
        assert d.stats().submitted == 2
        with pytest.raises(ValueError, match="key strategy needs"):
            async with AsyncDispatcher(2, strategy="key") as keyed:
                await keyed.submit(double, 1)

    run(main())


def test_bad_settings() -> None:
    with pytest.raises(ValueError, match="workers must be at least 1"):
        AsyncDispatcher(0)
    with pytest.raises(ValueError, match="job_timeout must be a finite number of seconds"):
        AsyncDispatcher(2, job_timeout=-1)
    with pytest.raises(TypeError, match="retry must be a RetryPolicy"):
        AsyncDispatcher(2, retry=3)  # type: ignore[arg-type]


@pytest.mark.parametrize("strategy", ["round_robin", "batch", "pull"])
def test_offer_is_all_or_nothing_and_never_waits(strategy: str) -> None:
    seen: list[int] = []

    async def main() -> int:
        gate = asyncio.Event()
        async with AsyncDispatcher(2, strategy=strategy, queue_size=4) as d:
            assert d.offer(lambda _: gate.wait(), [0, 0])  # a plain function returning a coroutine
            await asyncio.sleep(0.01)  # both workers now wait on the gate
            accepted = 0
            while d.offer(seen.append, [1, 2]):
                accepted += 2
                assert accepted < 100, "offer never refused"
            before = d.stats().submitted
            assert not d.offer(seen.append, [3, 4, 5])
            assert d.stats().submitted == before  # a refused offer counts nothing
            gate.set()
        stats = d.stats()
        assert stats.submitted == stats.succeeded == accepted + 2
        return accepted

    accepted = run(main())
    assert sorted(seen) == sorted([1, 2] * (accepted // 2))  # type: ignore[operator]


def test_offer_runs_plain_and_coroutine_functions_and_counts_failures() -> None:
    errors: list[tuple[int, BaseException]] = []
    doubled: list[int] = []

    async def record(x: int) -> None:
        doubled.append(await double(x))

    def maybe_awaitable(x: int) -> object:
        # A plain function that hands back a coroutine for odd numbers: awaited too.
        if x % 2:
            return record(x)
        doubled.append(2 * x)
        return None

    async def main() -> None:
        async with AsyncDispatcher(1, chunk=8) as d:
            assert d.offer(lambda x: 1 / x, [1, 0, 2], on_error=lambda i, e: errors.append((i, e)))
            assert d.offer(fail, [7], on_error=lambda i, e: errors.append((i, e)))
            assert d.offer(maybe_awaitable, [1, 2, 3, 4])
            assert d.offer(record, [])  # nothing to queue
        stats = d.stats()
        assert (stats.submitted, stats.succeeded, stats.failed) == (8, 6, 2)
        with pytest.raises(ClosedError):
            d.offer(print, [1])

    run(main())
    assert [(i, type(e)) for i, e in errors] == [(0, ZeroDivisionError), (7, ValueError)]
    assert doubled == [2, 4, 6, 8]  # in order, the rest of the chunk after the awaitable


def test_offer_needs_the_block_and_a_key_function() -> None:
    with pytest.raises(RuntimeError, match="async with"):
        AsyncDispatcher(1).offer(print, [1])

    async def main() -> None:
        async with AsyncDispatcher(2, strategy="key") as d:
            with pytest.raises(ValueError, match="key"):
                d.offer(print, [1])
            assert d.offer(print, [], key=str)

    run(main())


def test_stop_cancels_offered_jobs_and_keeps_the_accounts() -> None:
    ran: list[int] = []

    async def main() -> None:
        gate = asyncio.Event()
        async with AsyncDispatcher(2, strategy="pull", queue_size=64) as d:
            assert d.offer(lambda _: gate.wait(), [0, 0])
            assert d.offer(ran.append, list(range(50)))
            await asyncio.sleep(0.01)
            stats = await d.stop(cancel=True)
        assert stats.submitted == 52
        assert stats.cancelled == 52  # the two waiting and the fifty queued
        assert stats.succeeded + stats.failed + stats.cancelled == stats.submitted

    run(main())
    assert ran == []


def test_a_job_raising_cancelled_error_fails_alone_and_its_worker_goes_on() -> None:
    errors: list[BaseException] = []
    ran: list[int] = []

    def plain(x: int) -> None:
        if x == 0:
            raise asyncio.CancelledError  # e.g. the result of a future someone cancelled
        ran.append(x)

    async def coroutine(x: int) -> None:
        if x == 0:
            future = asyncio.get_running_loop().create_future()
            future.cancel()
            await future
        ran.append(x)

    def returns_coroutine(x: int) -> Awaitable[None]:
        return coroutine(x)  # a plain function: run inline, its coroutine awaited after

    async def main() -> None:
        async with AsyncDispatcher(1) as d:  # one worker: it must survive to run the rest
            assert d.offer(plain, [0, 1, 2], on_error=lambda _, e: errors.append(e))
            assert d.offer(coroutine, [0, 3], on_error=lambda _, e: errors.append(e))
            await d.dispatch(returns_coroutine, [0, 4], on_error=lambda _, e: errors.append(e))
            handle = await d.submit(coroutine, 0)
            assert await (await d.submit(coroutine, 5)) is None
        assert handle.status is JobStatus.FAILED
        assert isinstance(handle.exception(), RuntimeError)
        stats = d.stats()
        assert (stats.submitted, stats.succeeded, stats.failed, stats.cancelled) == (9, 5, 4, 0)

    run(main())
    assert ran == [1, 2, 3, 4, 5]
    assert len(errors) == 3
    assert all(isinstance(e, RuntimeError) and "CancelledError" in str(e) for e in errors)


def test_a_failing_on_error_callback_does_not_end_the_worker() -> None:
    ran: list[int] = []

    def broken(item: object, exc: BaseException) -> None:
        raise ValueError("callback bug")

    async def main() -> None:
        async with AsyncDispatcher(1) as d:
            assert d.offer(lambda x: 1 / x, [0], on_error=broken)
            assert d.offer(ran.append, [1])
        assert (d.stats().failed, d.stats().succeeded) == (1, 1)

    run(main())
    assert ran == [1]
