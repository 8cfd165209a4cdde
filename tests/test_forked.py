"""``run_forked``, the supervisor of ``dispatchkit worker --processes``: real forks and signals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
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
