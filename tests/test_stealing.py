"""Work stealing: an idle worker takes the jobs queued behind a busy worker.

Each test holds worker 0 on a gate (its first job waits for an event), so that
the jobs placed behind it can only run elsewhere if they are stolen; waits are
on events with generous timeouts, never on sleeps.
"""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from collections import Counter
from concurrent.futures import wait
from pathlib import Path
from typing import Any

import pytest

from dispatchkit import AsyncDispatcher, Dispatcher, Job, JobStatus
from dispatchkit.settings import Settings
from dispatchkit.strategies import Auto, Batch, ByKey, Pull, RoundRobin, Strategy

from . import gate_jobs

#: Generous: the machine is shared, and a failing test should not hang for long.
PATIENCE = 60

WORKERS = 4
JOBS = 40


class Runs:
    """Which worker thread ran each job, and how many times."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        self.count: Counter[int] = Counter()
        self.thread: dict[int, str] = {}
        self.gate = threading.Event()

    def job(self, i: int) -> int:
        if i == 0:
            assert self.gate.wait(PATIENCE), "the gate never opened"
        with self.lock:
            self.count[i] += 1
            self.thread[i] = threading.current_thread().name
            self.changed.notify_all()
        return i * 10

    def wait_for(self, jobs: set[int]) -> bool:
        with self.lock:
            return self.changed.wait_for(lambda: jobs <= self.count.keys(), PATIENCE)


def behind_worker_0(jobs: int = JOBS, workers: int = WORKERS) -> list[int]:
    """The jobs round robin queues behind job 0 on worker 0."""
    return list(range(workers, jobs, workers))


def test_the_static_strategies_allow_stealing_and_the_others_do_not() -> None:
    steals: dict[type[Strategy], bool] = {
        RoundRobin: True, Batch: True, ByKey: False, Pull: False, Auto: False,
    }  # fmt: skip
    for strategy, allowed in steals.items():
        assert strategy.steals is allowed, strategy
    assert Settings(workers=2, strategy="round_robin").stealing
    assert not Settings(workers=2, strategy="round_robin", steal=False).stealing
    assert not Settings(workers=2, strategy="key").stealing
    assert not Settings(workers=1, strategy="batch").stealing
    with pytest.raises(TypeError, match="steal must be True or False"):
        Settings(steal="yes")  # type: ignore[arg-type]


def test_jobs_queued_behind_a_busy_worker_run_on_idle_ones() -> None:
    runs = Runs()
    with Dispatcher(WORKERS, strategy="round_robin") as d:
        handles = [d.submit(runs.job, i) for i in range(JOBS)]
        # Worker 0 is held by job 0: its queue can only be run by the others.
        done, _ = wait(handles[1:], timeout=PATIENCE)
        assert len(done) == JOBS - 1, "jobs behind the held worker did not run elsewhere"
        runs.gate.set()
        assert [h.result(PATIENCE) for h in handles] == [10 * i for i in range(JOBS)]
        d.join()
        stats = d.stats()
    assert all(handles[i].worker != 0 for i in behind_worker_0()), [h.worker for h in handles]
    assert handles[0].worker == 0
    assert runs.count == Counter(range(JOBS)), "a job ran twice or not at all"
    assert stats.submitted == stats.succeeded == JOBS
    assert sum(w.jobs for w in stats.workers) == JOBS
    assert stats.workers[0].jobs == 1


def test_bulk_jobs_behind_a_busy_worker_are_stolen_and_counted_once() -> None:
    runs = Runs()
    with Dispatcher(WORKERS, strategy="batch", block=5, chunk=1) as d:
        assert d.dispatch(runs.job, range(JOBS)) == JOBS
        # Batch gives jobs 0-4 and 20-24 to worker 0, held by job 0.
        assert runs.wait_for(set(range(1, JOBS))), "jobs behind the held worker did not run"
        runs.gate.set()
        d.join()
        stats = d.stats()
    assert all(not runs.thread[i].endswith("-0") for i in (1, 2, 3, 4, 20, 21)), runs.thread
    assert runs.count == Counter(range(JOBS))
    assert stats.submitted == stats.succeeded == JOBS
    assert sum(w.jobs for w in stats.workers) == JOBS


def test_map_results_arrive_once_and_in_order_with_stealing() -> None:
    runs = Runs()
    with Dispatcher(WORKERS, strategy="round_robin", chunk=2) as d:
        results = d.map(runs.job, range(JOBS))
        # Job 4 shares job 0's hand-off (round robin gives worker 0 jobs 0, 4, 8, ...).
        assert runs.wait_for(set(range(JOBS)) - {0, 4}), "map jobs behind worker 0 did not run"
        runs.gate.set()
        assert list(results) == [10 * i for i in range(JOBS)]
        stats = d.stats()
    assert runs.count == Counter(range(JOBS))
    assert sum(w.jobs for w in stats.workers) == stats.succeeded == JOBS


def test_steal_false_keeps_every_job_on_its_strategys_worker() -> None:
    runs = Runs()
    with Dispatcher(WORKERS, strategy="round_robin", steal=False) as d:
        handles = [d.submit(runs.job, i) for i in range(JOBS)]
        others = [h for i, h in enumerate(handles) if i % WORKERS]
        done, _ = wait(others, timeout=PATIENCE)
        assert len(done) == len(others)
        # Nobody takes worker 0's queue: it waits for job 0.
        assert all(not handles[i].done() for i in behind_worker_0())
        runs.gate.set()
        d.join()
    assert [h.worker for h in handles] == [i % WORKERS for i in range(JOBS)]
    assert runs.count == Counter(range(JOBS))


def test_the_key_strategy_never_steals_and_keeps_each_keys_order() -> None:
    order: list[tuple[str, int]] = []
    gate = threading.Event()
    lock = threading.Lock()

    def job(key: str, i: int) -> None:
        if (key, i) == ("slow", 0):
            assert gate.wait(PATIENCE)
        with lock:
            order.append((key, i))

    keys = ["slow", "a", "b", "c", "d", "e"]
    held = ByKey().assign(0, "slow", WORKERS)
    with Dispatcher(WORKERS, strategy="key") as d:
        handles = {k: [d.submit_job(Job(job, (k, i), key=k)) for i in range(20)] for k in keys}
        queued = [k for k in keys if ByKey().assign(0, k, WORKERS) == held]
        elsewhere = [h for k in keys if k not in queued for h in handles[k]]
        assert elsewhere
        assert len(queued) > 1  # the keys picked share worker 1 ("slow", "b")
        done, _ = wait(elsewhere, timeout=PATIENCE)
        assert len(done) == len(elsewhere)
        # The held worker's jobs wait for it, however idle the others are.
        assert not any(h.done() for k in queued for h in handles[k])
        gate.set()
        d.join()
    assert all(h.worker == held for k in queued for h in handles[k])
    for key in keys:
        assert [i for k, i in order if k == key] == list(range(20)), key


def test_async_jobs_queued_behind_a_busy_worker_run_on_idle_ones() -> None:
    count: Counter[int] = Counter()

    async def main() -> tuple[list[Any], Any]:
        gate = asyncio.Event()

        async def job(i: int) -> int:
            if i == 0:
                await gate.wait()
            count[i] += 1
            return i * 10

        async with AsyncDispatcher(WORKERS, strategy="round_robin") as d:
            handles = [await d.submit(job, i) for i in range(JOBS)]
            await asyncio.wait_for(asyncio.gather(*handles[1:]), PATIENCE)
            gate.set()
            assert await asyncio.gather(*handles) == [10 * i for i in range(JOBS)]
            outcomes = [h.outcome() for h in handles]
            await d.join()
            return outcomes, d.stats()

    outcomes, stats = asyncio.run(main())
    assert all(outcomes[i].worker != 0 for i in behind_worker_0())
    assert count == Counter(range(JOBS))
    assert stats.submitted == stats.succeeded == JOBS
    assert sum(w.jobs for w in stats.workers) == JOBS


def test_async_steal_false_keeps_every_job_on_its_strategys_worker() -> None:
    async def main() -> list[Any]:
        gate = asyncio.Event()

        async def job(i: int) -> int:
            if i == 0:
                await gate.wait()
            return i

        async with AsyncDispatcher(WORKERS, strategy="round_robin", steal=False) as d:
            handles = [await d.submit(job, i) for i in range(JOBS)]
            others = [h for i, h in enumerate(handles) if i % WORKERS]
            await asyncio.wait_for(asyncio.gather(*others), PATIENCE)
            assert all(not handles[i].done() for i in behind_worker_0())
            gate.set()
            await asyncio.gather(*handles)
            return [h.outcome().worker for h in handles]

    assert asyncio.run(main()) == [i % WORKERS for i in range(JOBS)]


def test_process_liaisons_steal_too(tmp_path: Path) -> None:
    started, gate = tmp_path / "started", tmp_path / "gate"
    with Dispatcher(2, executor="process", strategy="round_robin") as d:
        held = d.submit(gate_jobs.hold, str(started), str(gate))
        handles = [d.submit(gate_jobs.touch, str(tmp_path / str(i))) for i in range(1, 6)]
        # Jobs 2 and 4 wait behind the held job on worker 0. Job 2 may already sit in
        # worker 0's pipe (each process has its next job queued, as the stdlib's pool
        # does), where nobody can take it; job 4 waits in the inbox: worker 1 takes it.
        in_pipe_or_stolen = handles[1]
        others = [h for h in handles if h is not in_pipe_or_stolen]
        done, _ = wait(others, timeout=PATIENCE)
        gate.write_text("open")
        assert held.result(PATIENCE) == "through"
        assert len(done) == len(others)
        assert in_pipe_or_stolen.result(PATIENCE) is None
        stats = d.stats()
    assert [h.worker for h in others] == [1, 1, 1, 1]
    assert in_pipe_or_stolen.worker in (0, 1)
    assert all(h.status is JobStatus.SUCCEEDED for h in handles)
    assert sum(w.jobs for w in stats.workers) == stats.succeeded == 6


def test_a_stolen_job_still_waiting_can_be_cancelled() -> None:
    gates = {i: threading.Event() for i in (0, 1, 6)}
    started = threading.Event()

    def job(i: int) -> int:
        if i == 6:
            started.set()
        if i in gates:
            assert gates[i].wait(PATIENCE)
        return i

    with Dispatcher(2, strategy="round_robin") as d:
        # Both workers held: worker 0 queues 2, 4, 6, 8 and worker 1 queues 3, 5, 7, 9.
        handles = [d.submit(job, i) for i in range(10)]
        gates[1].set()
        # Worker 1 runs its queue, then takes the newer half of worker 0's: 6 and 8.
        assert started.wait(PATIENCE), "worker 1 took nothing from worker 0"
        assert handles[6].worker == 1
        assert handles[8].cancel(), "the stolen job, still queued, could not be cancelled"
        gates[6].set()
        gates[0].set()
        d.join()
        stats = d.stats()
    assert handles[8].cancelled()
    assert [h.result() for i, h in enumerate(handles) if i != 8] == [0, 1, 2, 3, 4, 5, 6, 7, 9]
    assert stats.cancelled == 1
    assert stats.submitted == stats.succeeded + stats.cancelled == 10


def test_idle_async_workers_leave_no_waiters_behind() -> None:
    async def main() -> tuple[int, int]:
        async def job(i: int) -> int:
            return i

        async with AsyncDispatcher(WORKERS, strategy="round_robin") as d:
            for i in range(200):  # every worker idles again and again
                assert await (await d.submit(job, i)) == i
                await d.dispatch(abs, range(3))
            await asyncio.sleep(0)
            board = d._pool._thieves[0].board  # type: ignore[union-attr]
            return len(board.idle), sum(len(inbox._getters) for inbox in d._inboxes)

    idle, getters = asyncio.run(main())
    assert idle <= WORKERS
    assert getters <= WORKERS


def test_many_async_workers_take_turns_looking_and_still_find_the_queue() -> None:
    workers, jobs = 50, 500  # more workers than one look reads

    async def main() -> list[Any]:
        gate = asyncio.Event()

        async def job(i: int) -> int:
            if i == 0:
                await gate.wait()
            return i

        async with AsyncDispatcher(workers, strategy="round_robin") as d:
            handles = [await d.submit(job, i) for i in range(jobs)]
            await asyncio.wait_for(asyncio.gather(*handles[1:]), PATIENCE)
            gate.set()
            assert await asyncio.gather(*handles) == list(range(jobs))
            return [h.outcome().worker for h in handles]

    ran_on = asyncio.run(main())
    assert all(ran_on[i] != 0 for i in behind_worker_0(jobs, workers))


def test_thousands_of_stealing_workers_keep_no_list_of_the_others_each() -> None:
    # Each worker looks at the others through the shared inboxes: no per-worker
    # list of the other N - 1 (N squared objects for the garbage collector).
    workers = 2000
    gc.collect()
    before = len(gc.get_objects())
    dispatcher = AsyncDispatcher(workers, strategy="round_robin")
    assert dispatcher.settings.stealing
    added = len(gc.get_objects()) - before
    assert added < 50 * workers


@pytest.mark.parametrize("workers", [WORKERS, 50])  # 50: more than one look reads
def test_idle_workers_sleep_until_one_runs_and_still_take_its_queue(workers: int) -> None:
    runs = Runs()
    # One block holds every job, the first one included: all of them go to worker 0.
    with Dispatcher(workers, strategy="batch", block=JOBS + 1, chunk=1) as d:
        assert d.submit(runs.job, -1).result(PATIENCE) == -10
        inboxes = set(d._inboxes)
        asleep = d._pool.board.asleep  # type: ignore[attr-defined]
        # Nobody runs a job: every worker waits without polling for one to start.
        deadline = time.monotonic() + PATIENCE
        while asleep != inboxes:
            assert time.monotonic() < deadline, "idle workers kept polling"
            time.sleep(0.01)
        # Batch puts all the jobs behind job 0 on worker 0: only the board wakes the others.
        handles = [d.submit(runs.job, i) for i in range(JOBS)]
        done, _ = wait(handles[1:], timeout=PATIENCE)
        assert len(done) == JOBS - 1, "the sleeping workers never took worker 0's queue"
        runs.gate.set()
        d.join()
    assert handles[0].worker == 0
    assert {h.worker for h in handles[1:]} - {0}, "no job ran elsewhere"
    assert all(h.status is JobStatus.SUCCEEDED for h in handles)
    assert runs.count == Counter(range(-1, JOBS))
