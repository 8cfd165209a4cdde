"""More worker threads than the operating system allows: one clear error, nothing left running.

The limit is real: a child process gets a small address-space limit (RLIMIT_AS,
which binds root too, unlike RLIMIT_NPROC) and large thread stacks, so that the
kernel refuses the sixth thread or so, as it refuses thread 30,000-odd of
``--workers 100000`` on a machine with default limits.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status"),
]

#: Runs first in the child: imports done, then room for about five thread stacks.
LIMITED = """
import json, resource, sys, threading
import dispatchkit, dispatchkit.cli, dispatchkit._progress, dispatchkit._render

STACK = 64 * 1024 * 1024
threading.stack_size(STACK)
with open("/proc/self/status") as status:
    in_use = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize:"))
_, hard = resource.getrlimit(resource.RLIMIT_AS)
resource.setrlimit(resource.RLIMIT_AS, (in_use + int(5.5 * STACK), hard))
"""


def run_limited(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", LIMITED + code],
        check=False,
        capture_output=True,
        text=True,
        timeout=50,
        # One malloc arena: per-thread arenas would take address space unevenly.
        env={**os.environ, "MALLOC_ARENA_MAX": "1"},
    )


def test_a_thread_the_os_refuses_is_one_clear_error_and_no_pool_is_left() -> None:
    result = run_limited(
        """
from dispatchkit import DispatchError, Dispatcher, WorkerStartError
try:
    Dispatcher(workers=1000)
except WorkerStartError as exc:
    error = exc
report = {
    "error": str(error),
    "is_runtime_error": isinstance(error, RuntimeError),
    "is_dispatch_error": isinstance(error, DispatchError),
    "threads_left": threading.active_count(),
}
with Dispatcher(workers=2) as d:  # the process goes on, and a smaller pool works
    report["results"] = list(d.map(abs, [-1, -2, -3]))
print(json.dumps(report))
"""
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["is_runtime_error"]
    assert report["is_dispatch_error"]
    assert "refused to start worker thread" in report["error"]
    assert "of 1000" in report["error"]
    started = int(report["error"].split("worker thread ")[1].split()[0]) - 1
    assert started >= 1  # some threads had started: a half-started pool existed ...
    assert report["threads_left"] == 1  # ... and was stopped and joined
    assert report["results"] == [1, 2, 3]


def test_run_with_more_workers_than_the_os_allows_is_one_line() -> None:
    result = run_limited(
        """
code = dispatchkit.cli.main(
    ["run", "--workers", "100000", "--jobs", "1000", "--strategy", "pull", "--chunk", "1"]
)
print(threading.active_count())
sys.exit(code)
"""
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("dispatchkit run: error: the operating system refused")
    assert "of 100000" in lines[0]
    assert result.stdout.strip() == "1"  # no worker thread left behind
