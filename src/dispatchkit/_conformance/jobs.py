"""The jobs the conformance checks run, registered so remote workers can run them too.

A remote worker runs them after ``--import dispatchkit._conformance.jobs``.
Jobs that leave a trace append one short line to a log file with
``O_APPEND`` (atomic for a line this small), so the order of the lines is
the order in which the runs happened, whichever thread, process or host of
one machine ran them.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path
from typing import Any

from dispatchkit.registry import job

#: Seconds a held job waits for its gate at most (a failed check must not hang a worker).
HOLD_LIMIT = 20.0


def _log(path: str, line: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{line}\n".encode())
    finally:
        os.close(fd)


def read_log(path: str) -> list[list[str]]:
    """The lines a log holds so far, each split into its words."""
    log = Path(path)
    if not log.exists():
        return []
    return [line.split() for line in log.read_text().splitlines()]


@job("dispatchkit.conformance.square")
def square(x: int) -> int:
    return x * x


@job("dispatchkit.conformance.add")
def add(a: int, b: int) -> int:
    return a + b


@job("dispatchkit.conformance.flaky")
def flaky(x: int) -> int:
    """``x``, except that every multiple of 3 raises ``ValueError``."""
    if x % 3 == 0:
        raise ValueError(f"{x} is a multiple of 3")
    return x


@job("dispatchkit.conformance.where")
def where(x: int) -> list[Any]:
    """``[x, "pid:runner"]``: where a remote worker, known by no index, ran it.

    The runner is the name of the thread that ran the job without its
    ``-worker-N`` tail: workers that share one process tell themselves apart by
    it when their runner threads carry the worker's name.
    """
    runner = threading.current_thread().name.rsplit("-worker-", 1)[0]
    return [x, f"{os.getpid()}:{runner}"]


# The jobs below take one list argument, ``[log path, ...]``, so that ``submit``,
# ``map`` and ``dispatch`` of every front end can run them alike.


@job("dispatchkit.conformance.note")
def note(entry: list[Any]) -> int:
    """``[path, x]``: log ``x pid`` (one line per run), return ``x``."""
    path, x = entry
    _log(path, f"{x} {os.getpid()}")
    return int(x)


@job("dispatchkit.conformance.span")
def span(entry: list[Any]) -> int:
    """``[path, key, position]``: log ``s key position pid`` at the start, ``e ...`` at the end."""
    path, key, position = entry
    _log(path, f"s {key} {position} {os.getpid()}")
    time.sleep(0.001)
    _log(path, f"e {key} {position} {os.getpid()}")
    return int(position)


@job("dispatchkit.conformance.hold")
def hold(entry: list[Any]) -> int:
    """``[path, x]``: log ``x`` as started, then wait until the file ``path + '.open'`` exists
    (or its directory is gone: the check is over, and did not wait for this job)."""
    path, x = entry
    _log(path, f"{x} {os.getpid()}")
    gate = Path(f"{path}.open")
    deadline = time.monotonic() + HOLD_LIMIT
    while not gate.exists() and gate.parent.exists() and time.monotonic() < deadline:
        time.sleep(0.005)
    return int(x)


@job("dispatchkit.conformance.hold_async")
async def hold_async(entry: list[Any]) -> int:
    """:func:`hold` for an event loop: it waits without blocking the loop."""
    path, x = entry
    _log(path, f"{x} {os.getpid()}")
    gate = Path(f"{path}.open")
    deadline = time.monotonic() + HOLD_LIMIT
    while not gate.exists() and gate.parent.exists() and time.monotonic() < deadline:
        await asyncio.sleep(0.005)
    return int(x)
