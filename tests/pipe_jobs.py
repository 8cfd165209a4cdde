"""Process jobs that look into their worker's pipe: has the next task arrived, unread?

A worker process reads its next task only once it has replied to the current
one, so a job that sees data waiting on its process's end of the pipe proves
that the dispatcher queued the next task before this one finished.
"""

from __future__ import annotations

import gc
import os
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from tests.process_fault_jobs import return_ghost

#: Seconds a job waits for the next task to arrive, or for its gate.
PATIENCE = 10.0


def next_task_waits(patience: float = PATIENCE) -> bool:
    """Whether, within ``patience`` seconds, data arrives on this process's pipe."""
    conns = [o for o in gc.get_objects() if type(o) is Connection and not o.closed]
    deadline = time.monotonic() + patience
    while True:
        if any(conn.poll(0) for conn in conns):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)


def _say(marker: str) -> None:
    seen = "seen" if next_task_waits() else "unseen"
    Path(marker).write_text(f"{seen} {os.getpid()}")


def hold_after_next_task(marker: str, gate: str) -> str:
    """Write to ``marker`` whether the next task came (and our pid), then wait for ``gate``."""
    _say(marker)
    deadline = time.monotonic() + PATIENCE
    while not Path(gate).exists():
        if time.monotonic() >= deadline:
            raise TimeoutError("the gate never opened")
        time.sleep(0.01)
    return "through"


def sleep_after_next_task(marker: str, seconds: float) -> None:
    """Write to ``marker`` whether the next task came (and our pid), then sleep."""
    _say(marker)
    time.sleep(seconds)


def ghost_after_next_task(_: object = None) -> object:
    """Once the next task is queued, what the dispatcher cannot load ("unseen" if none came)."""
    return return_ghost() if next_task_waits() else "unseen"


def count_run(path: str) -> int:
    """Append our pid to ``path`` (one line per run) and return it."""
    with Path(path).open("a") as out:
        out.write(f"{os.getpid()}\n")
    return os.getpid()


def die_once_after_next_task(path: str) -> str:
    """The first time: once the next task is queued, die (as if killed); then succeed."""
    marker = Path(path)
    if not marker.exists():
        marker.write_text("seen" if next_task_waits() else "unseen")
        os._exit(9)
    return marker.read_text()


def run_entry(entry: tuple[Any, ...]) -> object:
    """``(name, *args)``: call this module's ``name(*args)`` (one function for ``dispatch``)."""
    name, *args = entry
    return globals()[name](*args)
