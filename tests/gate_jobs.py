"""Process jobs that block on a file gate: importable by worker processes."""

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
