"""Process jobs that block on a file gate, importable by worker processes; and the
tests' wait for a file such a job writes."""

from __future__ import annotations

import time
from pathlib import Path

#: Seconds a gated job waits for its gate before giving up.
PATIENCE = 10


def hold(started: str, gate: str) -> str:
    """Say it started (a file), then wait until the gate file exists."""
    Path(started).write_text("started")
    for _ in range(PATIENCE * 100):
        if Path(gate).exists():
            return "through"
        time.sleep(0.01)
    raise TimeoutError("the gate never opened")


def touch(path: str) -> None:
    Path(path).write_text("ran")


def wait_for_file(path: Path, timeout: float = 10) -> str:
    """The text of ``path`` once a job has written some (AssertionError after ``timeout`` s)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text():
            return path.read_text()
        time.sleep(0.01)
    raise AssertionError(f"{path} never appeared")
