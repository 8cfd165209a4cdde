"""dispatchkit as a drop-in for ``concurrent.futures``, checked against the stdlib itself.

Every test of the shared suite runs on the stdlib's executors and on
dispatchkit's (``executor`` fixture), so a difference in documented behaviour
shows as a failing test. Where dispatchkit differs on purpose, the README's
"differences from concurrent.futures" table says so and the test below is
written for dispatchkit only.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import logging
import multiprocessing
import os
import re
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import dispatchkit
import dispatchkit.futures as dkf
from dispatchkit import Dispatcher, JobStatus, WorkerLost, WorkerStartError
from tests import gc_jobs, jobs

#: Seconds any wait in these tests may take before it counts as a hang.
PATIENCE = 10

MakeExecutor = Callable[..., cf.Executor]

THREAD_POOLS: dict[str, MakeExecutor] = {
    "stdlib-thread": cf.ThreadPoolExecutor,
    "dispatchkit-thread": dkf.ThreadPoolExecutor,
}


def _forkserver() -> multiprocessing.context.BaseContext:
    return multiprocessing.get_context("forkserver")


PROCESS_POOLS: dict[str, MakeExecutor] = {
    "stdlib-process": lambda n=2, **kw: cf.ProcessPoolExecutor(n, _forkserver(), **kw),
    "dispatchkit-process": lambda n=2, **kw: dkf.ProcessPoolExecutor(n, _forkserver(), **kw),
}


@pytest.fixture(params=list(THREAD_POOLS))
def make(request: pytest.FixtureRequest) -> Iterator[MakeExecutor]:
    """A thread-pool class: the stdlib's or dispatchkit's; every pool made is shut down."""
    made: list[cf.Executor] = []

    def make_one(*args: Any, **kwargs: Any) -> cf.Executor:
        executor = THREAD_POOLS[request.param](*args, **kwargs)
        made.append(executor)
        return executor

    yield make_one
    for executor in made:
        executor.shutdown(wait=True)


@pytest.fixture(params=list(PROCESS_POOLS))
def make_process(request: pytest.FixtureRequest) -> Iterator[MakeExecutor]:
    made: list[cf.Executor] = []

    def make_one(*args: Any, **kwargs: Any) -> cf.Executor:
        executor = PROCESS_POOLS[request.param](*args, **kwargs)
        made.append(executor)
        return executor

    yield make_one
    for executor in made:
        executor.shutdown(wait=True)


def blocker(started: threading.Event, gate: threading.Event) -> Callable[[], str]:
    """A job that says it started, then waits for the gate."""

    def job() -> str:
        started.set()
        assert gate.wait(PATIENCE), "the gate never opened"
        return "opened"

    return job


def fail(message: str) -> None:
    raise ValueError(message)


# -- the types -----------------------------------------------------------------


def test_executors_and_handles_are_the_stdlib_types(make: MakeExecutor) -> None:
    executor = make(2)
    assert isinstance(executor, cf.Executor)
    assert isinstance(executor, cf.ThreadPoolExecutor)
    future = executor.submit(pow, 2, 10)
    assert isinstance(future, cf.Future)
    assert future.result(PATIENCE) == 1024


def test_dispatcher_is_an_executor_and_its_handles_keep_their_api() -> None:
    with Dispatcher(2) as d:
        assert isinstance(d, cf.Executor)
        handle = d.submit(pow, 3, 3)
        assert isinstance(handle, cf.Future)
        assert handle.result(PATIENCE) == 27
        assert handle.status is JobStatus.SUCCEEDED
        assert handle.outcome().value == 27
        assert handle.attempts == 1
        assert handle.worker in (0, 1)
        assert handle.started_at is not None
        assert handle.finished_at is not None


def test_a_handle_nobody_waits_on_through_the_stdlib_has_no_condition() -> None:
    # The stdlib Future makes a Condition per instance; a handle makes one only
    # when the stdlib's wait() reaches for it.
    with Dispatcher(2) as d:
        handle = d.submit(pow, 2, 2)
        assert handle.result(PATIENCE) == 4
        assert handle.__dict__ == {}
        cf.wait([handle], timeout=PATIENCE)
        assert isinstance(handle.__dict__["_cond"], threading.Condition)


# -- wait and as_completed -------------------------------------------------------


def test_stdlib_wait_and_as_completed_with_plain_futures(make: MakeExecutor) -> None:
    executor = make(2)
    started, gate = threading.Event(), threading.Event()
    blocked = executor.submit(blocker(started, gate))
    quick = executor.submit(pow, 2, 3)
    plain: cf.Future[Any] = cf.Future()
    assert quick.result(PATIENCE) == 8
    everything: list[cf.Future[Any]] = [blocked, quick, plain]

    done, not_done = cf.wait(everything, PATIENCE, cf.FIRST_COMPLETED)
    assert done == {quick}
    assert not_done == {blocked, plain}

    completed = cf.as_completed(everything, timeout=PATIENCE)
    assert next(completed) is quick
    plain.set_result(7)
    assert next(completed) is plain
    gate.set()
    assert next(completed) is blocked
    with pytest.raises(StopIteration):
        next(completed)

    done, not_done = cf.wait(everything, PATIENCE)
    assert done == {blocked, quick, plain}
    assert not not_done


def test_stdlib_wait_sees_every_job_end_while_jobs_end(make: MakeExecutor) -> None:
    # The race a lazily made condition must not lose: wait() looks at each
    # future's state, then installs its waiter, while workers finish jobs.
    executor = make(4)
    for _ in range(20):
        futures = [executor.submit(pow, i, 2) for i in range(200)]
        done, not_done = cf.wait(futures, PATIENCE)
        assert not not_done
        assert len(done) == 200
        futures = [executor.submit(pow, i, 2) for i in range(200)]
        seen = list(cf.as_completed(futures, timeout=PATIENCE))
        assert sorted(f.result() for f in seen) == sorted(i * i for i in range(200))


def test_stdlib_wait_from_many_threads_at_once() -> None:
    with Dispatcher(4) as d:
        handles = [d.submit(pow, i, 2) for i in range(500)]
        outcomes: list[int] = []

        def waiter() -> None:
            done, not_done = cf.wait(handles, PATIENCE)
            outcomes.append(len(done) if not not_done else -1)

        threads = [threading.Thread(target=waiter) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(PATIENCE)
        assert outcomes == [500] * 4


def test_first_exception(make: MakeExecutor) -> None:
    executor = make(2)
    started, gate = threading.Event(), threading.Event()
    blocked = executor.submit(blocker(started, gate))
    failing = executor.submit(fail, "boom")
    both: list[cf.Future[Any]] = [blocked, failing]
    done, not_done = cf.wait(both, PATIENCE, cf.FIRST_EXCEPTION)
    assert done == {failing}
    assert not_done == {blocked}
    assert isinstance(failing.exception(), ValueError)
    gate.set()


def test_wait_and_as_completed_over_both_executors_at_once() -> None:
    with cf.ThreadPoolExecutor(2) as stdlib, dkf.ThreadPoolExecutor(2) as ours:
        started, gate = threading.Event(), threading.Event()
        blocked = ours.submit(blocker(started, gate))
        theirs = stdlib.submit(pow, 2, 4)
        mine = ours.submit(pow, 3, 2)
        plain: cf.Future[Any] = cf.Future()
        everything: list[cf.Future[Any]] = [blocked, theirs, mine, plain]
        for wait in (cf.wait, dispatchkit.wait):
            done, not_done = wait(everything, PATIENCE, cf.FIRST_COMPLETED)
            assert done
            assert done <= {theirs, mine}
            assert {blocked, plain} <= not_done
        completed = cf.as_completed(everything, timeout=PATIENCE)
        assert {next(completed), next(completed)} == {theirs, mine}
        plain.set_result(1)
        assert next(completed) is plain
        gate.set()
        assert next(completed) is blocked
        done, not_done = dispatchkit.wait(everything, PATIENCE)
        assert not not_done


def test_dispatchkit_wait_and_as_completed_take_plain_futures_too() -> None:
    with Dispatcher(2) as d:
        failing = d.submit(fail, "boom")
        plain: cf.Future[Any] = cf.Future()
        done, not_done = dispatchkit.wait([failing, plain], PATIENCE, dispatchkit.FIRST_EXCEPTION)
        assert done == {failing}
        assert not_done == {plain}
        plain.set_result(1)
        assert set(dispatchkit.as_completed([failing, plain], timeout=PATIENCE)) == {failing, plain}


# -- callbacks -------------------------------------------------------------------


def test_done_callback_runs_once_in_the_completing_thread(make: MakeExecutor) -> None:
    executor = make(2)
    started, gate = threading.Event(), threading.Event()
    future = executor.submit(blocker(started, gate))
    calls: list[tuple[cf.Future[Any], str]] = []
    called = threading.Event()

    def record(f: cf.Future[Any]) -> None:
        calls.append((f, threading.current_thread().name))
        called.set()

    future.add_done_callback(record)
    assert not calls
    gate.set()
    assert called.wait(PATIENCE)
    assert future.result(PATIENCE) == "opened"
    executor.shutdown(wait=True)
    assert len(calls) == 1
    assert calls[0][0] is future
    assert calls[0][1] != threading.current_thread().name  # a worker thread ran it

    # Added once the future is done: called at once, in the caller's thread.
    future.add_done_callback(record)
    assert len(calls) == 2
    assert calls[1][1] == threading.current_thread().name


def test_a_raising_done_callback_is_logged_not_raised(
    make: MakeExecutor, caplog: pytest.LogCaptureFixture
) -> None:
    executor = make(1)
    future = executor.submit(pow, 2, 2)
    future.result(PATIENCE)

    def broken(_: cf.Future[Any]) -> None:
        raise RuntimeError("callback broke")

    with caplog.at_level(logging.ERROR):
        future.add_done_callback(broken)  # must not raise
    errors = [r for r in caplog.records if r.exc_info and r.exc_info[1] is not None]
    assert [str(r.exc_info[1]) for r in errors if r.exc_info] == ["callback broke"]


def test_a_callback_raising_in_the_worker_thread_is_logged_and_the_rest_run(
    make: MakeExecutor, caplog: pytest.LogCaptureFixture
) -> None:
    executor = make(1)
    started, gate = threading.Event(), threading.Event()
    future = executor.submit(blocker(started, gate))
    called = threading.Event()

    def broken(_: cf.Future[Any]) -> None:
        raise RuntimeError("callback broke in a worker")

    future.add_done_callback(broken)
    future.add_done_callback(lambda _: called.set())
    with caplog.at_level(logging.ERROR):
        gate.set()
        assert called.wait(PATIENCE)  # the callback after the broken one ran
        assert executor.submit(pow, 2, 2).result(PATIENCE) == 4  # the worker goes on
    errors = [r for r in caplog.records if r.exc_info and r.exc_info[1] is not None]
    assert [str(r.exc_info[1]) for r in errors if r.exc_info] == ["callback broke in a worker"]
    assert errors[0].threadName != threading.current_thread().name


# -- cancel, running, timeouts -----------------------------------------------------


def test_cancel_a_queued_job_not_a_running_one(make: MakeExecutor) -> None:
    executor = make(1)
    started, gate = threading.Event(), threading.Event()
    running = executor.submit(blocker(started, gate))
    assert started.wait(PATIENCE)
    queued = executor.submit(pow, 2, 2)
    seen: list[cf.Future[Any]] = []
    queued.add_done_callback(seen.append)

    assert running.running()
    assert not running.done()
    assert not running.cancel()
    assert queued.cancel()
    assert queued.cancel()
    assert queued.cancelled()
    assert queued.done()
    assert not queued.running()
    assert seen == [queued]  # callbacks run on cancel, in the cancelling thread
    with pytest.raises(cf.CancelledError):
        queued.result(PATIENCE)
    with pytest.raises(cf.CancelledError):
        queued.exception(PATIENCE)
    assert not queued.set_running_or_notify_cancel()
    gate.set()
    assert running.result(PATIENCE) == "opened"
    assert not running.cancel()
    assert not running.cancelled()


def test_result_and_exception_time_out(make: MakeExecutor) -> None:
    executor = make(1)
    started, gate = threading.Event(), threading.Event()
    future = executor.submit(blocker(started, gate))
    with pytest.raises(cf.TimeoutError):
        future.result(timeout=0.01)
    with pytest.raises(TimeoutError):
        future.exception(timeout=0.01)
    gate.set()
    assert future.exception(PATIENCE) is None
    failing = executor.submit(fail, "x")
    assert isinstance(failing.exception(PATIENCE), ValueError)
    with pytest.raises(ValueError, match="x"):
        failing.result(PATIENCE)


def test_set_running_or_notify_cancel_on_a_plain_pending_state() -> None:
    with Dispatcher(1) as d:
        started, gate = threading.Event(), threading.Event()
        d.submit(blocker(started, gate))
        assert started.wait(PATIENCE)
        queued = d.submit(pow, 2, 5)
        assert queued.set_running_or_notify_cancel()  # pending: now running
        assert queued.running()
        assert not queued.cancel()
        gate.set()
        assert queued.result(PATIENCE) == 32
        with pytest.raises(RuntimeError):
            queued.set_running_or_notify_cancel()
        with pytest.raises(cf.InvalidStateError):
            queued.set_result(1)


# -- map -------------------------------------------------------------------------


def test_map_zips_several_iterables(make: MakeExecutor) -> None:
    executor = make(2)
    assert list(executor.map(pow, [1, 2, 3], [2, 3, 4])) == [1, 8, 81]
    assert list(executor.map(pow, [1, 2, 3], [2])) == [1]  # the shortest ends it
    assert list(executor.map(pow, [], [])) == []
    assert list(executor.map(abs, [-1, -2], timeout=PATIENCE)) == [1, 2]


def test_map_raises_the_jobs_error_at_its_result(make: MakeExecutor) -> None:
    executor = make(2)
    results = executor.map(int, ["1", "x", "3"])
    assert next(results) == 1
    with pytest.raises(ValueError, match="invalid literal"):
        next(results)


def test_map_timeout_raises_from_the_iterator(make: MakeExecutor) -> None:
    executor = make(2)
    started, gate = threading.Event(), threading.Event()
    job = blocker(started, gate)
    results = executor.map(lambda _: job(), [0], timeout=0.05)
    with pytest.raises(cf.TimeoutError):
        next(results)
    gate.set()


def test_map_runs_its_jobs_from_the_call_and_counts_the_timeout_from_it(
    make: MakeExecutor,
) -> None:
    executor = make(1)
    first_ran = threading.Event()
    started, gate = threading.Event(), threading.Event()
    job = blocker(started, gate)

    def task(i: int) -> object:
        if i == 0:
            first_ran.set()
            return 0
        return job()

    results = executor.map(task, [0, 1], timeout=0.05)
    assert first_ran.wait(PATIENCE)  # before any next(): the jobs run from the call
    time.sleep(0.1)  # past the deadline
    assert next(results) == 0  # a result that is in still comes out
    with pytest.raises(cf.TimeoutError):
        next(results)
    gate.set()


def test_map_keeps_no_reference_to_what_it_yielded(make: MakeExecutor) -> None:
    class Result:
        pass

    executor = make(2)
    for value in executor.map(lambda _: Result(), range(20)):
        ref = weakref.ref(value)
        del value
        assert ref() is None


def test_map_buffersize_bounds_the_pending_jobs(make: MakeExecutor) -> None:
    executor = make(2)
    if not isinstance(executor, Dispatcher) and sys.version_info < (3, 14):
        pytest.skip("the stdlib's map has buffersize from Python 3.14")
    taken = 0

    def inputs() -> Iterator[int]:
        nonlocal taken
        for i in range(50):
            taken += 1
            yield i

    pending_at_each_result = []
    results = executor.map(abs, inputs(), buffersize=3)  # type: ignore[call-arg,unused-ignore]
    for index, value in enumerate(results):
        assert value == index
        pending_at_each_result.append(taken - index)
    # The stdlib submits one more before it waits for a result: buffersize + 1.
    assert max(pending_at_each_result) <= 3 + 1
    assert taken == 50


def test_map_argument_errors() -> None:
    with Dispatcher(2) as d:
        with pytest.raises(ValueError, match="buffersize"):
            d.map(abs, [1], buffersize=0)
        with pytest.raises(ValueError, match="chunksize"):
            d.map(abs, [1], chunksize=0)
        with pytest.raises(ValueError, match="not both"):
            d.map(abs, [1], buffersize=2, window=2)


def test_dispatcher_map_keeps_its_own_options() -> None:
    with Dispatcher(2, strategy="round_robin") as d:
        assert sorted(d.map(abs, [-1, -2, -3], ordered=False)) == [1, 2, 3]
        assert list(d.map(pow, [(2, 2), (3, 2)], star=True)) == [4, 9]
        outcomes = list(d.map(int, ["1", "x"], outcomes=True))
        assert outcomes[0].value == 1
        assert isinstance(outcomes[1].error, ValueError)
        assert list(d.map(abs, range(-20, 0), window=2, chunksize=4)) == list(range(20, 0, -1))
        with pytest.raises(ValueError, match="star applies to one iterable"):
            d.map(pow, [1], [2], star=True)


# -- shutdown --------------------------------------------------------------------


def test_shutdown_cancel_futures_then_submit_raises(make: MakeExecutor) -> None:
    executor = make(1)
    started, gate = threading.Event(), threading.Event()
    running = executor.submit(blocker(started, gate))
    assert started.wait(PATIENCE)
    queued = [executor.submit(pow, 2, i) for i in range(3)]
    executor.shutdown(wait=False, cancel_futures=True)
    assert all(f.cancelled() for f in queued)
    with pytest.raises(RuntimeError):
        executor.submit(pow, 2, 2)
    gate.set()
    assert running.result(PATIENCE) == "opened"
    executor.shutdown(wait=True)  # again: harmless


def test_shutdown_cancel_futures_and_wait(make: MakeExecutor) -> None:
    executor = make(1)
    started, gate = threading.Event(), threading.Event()
    running = executor.submit(blocker(started, gate))
    assert started.wait(PATIENCE)
    queued = [executor.submit(pow, 2, i) for i in range(3)]
    cancelled: list[cf.Future[Any]] = []
    for future in queued:
        future.add_done_callback(cancelled.append)
    closer = threading.Thread(target=executor.shutdown, kwargs={"cancel_futures": True})
    closer.start()
    gate.set()
    closer.join(PATIENCE)
    assert not closer.is_alive()
    assert running.done()  # shutdown(wait=True) returned after the running job
    assert running.result() == "opened"
    assert all(f.cancelled() for f in queued)
    assert sorted(map(id, cancelled)) == sorted(map(id, queued))  # each callback ran once


ATEXIT_DRAIN = r"""
import sys, threading
from {module} import ThreadPoolExecutor

pool = ThreadPoolExecutor(2)
gate = threading.Event()

def job(i):
    gate.wait()
    sys.stdout.write(f"{{i}} {{threading.current_thread().name}}\n")  # one write per line

for i in range(6):
    pool.submit(job, i)
gate.set()  # the last statement: every job is still queued or running at exit
"""


@pytest.mark.parametrize("module", ["concurrent.futures", "dispatchkit.futures"])
def test_the_interpreter_exit_waits_for_the_queued_jobs(module: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", ATEXIT_DRAIN.format(module=module)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    lines = [line.split() for line in done.stdout.splitlines()]
    assert sorted(int(i) for i, _ in lines) == list(range(6))
    assert {name.rsplit("_", 1)[0] for _, name in lines} == {"ThreadPoolExecutor-0"}


def test_with_block_waits_for_the_jobs(make: MakeExecutor) -> None:
    with make(2) as executor:
        futures = [executor.submit(pow, 2, i) for i in range(20)]
    assert all(f.done() for f in futures)
    assert [f.result() for f in futures] == [2**i for i in range(20)]


# -- the drop-in constructors -----------------------------------------------------


def test_thread_pool_names_and_defaults(make: MakeExecutor) -> None:
    named = make(2, thread_name_prefix="crawler")
    assert named.submit(lambda: threading.current_thread().name).result(PATIENCE) in (
        "crawler_0",
        "crawler_1",
    )
    unnamed = make(1)
    name = unnamed.submit(lambda: threading.current_thread().name).result(PATIENCE)
    assert name.startswith("ThreadPoolExecutor-")
    assert name.endswith("_0")
    gate = threading.Barrier(5, timeout=PATIENCE)

    def meet() -> str:
        gate.wait()  # five jobs at once: every thread of the pool takes one
        return threading.current_thread().name

    five = make(5)
    names = {f.result(PATIENCE) for f in [five.submit(meet) for _ in range(5)]}
    assert len(names) == 5
    assert all(re.fullmatch(r"ThreadPoolExecutor-\d+_[0-4]", n) for n in names), names
    assert make()._max_workers == min(32, (os.cpu_count() or 1) + 4)  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="max_workers must be greater than 0"):
        make(0)
    with pytest.raises(TypeError, match="initializer must be a callable"):
        make(1, initializer=42)


def test_thread_pool_initializer_runs_once_per_worker(make: MakeExecutor) -> None:
    local = threading.local()
    runs: list[str] = []
    lock = threading.Lock()

    def initializer(tag: str) -> None:
        local.tag = tag
        with lock:
            runs.append(threading.current_thread().name)

    executor = make(2, "init", initializer, ("ready",))
    futures = [executor.submit(lambda: local.tag) for _ in range(20)]
    assert [f.result(PATIENCE) for f in futures] == ["ready"] * 20
    executor.shutdown(wait=True)
    assert len(runs) == len(set(runs)) <= 2  # once per thread that ran


def test_a_failing_thread_initializer_fails_the_constructor() -> None:
    # The stdlib breaks the pool at the first job (BrokenThreadPool); dispatchkit
    # starts its threads at once and says so then (see the README's table).
    with pytest.raises(WorkerStartError, match="initializer failed") as raised:
        dkf.ThreadPoolExecutor(2, initializer=fail, initargs=("no setup",))
    assert isinstance(raised.value.__cause__, ValueError)
    assert isinstance(raised.value, RuntimeError)


def test_a_failing_process_initializer_fails_the_constructor(tmp_path: Path) -> None:
    # The stdlib breaks the pool at the first job (BrokenProcessPool); dispatchkit
    # waits for its processes to be ready and says so then, as for threads.
    log = tmp_path / "starts"
    with pytest.raises(WorkerStartError, match="initializer raised") as raised:
        dkf.ProcessPoolExecutor(
            2, _forkserver(), initializer=jobs.initialize_or_fail, initargs=(str(log), -1)
        )
    assert isinstance(raised.value.__cause__, ValueError)


def test_process_pool_defaults_and_checks() -> None:
    with pytest.raises(ValueError, match="max_workers must be greater than 0"):
        dkf.ProcessPoolExecutor(0)
    with pytest.raises(ValueError, match="max_tasks_per_child must be >= 1"):
        dkf.ProcessPoolExecutor(1, max_tasks_per_child=0)
    with pytest.raises(ValueError, match="incompatible with the 'fork'"):
        dkf.ProcessPoolExecutor(1, multiprocessing.get_context("fork"), max_tasks_per_child=1)
    with dkf.ProcessPoolExecutor(mp_context=_forkserver()) as executor:
        assert executor._max_workers == os.cpu_count()
        assert isinstance(executor, cf.ProcessPoolExecutor)
        assert executor.settings.executor == "process"


def test_process_pools_submit_map_and_errors(make_process: MakeExecutor) -> None:
    executor = make_process(2, initializer=jobs.initialize, initargs=("tagged",))
    assert isinstance(executor, cf.ProcessPoolExecutor)
    assert executor.submit(pow, 2, 8).result(PATIENCE) == 256
    assert isinstance(executor.submit(int, "x").exception(PATIENCE), ValueError)
    assert list(executor.map(pow, range(10), [2] * 10, chunksize=3)) == [i * i for i in range(10)]
    assert "tagged" in executor.submit(jobs.initialized).result(PATIENCE)
    done, not_done = cf.wait([executor.submit(jobs.square, i) for i in range(8)], PATIENCE)
    assert not not_done
    assert sorted(f.result() for f in done) == [i * i for i in range(8)]


def test_a_worker_process_frees_a_jobs_arguments_once_it_is_done(
    make_process: MakeExecutor, tmp_path: Path
) -> None:
    executor = make_process(1)
    mark = gc_jobs.FreedMark(str(tmp_path))
    worker_pid = executor.submit(gc_jobs.pid_of_worker, mark).result(PATIENCE)
    freed = tmp_path / f"freed-{worker_pid}"
    # The worker is idle now, waiting for its next job: its copy must be gone.
    for _ in range(PATIENCE * 100):
        if freed.exists():
            break
        time.sleep(0.01)
    assert freed.exists()
    del mark


def test_a_dead_worker_process_fails_only_its_job() -> None:
    # The stdlib breaks the whole pool (BrokenProcessPool for every pending job
    # and every later submit); dispatchkit fails the one job and goes on.
    with dkf.ProcessPoolExecutor(2, _forkserver()) as executor:
        dying = executor.submit(jobs.exit_now, 3)
        assert isinstance(dying.exception(PATIENCE), WorkerLost)
        assert executor.submit(jobs.square, 4).result(PATIENCE) == 16


# -- asyncio ---------------------------------------------------------------------


def test_run_in_executor_and_to_thread(make: MakeExecutor) -> None:
    executor = make(2)

    async def main() -> tuple[int, int, int]:
        loop = asyncio.get_running_loop()
        direct = await loop.run_in_executor(executor, pow, 3, 3)
        wrapped = await asyncio.wrap_future(executor.submit(pow, 2, 3))
        loop.set_default_executor(executor)
        via_default = await asyncio.to_thread(pow, 2, 5)
        return direct, wrapped, via_default

    assert asyncio.run(main()) == (27, 8, 32)


def test_run_in_executor_on_a_dispatcher() -> None:
    with Dispatcher(2) as d:

        async def main() -> list[int]:
            loop = asyncio.get_running_loop()
            return list(
                await asyncio.gather(*(loop.run_in_executor(d, abs, -i) for i in range(50)))
            )

        assert asyncio.run(main()) == list(range(50))


def test_run_in_executor_raises_the_jobs_error(make: MakeExecutor) -> None:
    executor = make(1)

    async def main() -> None:
        await asyncio.get_running_loop().run_in_executor(executor, fail, "async boom")

    with pytest.raises(ValueError, match="async boom"):
        asyncio.run(main())


def test_map_results_taken_after_the_with_block(make: MakeExecutor) -> None:
    # The stdlib's map submits every job at the call; dispatchkit's is lazy,
    # so closing the pool feeds an open map's remaining input to the workers.
    with make(2) as executor:
        results = executor.map(pow, range(300), [2] * 300)
        started = executor.map(abs, range(-300, 0))
        assert next(started) == 300
    assert list(results) == [i * i for i in range(300)]
    assert list(started) == list(range(299, 0, -1))


def test_an_input_error_met_while_closing_is_raised_by_the_map() -> None:
    def inputs() -> Iterator[int]:
        yield from range(5000)
        raise LookupError("input broke")

    d = Dispatcher(2)
    results = d.map(abs, inputs())
    d.join()  # feeds the map; the input's error waits for its iterator
    assert d.closed
    got: list[int] = []
    with pytest.raises(LookupError, match="input broke"):
        got.extend(results)
    # The blocks placed before the error yield their results first (the block
    # the input broke in was never placed, as when the map runs open).
    assert got == list(range(len(got)))
    assert got


def test_async_handles_work_with_asyncio_wait_gather_and_friends() -> None:
    async def job(x: int) -> int:
        await asyncio.sleep(0)
        return x

    async def broken() -> None:
        raise ValueError("async job broke")

    async def main() -> None:
        async with dispatchkit.AsyncDispatcher(4) as d:
            handles = [await d.submit(job, i) for i in range(4)]
            # typeshed types asyncio.wait for asyncio.Future only: a handle is duck-typed.
            done, pending = await asyncio.wait(handles, timeout=PATIENCE)  # type: ignore[type-var]
            assert done == set(handles)
            assert not pending
            assert await asyncio.gather(*handles) == [0, 1, 2, 3]
            assert sorted([await f for f in asyncio.as_completed(handles)]) == [0, 1, 2, 3]
            assert await asyncio.shield(handles[0]) == 0
            assert await asyncio.wait_for(handles[1], PATIENCE) == 1
            failing = await d.submit(broken)
            done, pending = await asyncio.wait(  # type: ignore[type-var]
                [failing, *handles], timeout=PATIENCE, return_when=asyncio.FIRST_EXCEPTION
            )
            assert failing in done
            assert isinstance(failing.exception(), ValueError)
            seen: list[object] = []
            late = await d.submit(job, 9)
            late.add_done_callback(seen.append)
            late.remove_done_callback(seen.append)
            assert await late == 9
            assert seen == []

    asyncio.run(main())


ATEXIT_PROCESS_DRAIN = r"""
import sys
from {module} import ProcessPoolExecutor
from tests.pipe_jobs import count_run

if __name__ == "__main__":
    pool = ProcessPoolExecutor(2)
    for _ in range(30):
        pool.submit(count_run, sys.argv[1])
    pool.shutdown(wait=False)  # and the interpreter exits: every job is still to run
"""


@pytest.mark.parametrize("module", ["concurrent.futures", "dispatchkit.futures"])
def test_the_interpreter_exit_runs_the_jobs_a_process_pool_still_holds(
    module: str, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    root = str(Path(__file__).resolve().parent.parent)
    done = subprocess.run(
        [sys.executable, "-c", ATEXIT_PROCESS_DRAIN.format(module=module), str(runs)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=root,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])},
    )
    assert done.returncode == 0, done.stderr
    assert len(runs.read_text().splitlines()) == 30, done.stderr[-2000:]
