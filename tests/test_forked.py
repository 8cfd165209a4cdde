"""``run_forked``, the supervisor of ``dispatchkit worker --processes``: real forks and signals."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(60)


_SUPERVISOR = textwrap.dedent(
    """
    import logging, os, signal, threading, time
    from dispatchkit.remote.forked import run_forked

    class Slow(logging.Handler):  # a log sink that blocks a moment (a full stderr pipe)
        def emit(self, record):
            if "starting another" in record.getMessage():
                time.sleep(1.0)

    logging.getLogger("dispatchkit.remote.forked").addHandler(Slow())

    def worker(started):
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *a: stop.set())
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})  # blocked till handled
        started()
        while not stop.wait(0.05):
            pass
        return 0

    raise SystemExit(run_forked(2, worker))
    """
)


def test_a_stop_while_a_worker_is_replaced_reaches_the_replacement() -> None:
    sup = subprocess.Popen([sys.executable, "-c", _SUPERVISOR])
    children = Path(f"/proc/{sup.pid}/task/{sup.pid}/children")
    try:
        time.sleep(1.8)  # past the steady second
        os.kill(int(children.read_text().split()[0]), signal.SIGKILL)
        time.sleep(0.3)  # the supervisor is logging the replacement
        sup.send_signal(signal.SIGTERM)
        assert sup.wait(timeout=8) == 0
    finally:
        if sup.poll() is None:
            for pid in children.read_text().split():
                os.kill(int(pid), signal.SIGTERM)
            sup.wait(timeout=10)


def test_forked_workers_do_not_share_the_membership_random_state() -> None:
    code = textwrap.dedent(
        """
        import os
        from dispatchkit.remote import membership
        from dispatchkit.remote.forked import run_forked
        def one(started):
            started()
            os.write(1, f"{membership._random.random()}\\n".encode())  # one write each
            return 0
        run_forked(3, one)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True
    )
    values = out.stdout.split()
    assert len(values) == 3
    assert len(set(values)) == 3, values


_GATED = textwrap.dedent(
    """
    import os, sys, time
    from dispatchkit.remote.forked import run_forked

    def one(started):
        for index in range(3):  # each worker claims an index of its own
            try:
                os.close(os.open(f"{sys.argv[1]}/{index}", os.O_CREAT | os.O_EXCL))
                break
            except FileExistsError:
                pass
        if index == 2 and sys.argv[2] == "dies":
            return 0  # before it got to the gate
        time.sleep(3.0 if index == 2 and sys.argv[2] == "hangs" else 0.3 * index)
        started()
        os.write(1, f"{time.monotonic()}\\n".encode())
        return 0

    launched = time.monotonic()
    code = run_forked(3, one)
    os.write(1, f"launched {launched}\\n".encode())
    raise SystemExit(code)
    """
)


def _gated_starts(tmp_path: Path, third: str) -> tuple[float, list[float]]:
    """When ``_GATED`` launched, and when each of its workers passed the gate."""
    out = subprocess.run(
        [sys.executable, "-c", _GATED, str(tmp_path), third],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout.split("\n")
    launched = float(next(line for line in out if line.startswith("launched")).split()[1])
    return launched, sorted(float(line) for line in out if line and "launched" not in line)


def test_the_workers_forked_at_launch_take_work_together(tmp_path: Path) -> None:
    launched, passed = _gated_starts(tmp_path, "lives")
    assert len(passed) == 3
    # Their start-ups ended 0.3 s and 0.6 s apart; they passed the gate together,
    # once the slowest got there.
    assert passed[-1] - passed[0] < 0.2, passed
    assert passed[0] - launched >= 0.55


def test_a_worker_that_dies_before_the_gate_does_not_hold_the_others(tmp_path: Path) -> None:
    launched, passed = _gated_starts(tmp_path, "dies")
    assert len(passed) == 2
    assert passed[-1] - passed[0] < 0.2, passed
    # Once the slower of the two got there (0.3 s), not at the gate's timeout (1 s).
    assert 0.25 <= passed[0] - launched < 0.8


def test_a_worker_still_starting_holds_the_others_one_second_at_most(tmp_path: Path) -> None:
    launched, passed = _gated_starts(tmp_path, "hangs")
    assert len(passed) == 3
    first_two = passed[:2]
    assert first_two[1] - first_two[0] < 0.2, passed
    assert 0.9 <= first_two[0] - launched < 2.0
    assert passed[2] - launched >= 2.9  # the late one passes on its own, not held


_PIDS_ROOT = Path("/sys/fs/cgroup/pids")


@pytest.fixture
def few_pids(tmp_path: Path) -> Iterator[Path]:
    """A pids cgroup (cgroup v1) a process can be moved into; skips where none can be made."""
    group = _PIDS_ROOT / f"dispatchkit-test-{os.getpid()}-{tmp_path.name}"
    try:
        group.mkdir()
    except OSError as exc:
        pytest.skip(f"cannot make a pids cgroup to starve forks ({exc.strerror})")
    try:
        yield group
    finally:
        # Whatever a failed test left running in it (the workers it was about).
        for pid in (group / "cgroup.procs").read_text().split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
        deadline = time.monotonic() + 10
        while True:
            try:
                group.rmdir()
                break
            except OSError:  # a process still in it
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)


def test_a_fork_that_fails_at_launch_stops_the_workers_already_started(few_pids: Path) -> None:
    # The supervisor and two workers fit; the third fork fails for real (EAGAIN).
    (few_pids / "pids.max").write_text("3")
    supervisor = _SUPERVISOR.replace(
        "raise SystemExit(run_forked(2, worker))",
        "logging.basicConfig()\nraise SystemExit(run_forked(4, worker))",
    )
    shell = f'echo $$ > {few_pids / "cgroup.procs"} && exec "$0" -c "$1"'
    run = subprocess.run(
        ["sh", "-c", shell, sys.executable, supervisor],
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert run.returncode == 1, run.stderr
    assert "cannot start a worker process" in run.stderr
    assert "Traceback" not in run.stderr
    # The two started were stopped and waited for: nothing is left running.
    assert (few_pids / "cgroup.procs").read_text() == ""
