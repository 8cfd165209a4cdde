"""Process workers under faults the dispatcher must survive, with real processes and signals.

Results and exceptions the dispatcher's process cannot unpickle, workers killed
while idle, and ``os.fork()`` of a program that holds dispatchers. After each
test the accounting holds: submitted == succeeded + failed + cancelled.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from dispatchkit import Dispatcher, DispatcherStats, JobStatus
from dispatchkit.executors._child import RemoteError, RemoteTraceback
from tests import jobs, process_fault_jobs
from tests.process_fault_jobs import GHOST_MODULE

T = TypeVar("T")

START_METHODS = ["forkserver", "spawn", "fork"]

#: Python 3.12+ warns that fork() with threads running may deadlock; these tests
#: choose fork on purpose, to show that it behaves like the other start methods.
fork_warning_ignored = pytest.mark.filterwarnings(
    "ignore:.*use of fork\\(\\) may lead to deadlocks:DeprecationWarning"
)

ROOT = Path(__file__).resolve().parent.parent


def within(seconds: float, call: Callable[[], T]) -> T:
    """``call()``'s value, or a failed test if it does not return in time (never a hang)."""
    answer: list[T] = []
    raised: list[BaseException] = []

    def run() -> None:
        try:
            answer.append(call())
        except BaseException as exc:
            raised.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    if raised:
        raise raised[0]
    assert answer, f"no answer within {seconds} s: the jobs were never settled"
    return answer[0]


def assert_accounted(stats: DispatcherStats, succeeded: int, failed: int) -> None:
    assert stats.submitted == stats.succeeded + stats.failed + stats.cancelled
    assert (stats.succeeded, stats.failed, stats.cancelled) == (succeeded, failed, 0)


# -- results the dispatcher cannot load ----------------------------------------


def test_a_result_or_error_the_dispatcher_cannot_load_fails_that_job_only() -> None:
    with Dispatcher(1, executor="process") as d:
        first = d.submit(jobs.pid).result(timeout=30)

        bomb = d.submit(process_fault_jobs.return_load_bomb).exception(timeout=10)
        assert isinstance(bomb, TypeError)
        assert "LoadBomb" in str(bomb)
        assert "cannot be loaded in the dispatcher's process" in str(bomb)
        assert "refuses to be loaded" in str(bomb)

        ghost = d.submit(process_fault_jobs.return_ghost).exception(timeout=10)
        assert isinstance(ghost, TypeError)
        assert f"{GHOST_MODULE}.Ghost" in str(ghost)
        assert f"No module named '{GHOST_MODULE}'" in str(ghost)

        haunted = d.submit(process_fault_jobs.raise_ghost).exception(timeout=10)
        assert isinstance(haunted, RemoteError)
        assert f"{GHOST_MODULE}.GhostError: haunted" in str(haunted)
        assert "could not be loaded in the dispatcher's process" in str(haunted)
        assert isinstance(haunted.__cause__, RemoteTraceback)
        assert "in raise_ghost" in str(haunted.__cause__)

        # The worker went on: the same process runs the next job.
        assert d.submit(jobs.pid).result(timeout=10) == first
    assert_accounted(d.stats(), succeeded=2, failed=3)


def _statuses(outcomes: list[Any]) -> list[JobStatus]:
    return [outcome.status for outcome in outcomes]


@pytest.mark.parametrize("job_timeout", [None, 30.0], ids=["whole-chunk", "job-by-job"])
def test_in_a_map_chunk_only_the_job_the_dispatcher_cannot_load_fails(
    job_timeout: float | None,
) -> None:
    # Without a timeout a chunk's results come back in one message; with one,
    # job by job. In both, the other jobs of the chunk keep their values.
    with Dispatcher(1, executor="process", chunk=4, job_timeout=job_timeout) as d:
        values = within(
            10, lambda: list(d.map(process_fault_jobs.ghost_on_two, [1, 2, 3, 4], outcomes=True))
        )
        errors = within(
            10,
            lambda: list(d.map(process_fault_jobs.raise_ghost_on_two, [1, 2, 3, 4], outcomes=True)),
        )
        with pytest.raises(TypeError, match="cannot be loaded"):
            within(10, lambda: next(d.map(process_fault_jobs.ghost_on_two, [2])))
    failed, succeeded = JobStatus.FAILED, JobStatus.SUCCEEDED
    assert _statuses(values) == [succeeded, failed, succeeded, succeeded]
    assert [o.value for o in values if o.ok] == [10, 30, 40]
    assert isinstance(values[1].error, TypeError)
    assert f"{GHOST_MODULE}.Ghost" in str(values[1].error)
    assert _statuses(errors) == [succeeded, failed, succeeded, succeeded]
    assert isinstance(errors[1].error, RemoteError)
    assert "GhostError: haunted" in str(errors[1].error)
    assert_accounted(d.stats(), succeeded=6, failed=3)


def test_fire_and_forget_jobs_whose_error_cannot_be_loaded_are_counted_and_reported() -> None:
    reported: list[tuple[object, BaseException]] = []
    with Dispatcher(1, executor="process", chunk=4) as d:
        assert (
            d.dispatch(
                process_fault_jobs.raise_ghost_on_two,
                [1, 2, 3, 4, 5, 6, 7, 8],
                on_error=lambda item, error: reported.append((item, error)),
            )
            == 8
        )
    assert_accounted(d.stats(), succeeded=7, failed=1)
    assert [item for item, _ in reported] == [2]
    assert isinstance(reported[0][1], RemoteError)
    assert "GhostError: haunted" in str(reported[0][1])


@pytest.mark.parametrize("job_timeout", [None, 30.0], ids=["whole-chunk", "job-by-job"])
def test_an_exception_that_refuses_attributes_fails_its_job_and_the_worker_goes_on(
    job_timeout: float | None,
) -> None:
    with Dispatcher(1, executor="process", job_timeout=job_timeout) as d:
        first = d.submit(jobs.pid).result(timeout=30)
        error = d.submit(process_fault_jobs.raise_frozen).exception(timeout=10)
        assert isinstance(error, process_fault_jobs.Frozen)
        assert str(error) == "cold"
        assert d.submit(jobs.pid).result(timeout=10) == first  # not WorkerLost, not replaced
    assert_accounted(d.stats(), succeeded=2, failed=1)


# -- a worker that dies while idle --------------------------------------------


def kill_and_wait(pid: int, timeout: float = 10) -> None:
    """SIGKILL ``pid`` and wait until it has died (a zombie counts as dead)."""
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            break
        if state in ("Z", "X"):
            break
        time.sleep(0.01)
    else:
        raise AssertionError(f"process {pid} still runs {timeout} s after SIGKILL")
    # Under forkserver the fork server reaps the worker, then tells the
    # dispatcher: leave it that moment, as an idle worker's death leaves it.
    time.sleep(0.1)


@fork_warning_ignored
@pytest.mark.parametrize("start_method", START_METHODS)
def test_a_worker_killed_while_idle_is_replaced_before_it_gets_work(start_method: str) -> None:
    with Dispatcher(1, executor="process", start_method=start_method, chunk=4) as d:
        first = d.submit(jobs.pid).result(timeout=30)
        kill_and_wait(first)
        # The job never ran in the dead process: it must not be WorkerLost.
        second = d.submit(jobs.pid).result(timeout=30)
        assert second != first
        kill_and_wait(second)
        assert within(30, lambda: list(d.map(jobs.square, range(8)))) == [x * x for x in range(8)]
        kill_and_wait(d.submit(jobs.pid).result(timeout=30))
        assert d.dispatch(jobs.square, range(8)) == 8
    assert_accounted(d.stats(), succeeded=19, failed=0)


# -- os.fork() of a program holding dispatchers --------------------------------

_FORK_SCRIPT = textwrap.dedent(
    """
    import json, os, signal, sys, warnings
    warnings.simplefilter("ignore", DeprecationWarning)  # fork() with threads, on purpose
    sys.path.insert(0, ROOT)
    from dispatchkit import DispatchError, Dispatcher
    from tests import jobs

    def report(**fields):
        print(json.dumps(fields), flush=True)

    def child(method, processes, threads, use, exit_how):
        signal.alarm(20)  # a hang in the child ends it, and the test says so
        if use:
            refusals = {}
            calls = {
                "process submit": lambda: processes.submit(jobs.square, 2),
                "process map": lambda: list(processes.map(jobs.square, [1])),
                "thread submit": lambda: threads.submit(jobs.square, 2),
                "thread dispatch": lambda: threads.dispatch(jobs.square, [1]),
            }
            for name, call in calls.items():
                try:
                    call()
                    refusals[name] = None
                except Exception as exc:
                    refusals[name] = [type(exc).__name__, isinstance(exc, DispatchError), str(exc)]
            with Dispatcher(1, executor="process", start_method=method) as fresh:
                value = fresh.submit(jobs.square, 7).result(timeout=30)
            report(refusals=refusals, fresh=value)
        if exit_how == "os._exit":
            os._exit(0)
        sys.exit(0)  # through atexit: dispatchkit's and multiprocessing's clean-up

    if __name__ == "__main__":
        method = sys.argv[1]
        with Dispatcher(2, executor="process", start_method=method) as d, Dispatcher(2) as t:
            before = sorted({d.submit(jobs.pid).result(timeout=30) for _ in range(6)})
            t.submit(jobs.square, 1).result(timeout=30)
            for exit_how in ("sys.exit", "os._exit"):
                for use in (True, False):
                    pid = os.fork()
                    if pid == 0:
                        child(method, d, t, use, exit_how)
                    _, status = os.waitpid(pid, 0)
                    report(exit_how=exit_how, use=use, status=os.waitstatus_to_exitcode(status))
            after = sorted({d.submit(jobs.pid).result(timeout=30) for _ in range(6)})
            squares = list(d.map(jobs.square, range(10)))
            thread_squares = list(t.map(jobs.square, range(10)))
        counts = [
            [s.submitted, s.succeeded, s.failed, s.cancelled] for s in (d.stats(), t.stats())
        ]
        report(parent=os.getpid(), before=before, after=after, squares=squares,
               thread_squares=thread_squares, counts=counts)
    """
)


@pytest.mark.parametrize("start_method", START_METHODS)
def test_after_os_fork_the_child_refuses_work_and_leaves_the_parents_workers_alone(
    start_method: str,
) -> None:
    script = _FORK_SCRIPT.replace("sys.path.insert(0, ROOT)", f"sys.path.insert(0, {str(ROOT)!r})")
    done = subprocess.run(
        [sys.executable, "-c", script, start_method],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    parent = lines[-1]
    exits = [line for line in lines if "exit_how" in line]
    assert [(e["exit_how"], e["use"], e["status"]) for e in exits] == [
        ("sys.exit", True, 0),
        ("sys.exit", False, 0),
        ("os._exit", True, 0),
        ("os._exit", False, 0),
    ]
    children = [line for line in lines if "refusals" in line]
    assert len(children) == 2
    for reply in children:
        for name, refusal in reply["refusals"].items():
            assert refusal is not None, f"{name} was accepted in the forked child"
            kind, is_dispatch_error, message = refusal
            assert (kind, is_dispatch_error) == ("ForkedError", True), name
            assert f"created in process {parent['parent']}" in message
            assert "after os.fork() create a new one in the child" in message
        # The advice works: a new dispatcher in the child runs jobs.
        assert reply["fresh"] == 49
    # The parent's workers were not harmed (the same processes run on) and work.
    assert len(parent["before"]) == 2
    assert parent["after"] == parent["before"]
    assert parent["squares"] == parent["thread_squares"] == [x * x for x in range(10)]
    processes, threads = parent["counts"]
    assert processes == [22, 22, 0, 0]
    assert threads == [11, 11, 0, 0]
    assert "Traceback" not in done.stderr, done.stderr


# -- a worker process that cannot be started ---------------------------------------

#: Run in a child of the test, which uses up its file descriptors once its worker
#: process was killed: the worker cannot be replaced (spawn needs pipes).
_NO_FDS_SCRIPT = """
import json, os, resource, signal, time
from dispatchkit import Dispatcher

def dead(pid):
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True

def main():
    d = Dispatcher(1, executor="process", start_method="spawn")
    pid = d.submit(os.getpid).result(60)
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while not dead(pid):
        assert time.monotonic() < deadline, "the worker process did not die"
        time.sleep(0.01)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    used = max(int(name) for name in os.listdir("/proc/self/fd"))
    resource.setrlimit(resource.RLIMIT_NOFILE, (used + 8, hard))
    held = []
    try:
        while True:
            held.append(os.open(os.devnull, os.O_RDONLY))
    except OSError:
        pass
    try:
        handle = d.submit(abs, -2)
        try:
            answer = ["value", handle.result(60)]
        except TimeoutError:
            answer = ["never settled", None]
        except Exception as exc:
            answer = [type(exc).__name__, str(exc)]
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    after = d.submit(abs, -3).result(60)
    assert d.join(60)
    s = d.stats()
    print(json.dumps([answer, after, [s.submitted, s.succeeded, s.failed, s.cancelled]]))

if __name__ == "__main__":
    main()
"""


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc")
def test_a_job_whose_worker_process_cannot_be_started_fails_and_the_next_one_runs(
    tmp_path: Path,
) -> None:
    script = tmp_path / "no_fds.py"
    script.write_text(_NO_FDS_SCRIPT)
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=200, check=False
    )
    assert done.returncode == 0, done.stderr
    answer, after, counts = json.loads(done.stdout.splitlines()[-1])
    assert after == 3
    assert answer[0] == "WorkerLost", answer
    assert "Too many open files" in answer[1]
    assert counts == [3, 2, 1, 0]  # every job counted once
