"""Process workers keep their pipe full: each has its next job queued before the current
one ends, and a job queued behind one that dies, or times out, runs once all the same.

The observable is honest: a worker process reads its next task only after it has
replied to the current one, so a job that finds data waiting on its pipe
(``tests.pipe_jobs``) proves the next task was sent while it ran.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from concurrent.futures import wait
from pathlib import Path

from dispatchkit import Dispatcher, RetryPolicy, TimedOut, WorkerLost
from dispatchkit._conformance import jobs as logged
from tests import gate_jobs, jobs, pipe_jobs
from tests.gate_jobs import wait_for_file


def test_the_next_job_is_in_the_pipe_before_the_current_one_ends() -> None:
    with Dispatcher(1, executor="process") as d:
        first = d.submit(pipe_jobs.next_task_waits)
        second = d.submit(jobs.square, 3)
        assert first.result(timeout=60) is True
        assert second.result(timeout=30) == 9


def test_at_most_one_job_waits_in_the_pipe_and_it_cannot_be_cancelled(tmp_path: Path) -> None:
    marker, gate = tmp_path / "marker", tmp_path / "gate"
    with Dispatcher(1, executor="process") as d:
        first = d.submit(pipe_jobs.hold_after_next_task, str(marker), str(gate))
        sent = d.submit(jobs.square, 3)
        queued = d.submit(jobs.square, 4)
        assert wait_for_file(marker, 30).startswith("seen ")
        # ``sent`` is in the process's pipe: as in the stdlib's process pool, a
        # job handed to its process is no longer cancellable. ``queued`` is not
        # taken while the first job runs: a process holds one job ahead, no more.
        assert not sent.cancel()
        assert queued.cancel()
        gate.write_text("open")
        assert first.result(timeout=30) == "through"
        assert sent.result(timeout=30) == 9
        assert queued.cancelled()
    stats = d.stats()
    assert (stats.succeeded, stats.cancelled) == (2, 1)


def test_a_stop_cancels_queued_jobs_and_lets_the_one_sent_to_its_process_run(
    tmp_path: Path,
) -> None:
    marker, gate = tmp_path / "marker", tmp_path / "gate"
    d = Dispatcher(1, executor="process")
    first = d.submit(pipe_jobs.hold_after_next_task, str(marker), str(gate))
    sent = d.submit(jobs.square, 3)
    queued = d.submit(jobs.square, 4)
    assert wait_for_file(marker, 30).startswith("seen ")
    stopping = threading.Thread(target=d.stop, kwargs={"cancel": True})
    stopping.start()
    deadline = time.monotonic() + 30
    while not queued.cancelled():
        assert time.monotonic() < deadline, "the stop never cancelled the queued job"
        time.sleep(0.01)
    gate.write_text("open")
    stopping.join(60)
    assert not stopping.is_alive()
    assert first.result(timeout=5) == "through"
    assert sent.result(timeout=5) == 9  # as in the stdlib: a job handed to its process runs
    stats = d.stats()
    assert (stats.succeeded, stats.failed, stats.cancelled) == (2, 0, 1)


def test_a_worker_killed_with_a_job_queued_behind_runs_that_job_once(tmp_path: Path) -> None:
    marker, runs = tmp_path / "marker", tmp_path / "runs"
    with Dispatcher(1, executor="process") as d:
        victim = d.submit(pipe_jobs.sleep_after_next_task, str(marker), 60)
        behind = d.submit(pipe_jobs.count_run, str(runs))
        after = [d.submit(jobs.square, i) for i in range(5)]
        seen, pid = wait_for_file(marker, 30).split()
        assert seen == "seen"  # ``behind`` waits in the pipe of the process we kill
        os.kill(int(pid), signal.SIGKILL)
        error = victim.exception(timeout=30)
        assert isinstance(error, WorkerLost)
        assert "exit code -9" in str(error)
        # It never started: it is sent again (to the replacement), not lost.
        assert behind.result(timeout=30) != int(pid)
        assert [h.result(timeout=30) for h in after] == [0, 1, 4, 9, 16]
    assert runs.read_text().splitlines() == [str(behind.result())]
    stats = d.stats()
    assert (stats.succeeded, stats.failed, stats.cancelled) == (6, 1, 0)


def test_a_job_killed_with_one_queued_behind_is_retried_and_both_run(tmp_path: Path) -> None:
    policy = RetryPolicy(max_attempts=2, backoff=0.01, retry_on=(WorkerLost,))
    runs = tmp_path / "runs"
    with Dispatcher(1, executor="process", retry=policy) as d:
        dying = d.submit(pipe_jobs.die_once_after_next_task, str(tmp_path / "marker"))
        behind = d.submit(pipe_jobs.count_run, str(runs))
        assert dying.result(timeout=60) == "seen"
        assert dying.attempts == 2
        behind.result(timeout=30)
        assert behind.attempts == 1  # it never started in the process that died
    assert len(runs.read_text().splitlines()) == 1


def test_fire_and_forget_chunk_queued_behind_a_killed_one_runs_once(tmp_path: Path) -> None:
    marker, runs = tmp_path / "marker", tmp_path / "runs"
    errors: list[BaseException] = []
    entries = [("sleep_after_next_task", str(marker), 60), ("count_run", str(runs))]
    with Dispatcher(1, executor="process", chunk=1) as d:
        d.dispatch(pipe_jobs.run_entry, entries, on_error=lambda _, e: errors.append(e))
        seen, pid = wait_for_file(marker, 30).split()
        assert seen == "seen"
        os.kill(int(pid), signal.SIGKILL)
    assert [type(e) for e in errors] == [WorkerLost]
    assert len(runs.read_text().splitlines()) == 1
    stats = d.stats()
    assert (stats.succeeded, stats.failed, stats.cancelled) == (1, 1, 0)


def test_a_job_queued_behind_one_that_times_out_runs_once(tmp_path: Path) -> None:
    marker, runs = tmp_path / "marker", tmp_path / "runs"
    # Long enough for the slow job to see the next one arrive, even under load.
    with Dispatcher(1, executor="process", job_timeout=pipe_jobs.PATIENCE + 5) as d:
        slow = d.submit(pipe_jobs.sleep_after_next_task, str(marker), 120)
        behind = d.submit(pipe_jobs.count_run, str(runs))
        seen, pid = wait_for_file(marker, 30).split()
        assert seen == "seen"
        assert isinstance(slow.exception(timeout=120), TimedOut)
        assert behind.result(timeout=30) != int(pid)
    assert runs.read_text().splitlines() == [str(behind.result())]
    assert d.stats().failed == 1


def test_max_jobs_per_worker_counts_the_job_queued_in_the_pipe() -> None:
    with Dispatcher(2, executor="process", max_jobs_per_worker=1) as d:
        handles = [d.submit(jobs.pid) for _ in range(6)]
        pids = [h.result(timeout=60) for h in handles]
    assert len(set(pids)) == 6  # each process ran exactly one job


def test_max_jobs_per_worker_with_chunks_queued_in_the_pipe() -> None:
    with Dispatcher(1, executor="process", max_jobs_per_worker=4, chunk=2) as d:
        pids = list(d.map(jobs.pid, range(16)))
    counts: dict[int, int] = {}
    for pid in pids:
        counts[pid] = counts.get(pid, 0) + 1
    assert sorted(counts.values()) == [4, 4, 4, 4]


def test_a_reply_that_cannot_be_loaded_is_asked_again_past_the_job_queued_behind() -> None:
    with Dispatcher(1, executor="process") as d:
        # Each reply is asked again while the job queued behind it runs.
        haunted = [d.submit(pipe_jobs.ghost_after_next_task) for _ in range(3)]
        after = d.submit(jobs.square, 5)
        for handle in haunted:
            error = handle.exception(timeout=60)
            assert isinstance(error, TypeError)
            assert "cannot be loaded" in str(error)
        assert after.result(timeout=30) == 25


def test_auto_with_a_key_still_runs_each_keys_jobs_in_order(tmp_path: Path) -> None:
    # auto's lanes over the shared queue: a lane's next chunk must not be queued
    # in a pipe before the lane's current chunk has ended.
    log = str(tmp_path / "log")
    keys = [i % 3 for i in range(60)]
    entries = [[log, key, position] for position, key in enumerate(keys)]
    with Dispatcher(2, executor="process", chunk=2) as d:
        assert list(d.map(logged.span, entries, key=lambda e: e[1])) == list(range(60))
    lines = logged.read_log(log)
    for key in set(keys):
        mine = [(line[0], int(line[2])) for line in lines if int(line[1]) == key]
        positions = [p for p, k in enumerate(keys) if k == key]
        assert mine == [(edge, p) for p in positions for edge in ("s", "e")]


def test_jobs_queued_behind_a_retry_waiting_out_its_backoff_are_taken_by_an_idle_worker(
    tmp_path: Path,
) -> None:
    policy = RetryPolicy(
        max_attempts=2, backoff=600, max_backoff=600, jitter=0, retry_on=(ConnectionError,)
    )
    gate = tmp_path / "gate"
    with Dispatcher(2, executor="process", strategy="round_robin", retry=policy) as d:
        # Worker 0 gets jobs 0, 2, 4, 6 (job 0 fails and waits 600 s to run again),
        # worker 1 jobs 1, 3, 5, 7 (job 1 holds it until worker 0 is in that wait).
        failing = d.submit(jobs.fail_until, str(tmp_path / "calls"), 1)
        holding = d.submit(gate_jobs.hold, str(tmp_path / "started"), str(gate))
        handles = [d.submit(jobs.square, i) for i in range(2, 8)]
        assert handles[0].result(timeout=60) == 4  # job 2 ran after job 0 failed
        gate.write_text("open")
        assert holding.result(timeout=60) == "through"
        done, _ = wait(handles, timeout=60)
        assert len(done) == len(handles), "the jobs behind the backoff waited for it"
        assert [h.result() for h in handles] == [i * i for i in range(2, 8)]
        assert {handles[2].worker, handles[4].worker} == {1}  # jobs 4 and 6: taken
        d.stop(cancel=True)  # ends the backoff
    assert failing.cancelled()
    stats = d.stats()
    assert stats.submitted == stats.succeeded + stats.failed + stats.cancelled == 8
