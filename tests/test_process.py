"""Process workers with real processes and real signals: crashes, timeouts, pickling."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import pytest

from dispatchkit import (
    Dispatcher,
    Job,
    JobCancelled,
    JobStatus,
    RetryPolicy,
    TimedOut,
    WorkerLost,
    WorkerStartError,
)
from dispatchkit.executors._child import RemoteError, RemoteTraceback
from tests import jobs
from tests.gate_jobs import wait_for_file
from tests.signals import TAKE_SIGINT


def test_results_errors_and_remote_tracebacks() -> None:
    # round_robin: the pid check below needs each process to get jobs, which a
    # shared queue (auto, the default) does not promise for jobs run one by one.
    with Dispatcher(2, executor="process", strategy="round_robin") as d:
        assert d.submit(jobs.square, 12).result(timeout=30) == 144
        assert list(d.map(jobs.square, range(20))) == [x * x for x in range(20)]
        failed = d.submit(jobs.flaky, 3)
        error = failed.exception(timeout=30)
        assert isinstance(error, ValueError)
        assert isinstance(error.__cause__, RemoteTraceback)
        assert "in flaky" in str(error.__cause__)
        assert failed.outcome().worker in (0, 1)
        assert len({d.submit(jobs.pid).result() for _ in range(8)}) == 2  # two processes
    stats = d.stats()
    assert stats.submitted == stats.succeeded + stats.failed == 30
    assert stats.failed == 1


@pytest.mark.parametrize("strategy", ["round_robin", "pull"])
def test_kill_9_of_a_worker_loses_only_its_job(tmp_path: Path, strategy: str) -> None:
    marker = tmp_path / "victim.pid"
    with Dispatcher(2, executor="process", strategy=strategy) as d:
        victim = d.submit(jobs.record_pid_and_sleep, str(marker), 30)
        others = [d.submit(jobs.square, i) for i in range(40)]
        pid = int(wait_for_file(marker))
        os.kill(pid, signal.SIGKILL)
        error = victim.exception(timeout=10)
        assert isinstance(error, WorkerLost)
        assert "exit code -9" in str(error)
        assert [h.result(timeout=30) for h in others] == [i * i for i in range(40)]
        after = d.submit(jobs.pid).result(timeout=30)
        assert after != pid  # a new process took the dead one's place
    stats = d.stats()
    assert stats.submitted == 42
    assert (stats.succeeded, stats.failed, stats.cancelled) == (41, 1, 0)


def test_a_killed_job_is_retried_when_the_policy_allows(tmp_path: Path) -> None:
    policy = RetryPolicy(max_attempts=2, backoff=0.01)
    with Dispatcher(1, executor="process", retry=policy) as d:
        handle = d.submit(jobs.die_on_first_call, str(tmp_path / "marker"))
        assert handle.result(timeout=30) == "survived"
        assert handle.attempts == 2


def test_os_exit_in_a_job_is_worker_lost_and_the_rest_run() -> None:
    with Dispatcher(1, executor="process") as d:
        before = d.submit(jobs.square, 2)
        dying = d.submit(jobs.exit_now, 7)
        after = [d.submit(jobs.square, i) for i in range(5)]
        assert before.result(timeout=30) == 4
        error = dying.exception(timeout=30)
        assert isinstance(error, WorkerLost)
        assert "exit code 7" in str(error)
        assert [h.result(timeout=30) for h in after] == [0, 1, 4, 9, 16]


def test_a_job_over_its_timeout_is_timed_out_and_its_process_replaced() -> None:
    with Dispatcher(1, executor="process", job_timeout=0.5) as d:
        first_pid = d.submit(jobs.pid).result(timeout=30)
        started = time.monotonic()
        slow = d.submit(jobs.sleep_then, 30)
        assert isinstance(slow.exception(timeout=10), TimedOut)
        assert time.monotonic() - started < 5
        assert d.submit(jobs.pid).result(timeout=30) != first_pid
        # A per-job timeout overrides the dispatcher's.
        patient = d.submit_job(Job(jobs.sleep_then, (0.8, "done"), timeout=5))
        assert patient.result(timeout=30) == "done"
    assert d.stats().failed == 1


def test_timeout_in_a_chunk_loses_only_the_slow_job() -> None:
    with Dispatcher(1, executor="process", job_timeout=0.5, chunk=4) as d:
        outcomes = list(
            d.map(jobs.sleep_then, [(0, 1), (0, 2), (10, 3), (0, 4)], star=True, outcomes=True)
        )
    assert [o.status for o in outcomes] == [
        JobStatus.SUCCEEDED,
        JobStatus.SUCCEEDED,
        JobStatus.FAILED,
        JobStatus.SUCCEEDED,
    ]
    assert isinstance(outcomes[2].error, TimedOut)
    assert [o.value for o in outcomes if o.ok] == [1, 2, 4]


def test_what_cannot_be_pickled_fails_clearly_and_never_hangs() -> None:
    with Dispatcher(1, executor="process", chunk=3) as d:
        bad_argument = d.submit(jobs.square, lambda: 1)
        error = bad_argument.exception(timeout=30)
        assert isinstance(error, TypeError)
        assert "cannot be sent to a worker process" in str(error)
        bad_function = d.submit(lambda: 1)
        assert "job function cannot be sent" in str(bad_function.exception(timeout=30))
        bad_result = d.submit(jobs.return_unpicklable)
        assert "result cannot be sent back" in str(bad_result.exception(timeout=30))
        bad_error = d.submit(jobs.raise_unpicklable)
        error = bad_error.exception(timeout=30)
        assert isinstance(error, RemoteError)
        assert "Unpicklable" in str(error)
        # In a chunk, only the unpicklable item fails.
        outcomes = list(d.map(jobs.square, [1, lambda: 2, 3], outcomes=True))
        assert [o.ok for o in outcomes] == [True, False, True]
        assert d.submit(jobs.square, 5).result(timeout=30) == 25


def test_retries_record_their_attempts(tmp_path: Path) -> None:
    policy = RetryPolicy(max_attempts=4, backoff=0.01, retry_on=(ConnectionError,))
    with Dispatcher(1, executor="process", retry=policy) as d:
        handle = d.submit(jobs.fail_until, str(tmp_path / "count"), 2)
        assert handle.result(timeout=30) == 3
        assert handle.attempts == 3
        not_retried = d.submit(jobs.flaky, 0)  # ValueError is not in retry_on
        assert isinstance(not_retried.exception(timeout=30), ValueError)
        assert not_retried.attempts == 1


def test_initializer_and_recycling() -> None:
    with Dispatcher(
        1,
        executor="process",
        initializer=jobs.initialize,
        initargs=("ready",),
        max_jobs_per_worker=2,
    ) as d:
        assert d.submit(jobs.initialized).result(timeout=30) == ["ready"]
        pids = [d.submit(jobs.pid).result(timeout=30) for _ in range(5)]
    # The first process ran two jobs (initialized, pid), then every process two.
    assert len(set(pids)) == 3


def test_a_failing_initializer_fails_the_constructor_after_three_starts(tmp_path: Path) -> None:
    # As for threads, the constructor returns once every worker is ready.
    log = tmp_path / "starts"
    with pytest.raises(WorkerStartError, match="failed to start 3 times in a row") as raised:
        Dispatcher(
            2, executor="process", initializer=jobs.initialize_or_fail, initargs=(str(log), 99)
        )
    assert isinstance(raised.value.__cause__, ValueError)
    assert isinstance(raised.value.__cause__.__cause__, RemoteTraceback)  # where it raised
    pids = log.read_text().split()
    assert 3 <= len(pids) <= 6  # the first worker's three, and the second's so far
    time.sleep(0.5)
    for pid in pids:  # every process started is gone
        with pytest.raises(ProcessLookupError):
            os.kill(int(pid), 0)


def test_a_replacement_that_cannot_start_breaks_the_worker(tmp_path: Path) -> None:
    # The first process starts; once it is recycled, its replacements fail: the
    # job sent to them never ran, and after three tries it fails (not WorkerLost).
    log = tmp_path / "starts"
    with Dispatcher(
        1,
        executor="process",
        initializer=jobs.initialize_or_fail,
        initargs=(str(log), -1, 1),
        max_jobs_per_worker=1,
    ) as d:
        assert d.submit(jobs.square, 3).result(timeout=30) == 9
        error = d.submit(jobs.square, 4).exception(timeout=30)
        assert isinstance(error, WorkerStartError)
        assert isinstance(error.__cause__, ValueError)
        # Broken now: later jobs fail at once, no process is started for them.
        later = list(d.map(jobs.square, range(50), outcomes=True))
        assert {type(o.error) for o in later} == {WorkerStartError}
    assert log.read_text().count("\n") == 4
    stats = d.stats()
    assert (stats.submitted, stats.succeeded, stats.failed) == (52, 1, 51)


def test_a_start_that_fails_twice_blames_no_job(tmp_path: Path) -> None:
    # The jobs sent to the processes that did not start never ran: they go to the
    # third, which starts, rather than failing as lost.
    log = tmp_path / "starts"
    with Dispatcher(
        1, executor="process", initializer=jobs.initialize_or_fail, initargs=(str(log), 2)
    ) as d:
        assert list(d.map(jobs.square, range(30))) == [x * x for x in range(30)]
        assert d.submit(jobs.square, 4).result(timeout=30) == 16
    assert log.read_text().count("\n") == 3
    assert d.stats().failed == 0


def test_a_script_without_the_main_guard_fails_instead_of_hanging(tmp_path: Path) -> None:
    # Each worker process runs the parent's script again before its first job
    # (forkserver and spawn): this one starts a dispatcher there, which the
    # stdlib refuses, so every worker process exits before it is ready.
    script = tmp_path / "unguarded.py"
    script.write_text(
        textwrap.dedent(
            """
            from dispatchkit import Dispatcher

            with Dispatcher(2, executor="process") as d:
                print(sum(d.map(abs, range(10_000))))
            """
        )
    )
    done = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    last_line = done.stderr.strip().splitlines()[-1]
    assert last_line.startswith("dispatchkit.errors.WorkerStartError: ")
    assert 'if __name__ == "__main__":' in last_line
    assert done.stdout == ""


@pytest.mark.parametrize("method", ["fork", "forkserver", "spawn"])
def test_every_start_method_works(method: str) -> None:
    with warnings.catch_warnings():
        # Python 3.12+ warns that fork() in a process with threads may deadlock;
        # dispatchkit's default (forkserver) avoids it, and this test checks
        # that fork still works for those who choose it.
        warnings.simplefilter("ignore", DeprecationWarning)
        with Dispatcher(2, executor="process", start_method=method) as d:
            assert sorted(d.map(jobs.square, range(10), ordered=False)) == [
                x * x for x in range(10)
            ]


def test_process_only_settings_are_refused_for_threads() -> None:
    with pytest.raises(ValueError, match="need executor='process'"):
        Dispatcher(2, max_jobs_per_worker=3)
    with pytest.raises(ValueError, match="job_timeout needs process workers"):
        Dispatcher(2, job_timeout=1)
    with pytest.raises(ValueError, match="unknown start method"):
        Dispatcher(2, executor="process", start_method="teleport")
    with pytest.raises(ValueError, match="unknown executor 'gpu'"):
        Dispatcher(2, executor="gpu")
    with Dispatcher(1) as d, pytest.raises(ValueError, match="timeout needs process workers"):
        d.submit_job(Job(jobs.square, (1,), timeout=1))


def test_stop_past_its_deadline_kills_running_jobs() -> None:
    d = Dispatcher(1, executor="process")
    running = d.submit(jobs.sleep_then, 30)
    queued = d.submit(jobs.square, 3)
    time.sleep(0.5)
    started = time.monotonic()
    stats = d.stop(cancel=True, timeout=0.5)
    assert time.monotonic() - started < 10
    assert queued.cancelled()
    assert isinstance(running.exception(timeout=5), WorkerLost)
    assert stats.submitted == stats.succeeded + stats.failed + stats.cancelled == 2


def test_ctrl_c_in_the_submitting_thread_leaves_no_process_behind(tmp_path: Path) -> None:
    pids_file = tmp_path / "pids"
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent.parent)!r})
        from dispatchkit import Dispatcher
        from tests import jobs
        with Dispatcher(2, executor="process") as d:
            pids = {{d.submit(jobs.pid).result() for _ in range(6)}}
            open({str(pids_file)!r}, "w").write(" ".join(map(str, pids)))
            for value in d.map(jobs.sleep_then, [0.05] * 100000):
                pass
        """
    )
    process = subprocess.Popen(
        [sys.executable, "-c", TAKE_SIGINT + script], stderr=subprocess.PIPE, text=True
    )
    pids = [int(p) for p in wait_for_file(pids_file, 60).split()]
    time.sleep(0.5)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode != 0
    assert "KeyboardInterrupt" in stderr
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_workers_started_from_a_script_find_its_dispatchkit_imports_loaded(
    tmp_path: Path,
) -> None:
    # A worker runs its parent's script again before its first job (as __mp_main__);
    # the fork server has imported what such a script imports, so that no worker
    # imports the dispatcher again. Python reports every import it makes
    # (PYTHONPROFILEIMPORTTIME) in each process: the script's own, the fork
    # server's, and a worker's only if it had to make it.
    script = tmp_path / "three_workers.py"
    script.write_text(
        textwrap.dedent(
            """
            import os
            from dispatchkit import Dispatcher

            def pid(_):
                return os.getpid()

            if __name__ == "__main__":
                with Dispatcher(3, executor="process", strategy="round_robin") as d:
                    assert len(set(d.map(pid, range(30)))) == 3
            """
        )
    )
    env = {**os.environ, "PYTHONPROFILEIMPORTTIME": "1"}
    done = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    # A module the dispatcher imports with an import statement (a lazy name's own
    # import goes through importlib, which Python does not report).
    module = "dispatchkit._thread_front"
    imports = [line for line in done.stderr.splitlines() if line.split("|")[-1].strip() == module]
    assert len(imports) == 2, imports  # the script's process and the fork server: no worker


def flaky_then_slow(log: str) -> None:
    """Call 1 passes, calls 2 and 3 raise, later calls take 5 s."""
    with open(log, "a") as out:
        out.write("x\n")
    calls = Path(log).read_text().count("\n")
    if calls in (2, 3):
        raise ValueError("flaky start")
    if calls >= 4:
        time.sleep(5)


def test_a_stop_that_kills_a_starting_process_cancels_its_job(tmp_path: Path) -> None:
    # Two replacements failed to start; stop()'s own kill of the third, slow one is no
    # failed start: the job waiting for it is cancelled, not failed with WorkerStartError.
    log = tmp_path / "starts"
    d = Dispatcher(
        1, executor="process", initializer=flaky_then_slow, initargs=(str(log),),
        max_jobs_per_worker=1,
    )  # fmt: skip
    assert d.submit(jobs.square, 2).result(timeout=30) == 4  # its process is recycled
    handle = d.submit(jobs.square, 3)
    deadline = time.monotonic() + 20
    while log.read_text().count("\n") < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    s = d.stop(cancel=True, timeout=0.2)
    with pytest.raises(JobCancelled):
        handle.result(timeout=10)
    assert handle.status is JobStatus.CANCELLED
    assert (s.succeeded, s.failed, s.cancelled) == (1, 0, 1)


def test_a_worker_that_cannot_start_leaves_a_shared_queue_to_the_others(tmp_path: Path) -> None:
    # The first two processes start; every later one fails its initializer. Once the
    # killed worker's replacements have failed three times, that worker is broken: on
    # the shared queue (auto, the default) it takes no more jobs, the other runs them.
    log, marker = tmp_path / "starts", tmp_path / "victim.pid"
    with Dispatcher(
        2, executor="process", initializer=jobs.initialize_or_fail, initargs=(str(log), -1, 2)
    ) as d:
        victim = d.submit(jobs.record_pid_and_sleep, str(marker), 30)
        os.kill(int(wait_for_file(marker)), signal.SIGKILL)
        assert isinstance(victim.exception(timeout=30), WorkerLost)
        first = list(d.map(jobs.square, range(200), outcomes=True))
        # What the broken worker took while its replacements failed never ran: it went
        # back to the shared queue, so none of it fails.
        assert [o.value for o in first] == [x * x for x in range(200)]
        again = list(d.map(jobs.square, range(200), outcomes=True))
        assert [o.value for o in again] == [x * x for x in range(200)]
    assert log.read_text().count("\n") == 5  # two that started, three that did not
    stats = d.stats()
    assert stats.submitted == stats.succeeded + stats.failed + stats.cancelled == 401


def test_a_worker_that_breaks_after_close_gives_back_to_one_still_running(
    tmp_path: Path,
) -> None:
    # The dispatcher is closed while one worker runs a long job and the other's
    # replacements fail to start. What the broken worker took goes back to the closed
    # queue, as the other still takes from it: every job succeeds.
    log, marker, long = tmp_path / "starts", tmp_path / "victim.pid", tmp_path / "long.pid"
    d = Dispatcher(
        2, executor="process", initializer=jobs.initialize_or_fail, initargs=(str(log), -1, 2)
    )
    victim = d.submit(jobs.record_pid_and_sleep, str(marker), 30)
    victim_pid = int(wait_for_file(marker))
    running = d.submit(jobs.record_pid_and_sleep, str(long), 3)
    assert int(wait_for_file(long)) != victim_pid  # the other worker runs it
    squares = [d.submit(jobs.square, x) for x in range(20)]
    os.kill(victim_pid, signal.SIGKILL)
    d.close()
    assert isinstance(victim.exception(timeout=30), WorkerLost)
    assert [h.result(timeout=30) for h in squares] == [x * x for x in range(20)]
    assert running.result(timeout=30) != victim_pid
    assert d.join(30)
    assert log.read_text().count("\n") == 5  # two that started, three that did not


def test_a_retry_held_by_a_worker_that_cannot_start_ends_instead_of_hanging(
    tmp_path: Path,
) -> None:
    # The killed job's retry waits with its worker, whose replacements then fail to
    # start. Leaving the shared queue to the other, the broken worker cannot run the
    # retry: it fails with the start error (it waited forever before); the jobs it
    # took but never started go back to the queue and all succeed.
    log, marker = tmp_path / "starts", tmp_path / "victim.pid"
    with Dispatcher(
        2,
        executor="process",
        initializer=jobs.initialize_or_fail,
        initargs=(str(log), -1, 2),
        retry=RetryPolicy(max_attempts=3, backoff=0.01),
    ) as d:
        victim = d.submit(jobs.record_pid_and_sleep, str(marker), 30)
        os.kill(int(wait_for_file(marker)), signal.SIGKILL)
        assert isinstance(victim.exception(timeout=30), WorkerStartError)
        assert victim.attempts == 2  # the lost run, then the retry that could not start
        assert list(d.map(jobs.square, range(200))) == [x * x for x in range(200)]
    stats = d.stats()
    assert (stats.submitted, stats.succeeded, stats.failed) == (201, 200, 1)
