"""``dispatchkit worker --processes N``: workers forked from one process.

Real worker processes over a real Redis server, real signals.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from dispatchkit.remote import RedisDispatcher
from tests.redis_support import (
    QUEUE,
    Workers,
    client,
    namespace,
    redis_url,
    runs,
    wait_for,
    workers,
)
from tests.serve_support import with_tests_on_path

__all__ = ["client", "namespace", "redis_url", "workers"]  # fixtures, imported for pytest

pytestmark = [pytest.mark.redis, pytest.mark.timeout(90)]


def _worker_pids(client: Any, namespace: str) -> set[int]:
    """The pids of the registered workers (their names are ``host-pid-random``)."""
    names = client.zrange(f"{namespace}:{QUEUE}:workers", 0, -1)
    return {int(name.decode().rsplit("-", 2)[1]) for name in names}


def _children(pid: int) -> set[int]:
    return {int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}


def _start(workers: Workers, processes: int) -> subprocess.Popen[str]:
    parent = workers.start("--processes", str(processes), concurrency=1, wait=False)
    wait_for(lambda: workers.registered() >= processes or parent.poll() is not None, 30)
    assert parent.poll() is None, parent.communicate()[0]
    return parent


def test_forked_workers_share_the_queue_and_all_drain_on_sigterm(
    workers: Workers, redis_url: str, namespace: str, client: Any
) -> None:
    parent = _start(workers, 3)
    forked = _children(parent.pid)
    assert len(forked) == 3
    assert _worker_pids(client, namespace) == forked  # each a worker of its own
    log = f"{namespace}:log"
    d = RedisDispatcher(redis_url, QUEUE, namespace=namespace)
    try:
        handles: list[Any] = [d.submit("t.record", log, i, 0.05) for i in range(60)]
        assert sorted(h.result(timeout=60) for h in handles) == list(range(60))
    finally:
        d.shutdown(wait=False)
    ran_on = {pid for _, pid in runs(client, log)}
    assert len(ran_on) >= 2
    assert ran_on <= forked
    parent.send_signal(signal.SIGTERM)
    out, _ = parent.communicate(timeout=30)
    assert parent.returncode == 0, out
    assert out.count("dispatchkit worker: stopped:") == 3
    for pid in forked:
        assert not Path(f"/proc/{pid}").exists()
    assert workers.registered() == 0


def test_a_forked_worker_killed_by_a_signal_is_replaced(
    workers: Workers, redis_url: str, namespace: str, client: Any
) -> None:
    parent = _start(workers, 2)
    first = _children(parent.pid)
    # Past the steady time: a worker that dies at once is not replaced.
    wait_for(lambda: all(_lived(pid) > 1.5 for pid in first), 10)
    victim = min(first)
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: len(_children(parent.pid) - first) == 1, 20)
    replacement = (_children(parent.pid) - first).pop()
    wait_for(lambda: replacement in _worker_pids(client, namespace), 20)
    d = RedisDispatcher(redis_url, QUEUE, namespace=namespace)
    try:
        handles: list[Any] = [d.submit("t.echo", i) for i in range(20)]
        assert [h.result(timeout=60) for h in handles] == list(range(20))
    finally:
        d.shutdown(wait=False)
    parent.send_signal(signal.SIGTERM)
    out, _ = parent.communicate(timeout=30)
    assert parent.returncode == 0, out
    assert f"worker process {victim} was killed by signal 9" in out


def _lived(pid: int) -> float:
    """Seconds since ``pid`` started."""
    ticks = os.sysconf("SC_CLK_TCK")
    started = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]) / ticks
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    return uptime - started


def test_a_bad_job_module_with_processes_is_one_message(redis_url: str, namespace: str) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "dispatchkit",
            "worker",
            "--redis",
            redis_url,
            "--namespace",
            namespace,
            "--processes",
            "3",
            "--import",
            "no_such_job_module",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "PYTHONPATH": with_tests_on_path()},
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("dispatchkit worker: error: cannot import job module")


def test_a_stop_right_after_the_forks_drains_every_worker(workers: Workers) -> None:
    # The workers are milliseconds old: not yet connected, their own handler not
    # yet set. The stop waits for it (never the CLI's Ctrl-C traceback) and drains.
    for _ in range(3):
        parent = workers.start("--processes", "4", concurrency=1, wait=False)
        deadline = time.monotonic() + 30
        while len(_children(parent.pid)) < 4 and time.monotonic() < deadline:
            time.sleep(0.001)  # the signal must come within milliseconds of the forks
        parent.send_signal(signal.SIGTERM)
        out, _ = parent.communicate(timeout=30)
        assert parent.returncode == 0, out
        assert "Traceback" not in out
        assert out.count("dispatchkit worker: stopped:") == 4
