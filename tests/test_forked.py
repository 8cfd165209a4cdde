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

    def worker():
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *a: stop.set())
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
        def one():
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
