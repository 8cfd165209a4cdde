"""A job argument that says when a process frees it: importable by worker processes."""

from __future__ import annotations

import os
from pathlib import Path


class FreedMark:
    """Writes ``<directory>/freed-<pid>`` when the process holding a copy frees it."""

    def __init__(self, directory: str) -> None:
        self.directory = directory

    def __del__(self) -> None:
        Path(self.directory, f"freed-{os.getpid()}").write_text("freed")


def pid_of_worker(_mark: FreedMark) -> int:
    return os.getpid()
