"""The Dispatcher on thread workers: submit, map, dispatch, shutdown, errors, backpressure."""

from __future__ import annotations

import itertools
import math
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from dispatchkit import (
    FIRST_COMPLETED,
    FIRST_EXCEPTION,
    ClosedError,
    Dispatcher,
    Job,
    JobCancelled,
    JobHandle,
    JobStatus,
    QueueFull,
    RetryPolicy,
    as_completed,
    wait,
)


def boom(x: int) -> int:
    raise ValueError(f"bad item {x}")


def test_submit_returns_a_handle_with_the_result() -> None:
    with Dispatcher(4) as d:
        handle = d.submit(pow, 2, 10)
        assert handle.result(timeout=5) == 1024
        assert handle.done()
        assert not handle.cancelled()
        assert handle.exception() is None
        assert handle.status is JobStatus.SUCCEEDED
        outcome = handle.outcome()
        assert outcome.ok
        assert outcome.worker in range(4)
        assert outcome.attempts == 1
        assert outcome.submitted_at <= outcome.started_at <= outcome.finished_at  # type: ignore[operator]
        assert outcome.latency is not None
        assert outcome.latency >= 0


def test_kwargs_and_named_jobs() -> None:
    with Dispatcher(2) as d:
        assert d.submit(int, "ff", base=16).result() == 255
        handle = d.submit_job(Job(sorted, ([3, 1, 2],), {"reverse": True}, name="sort"))
        assert handle.result() == [3, 2, 1]
        assert handle.outcome().name == "sort"


def test_a_failing_job_keeps_its_exception_and_traceback_and_spares_the_worker() -> None:
    with Dispatcher(1) as d:  # one worker: it must survive the failure
        failed = d.submit(boom, 7)
        after = [d.submit(pow, 3, i) for i in range(5)]
        with pytest.raises(ValueError, match="bad item 7"):
            failed.result()
        outcome = failed.outcome()
        assert outcome.status is JobStatus.FAILED
        assert isinstance(outcome.error, ValueError)
        assert outcome.traceback is not None
        assert "in boom" in outcome.traceback
        assert [h.result() for h in after] == [1, 3, 9, 27, 81]
    stats = d.stats()
    assert (stats.succeeded, stats.failed) == (5, 1)


@pytest.mark.parametrize("error", [SystemExit(3), KeyboardInterrupt(), GeneratorExit()])
def test_even_base_exceptions_do_not_stop_a_worker(error: BaseException) -> None:
    def raise_it() -> None:
        raise error

    with Dispatcher(1) as d:
        bad = d.submit(raise_it)
        good = d.submit(len, "abc")
        assert good.result(timeout=5) == 3
        assert bad.exception() is error


def test_callbacks_wait_and_as_completed() -> None:
    gate = threading.Event()
    seen: list[int] = []
    with Dispatcher(3, strategy="pull") as d:  # no job queued behind the slow one
        slow = d.submit(gate.wait, 5)
        fast = [d.submit(pow, i, 2) for i in range(4)]
        fast[0].add_done_callback(lambda h: seen.append(h.result()))
        done, not_done = wait(fast, timeout=5)
        assert done == set(fast)
        assert not not_done
        done, not_done = wait([slow, *fast], timeout=5, return_when=FIRST_COMPLETED)
        assert slow in not_done
        assert done
        with pytest.raises(TimeoutError):
            list(as_completed([slow], timeout=0.05))
        gate.set()
        everything: list[JobHandle[Any]] = [slow, *fast]
        assert {h.job_id for h in as_completed(everything, timeout=5)} == {
            h.job_id for h in everything
        }
        failing = d.submit(boom, 1)
        done, _ = wait([failing, d.submit(gate.wait, 5)], return_when=FIRST_EXCEPTION)
        assert failing in done
    assert seen == [0]
    late: list[object] = []
    fast[1].add_done_callback(lambda h: late.append(h.result()))  # finished: called at once
    assert late == [1]


def test_result_timeout() -> None:
    gate = threading.Event()
    with Dispatcher(1) as d:
        handle = d.submit(gate.wait, 5)
        with pytest.raises(TimeoutError):
            handle.result(timeout=0.02)
        gate.set()
        assert handle.result(timeout=5) is True


def test_map_yields_in_order_and_surfaces_errors_at_the_failing_item() -> None:
    with Dispatcher(4, chunk=3) as d:
        assert list(d.map(lambda x: x * x, range(50))) == [x * x for x in range(50)]
        results = d.map(lambda x: 10 // x, [5, 2, 0, 1])
        assert next(results) == 2
        assert next(results) == 5
        with pytest.raises(ZeroDivisionError):
            next(results)


def test_map_outcomes_and_unordered_and_star() -> None:
    with Dispatcher(3, strategy="pull", chunk=2) as d:
        outcomes = list(d.map(lambda x: 10 // x, [5, 0, 2], outcomes=True))
        assert [o.status for o in outcomes] == [
            JobStatus.SUCCEEDED,
            JobStatus.FAILED,
            JobStatus.SUCCEEDED,
        ]
        assert outcomes[0].value == 2
        assert isinstance(outcomes[1].error, ZeroDivisionError)
        assert all(o.worker in range(3) for o in outcomes)
        assert sorted(d.map(abs, range(-20, 20), ordered=False)) == sorted(
            abs(x) for x in range(-20, 20)
        )
        assert list(d.map(pow, [(2, 3), (3, 2)], star=True)) == [8, 9]


def test_map_consumes_its_input_lazily() -> None:
    taken = 0

    def endless() -> Iterator[int]:
        nonlocal taken
        for i in itertools.count():
            taken += 1
            yield i

    with Dispatcher(2, chunk=4, queue_size=8) as d:
        results = d.map(lambda x: x + 1, endless(), window=50)
        assert list(itertools.islice(results, 10)) == list(range(1, 11))
        results.close()  # type: ignore[attr-defined]
    # At most a window plus one block was ever taken from the endless input.
    assert taken <= 50 + 1024


def test_dispatch_counts_without_keeping_results() -> None:
    errors: list[tuple[int, BaseException]] = []
    with Dispatcher(4, chunk=16) as d:
        sent = d.dispatch(
            lambda x: 1 // (x % 10), range(1000), on_error=lambda i, e: errors.append((i, e))
        )
    assert sent == 1000
    stats = d.stats()
    assert stats.submitted == 1000
    assert (stats.succeeded, stats.failed) == (900, 100)
    assert sorted(i for i, _ in errors) == list(range(0, 1000, 10))
    assert all(isinstance(e, ZeroDivisionError) for _, e in errors)
    assert 0 < len(d.error_samples()) <= 10


@pytest.mark.parametrize("chunk", [1, 7])
def test_stop_cancels_queued_jobs_and_accounts_for_every_job(chunk: int) -> None:
    gate = threading.Event()
    d = Dispatcher(2, chunk=chunk, queue_size=10_000)
    blockers = [d.submit(gate.wait, 10) for _ in range(2)]
    queued = [d.submit(pow, 2, i) for i in range(20)]
    d.dispatch(str, range(100))
    time.sleep(0.05)
    threading.Timer(0.1, gate.set).start()
    stats = d.stop(cancel=True)
    assert stats.submitted == 122
    assert stats.succeeded + stats.failed + stats.cancelled == stats.submitted
    assert stats.cancelled >= 120 - 2  # the queued ones; the blockers were running
    assert all(b.result() is True for b in blockers)
    for handle in queued:
        assert handle.done()
        if handle.cancelled():
            with pytest.raises(JobCancelled):
                handle.result()
            assert handle.outcome().status is JobStatus.CANCELLED


def test_cancel_a_single_queued_job() -> None:
    gate = threading.Event()
    with Dispatcher(1) as d:
        running = d.submit(gate.wait, 5)
        while not running.running():
            time.sleep(0.001)
        queued = d.submit(pow, 2, 2)
        assert not running.cancel()  # already running
        assert queued.cancel()
        assert queued.cancel()  # idempotent
        assert queued.cancelled()
        gate.set()
    stats = d.stats()
    assert (stats.submitted, stats.succeeded, stats.cancelled) == (2, 1, 1)


def test_close_join_are_idempotent_and_submit_after_close_raises() -> None:
    d = Dispatcher(2)
    d.submit(pow, 2, 2)
    d.close()
    d.close()
    with pytest.raises(ClosedError, match="closed"):
        d.submit(pow, 2, 2)
    with pytest.raises(ClosedError):
        d.dispatch(str, range(3))
    with pytest.raises(ClosedError):
        d.map(str, range(3))
    assert d.join(timeout=5)
    assert d.join()
    d.stop()
    assert d.stats().succeeded == 1


def test_leaving_the_block_with_an_exception_cancels_the_queue() -> None:
    gate = threading.Event()
    dispatcher = Dispatcher(1)

    def user_code() -> None:
        with dispatcher as d:
            d.submit(gate.wait, 0.2)
            for _ in range(50):
                d.submit(time.sleep, 0.01)
            raise RuntimeError("user code failed")

    with pytest.raises(RuntimeError, match="user code failed"):
        user_code()
    stats = dispatcher.stats()
    assert stats.cancelled >= 40
    assert stats.succeeded + stats.cancelled == 51


def test_backpressure_blocks_then_raises_queue_full() -> None:
    gate = threading.Event()
    with Dispatcher(1, queue_size=2, put_timeout=0.05) as d:
        d.submit(gate.wait, 5)
        while d.stats().pending and not d._inboxes[0]._sleepers and len(d._inboxes[0]):
            time.sleep(0.001)
        time.sleep(0.02)
        d.submit(pow, 1, 1)
        d.submit(pow, 1, 1)
        with pytest.raises(QueueFull):
            d.submit(pow, 1, 1)
        with pytest.raises(QueueFull):
            d.submit_job(Job(pow, (1, 1)), timeout=0.01)
        gate.set()
    stats = d.stats()
    # The rejected submissions were never accepted, so they are not counted.
    assert stats.submitted == 3 == stats.succeeded


def test_backpressure_bounds_a_bulk_dispatch() -> None:
    gate = threading.Event()
    d = Dispatcher(2, chunk=1, queue_size=4, put_timeout=0.1)
    d.dispatch(gate.wait, [5, 5])
    with pytest.raises(QueueFull):
        d.dispatch(str, range(100_000))
    # The inboxes hold at most their size plus one block (2 workers x 4 jobs).
    assert sum(len(i) for i in d._inboxes) <= 2 * 4 + 2 * 4
    gate.set()
    stats = d.stop(cancel=True)
    assert stats.submitted == stats.succeeded + stats.failed + stats.cancelled


def test_key_strategy_keeps_one_key_on_one_worker_in_order() -> None:
    order: dict[str, list[int]] = {}
    lock = threading.Lock()

    def record(key: str, i: int) -> int:
        with lock:
            order.setdefault(key, []).append(i)
        return threading.get_ident()

    with Dispatcher(4, strategy="key") as d:
        with pytest.raises(ValueError, match="key strategy needs a key"):
            d.submit(record, "a", 0)
        with pytest.raises(ValueError, match="key="):
            d.dispatch(str, range(3))
        handles = [
            d.submit_job(Job(record, (f"user-{i % 5}", i), key=f"user-{i % 5}")) for i in range(200)
        ]
        threads: dict[str, set[int]] = {}
        for i, handle in enumerate(handles):
            threads.setdefault(f"user-{i % 5}", set()).add(handle.result())
        assert all(len(ids) == 1 for ids in threads.values())
        assert all(seq == sorted(seq) for seq in order.values())
        results = list(d.map(lambda s: s.upper(), ["a", "b", "a"], key=lambda s: s))
        assert results == ["A", "B", "A"]


def test_stats_per_worker() -> None:
    # Placement as round robin says it: no idle worker takes another's jobs.
    with Dispatcher(2, strategy="round_robin", steal=False) as d:
        for _ in range(4):
            d.submit(time.sleep, 0.01)
    stats = d.stats()
    assert [w.jobs for w in stats.workers] == [2, 2]
    assert all(w.busy_seconds >= 0.015 for w in stats.workers)
    assert all(w.first_start is not None and w.first_start >= 0 for w in stats.workers)
    assert stats.first_start_spread is not None
    assert stats.imbalance is not None
    assert stats.imbalance >= 1.0
    assert stats.pending == 0


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"workers": 0}, ValueError, "workers must be at least 1"),
        ({"workers": -3}, ValueError, "workers must be at least 1"),
        ({"workers": "4"}, TypeError, "workers must be an integer"),
        ({"workers": 2.5}, TypeError, "workers must be an integer"),
        ({"workers": 10**9}, ValueError, "workers must be at most"),
        ({"strategy": "fifo"}, ValueError, "unknown strategy"),
        ({"chunk": 0}, ValueError, "chunk must be at least 1"),
        ({"queue_size": -1}, ValueError, "queue_size must be at least 1"),
        ({"put_timeout": -1}, ValueError, "put_timeout must be a finite number of seconds >= 0"),
        ({"put_timeout": "soon"}, TypeError, "put_timeout must be a number"),
    ],
)
def test_bad_settings_raise_clear_errors(
    kwargs: dict[str, object], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        Dispatcher(**kwargs)  # type: ignore[arg-type]


def test_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISPATCHKIT_WORKERS", "3")
    monkeypatch.setenv("DISPATCHKIT_STRATEGY", "pull")
    monkeypatch.setenv("DISPATCHKIT_QUEUE_SIZE", "16")
    with Dispatcher.from_env(chunk=4) as d:
        assert (d.workers, d.strategy.name, d.settings.queue_size, d.settings.chunk) == (
            3,
            "pull",
            16,
            4,
        )
    monkeypatch.setenv("DISPATCHKIT_WORKERS", "zero")
    with pytest.raises(ValueError, match="DISPATCHKIT_WORKERS='zero' is not valid"):
        Dispatcher.from_env()
    monkeypatch.setenv("DISPATCHKIT_WORKERS", "0")
    with pytest.raises(ValueError, match="DISPATCHKIT_WORKERS='0' is not valid"):
        Dispatcher.from_env()
    monkeypatch.setenv("DISPATCHKIT_WORKERS", "2")
    monkeypatch.setenv("DISPATCHKIT_STRATEGY", "lifo")
    with pytest.raises(ValueError, match="DISPATCHKIT_STRATEGY='lifo'"):
        Dispatcher.from_env()
    # An argument overrides the environment.
    with Dispatcher.from_env(strategy="batch") as d:
        assert d.strategy.name == "batch"


def test_shutdown_like_concurrent_futures() -> None:
    d = Dispatcher(2)
    handle = d.submit(pow, 2, 5)
    d.shutdown(wait=True)
    assert handle.result() == 32
    d2 = Dispatcher(1)
    gate = threading.Event()
    d2.submit(gate.wait, 0.1)
    queued = d2.submit(pow, 2, 2)
    d2.shutdown(wait=True, cancel_futures=True)
    assert queued.cancelled() or queued.result() == 4


def test_thread_workers_retry_with_backoff_and_record_attempts() -> None:
    calls: dict[str, int] = {}

    def flaky(name: str, failures: int) -> str:
        calls[name] = calls.get(name, 0) + 1
        if calls[name] <= failures:
            raise ConnectionError(f"{name} failed")
        return name

    policy = RetryPolicy(max_attempts=3, backoff=0.001, retry_on=(ConnectionError,))
    with Dispatcher(2, retry=policy, chunk=2) as d:
        twice = d.submit(flaky, "a", 2)
        too_often = d.submit(flaky, "b", 5)
        assert twice.result(timeout=5) == "a"
        assert twice.attempts == 3
        assert isinstance(too_often.exception(timeout=5), ConnectionError)
        assert too_often.attempts == 3
        outcomes = list(d.map(lambda n: flaky(n, 1), ["c", "d"], outcomes=True))
        assert [(o.value, o.attempts) for o in outcomes] == [("c", 2), ("d", 2)]
        d.dispatch(lambda n: flaky(n, 1), ["e", "f"])
    stats = d.stats()
    assert (stats.succeeded, stats.failed) == (5, 1)
    assert calls["e"] == calls["f"] == 2


def test_a_job_level_policy_overrides_and_stop_interrupts_the_backoff() -> None:
    def always_fails() -> None:
        raise ConnectionError("down")

    with Dispatcher(1) as d:
        handle = d.submit_job(Job(always_fails, retry=RetryPolicy(max_attempts=2, backoff=0)))
        assert isinstance(handle.exception(timeout=5), ConnectionError)
        assert handle.attempts == 2
    d = Dispatcher(1, retry=RetryPolicy(max_attempts=5, backoff=30))
    waiting = d.submit(always_fails)
    time.sleep(0.1)  # the first attempt failed; the worker waits 30 s to retry
    started = time.monotonic()
    stats = d.stop(cancel=True)
    assert time.monotonic() - started < 5
    assert waiting.cancelled()
    assert waiting.attempts == 1  # the interrupted wait used no attempt
    assert (stats.cancelled, stats.failed) == (1, 0)


def test_retry_policy_validation_and_delays() -> None:
    import random

    policy = RetryPolicy(
        max_attempts=4, backoff=1, multiplier=2, max_backoff=3, jitter=0, rng=random.Random(1)
    )
    assert [policy.delay(n) for n in (1, 2, 3)] == [1, 2, 3]
    jittery = RetryPolicy(backoff=1, jitter=0.5, rng=random.Random(7))
    assert all(0.5 <= jittery.delay(1) <= 1.5 for _ in range(100))
    with pytest.raises(ValueError, match="max_attempts must be at least 1"):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError, match="jitter"):
        RetryPolicy(jitter=2)
    with pytest.raises(TypeError, match="retry_on"):
        RetryPolicy(retry_on=ValueError)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="retry must be a RetryPolicy"):
        Dispatcher(1, retry=3)  # type: ignore[arg-type]


def test_a_pool_that_runs_jobs_elsewhere_reads_the_call_and_settles_the_handle() -> None:
    # What the process pool's liaison (and the remote dispatcher) use instead of
    # reaching into the handle: the call until the job ends, then its outcome.
    handle: JobHandle[int] = JobHandle(7, pow, (2, 3), {"mod": 5})
    assert handle.call == (pow, (2, 3), {"mod": 5})
    waiter = threading.Thread(target=handle.result)
    waiter.start()
    handle.settle(3, JobStatus.SUCCEEDED, 3, 1.0, 2.0, 2)
    waiter.join()
    assert (handle.result(), handle.worker, handle.attempts) == (3, 3, 2)
    assert (handle.started_at, handle.finished_at) == (1.0, 2.0)
    with pytest.raises(RuntimeError, match="has ended"):
        handle.call  # noqa: B018
    never_started: JobHandle[int] = JobHandle(8, abs, (-1,), {})
    never_started.settle(0, JobStatus.CANCELLED, None, None, None, 0)
    assert never_started.cancelled()
    assert never_started.worker is None


@pytest.mark.parametrize("timeout", [0, -1, math.inf, math.nan])
def test_a_job_timeout_is_checked_as_every_duration_is(timeout: float) -> None:
    # One rule for durations (an infinite one would overflow the waits that enforce it).
    with pytest.raises(ValueError, match="timeout must be a finite number of seconds > 0"):
        Job(abs, (1,), timeout=timeout)


def test_offer_does_not_keep_the_callers_list() -> None:
    # The caller may reuse its list once offer() returns: the queued chunk is a copy.
    gate = threading.Event()
    with Dispatcher(2, strategy="pull", chunk=100) as d:
        d.offer(lambda _: gate.wait(), [0, 1])  # both workers busy
        buf = list(range(50))
        assert d.offer(abs, buf)
        buf.clear()
        gate.set()
        d.join()
        s = d.stats()
    assert s.submitted == s.succeeded + s.failed + s.cancelled == 52
