"""A progress bar for long CLI runs, drawn with rich on stderr.

It appears only after ``delay`` seconds, so quick runs print nothing extra.
A background thread polls the current dispatcher's counters ten times a
second: the workers themselves never pay for progress reporting.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Final, Protocol

if TYPE_CHECKING:
    from .stats import DispatcherStats


class _HasStats(Protocol):
    def stats(self) -> DispatcherStats: ...


__all__ = ["RunProgress", "new_bar"]

#: Seconds a run must last before the bar appears.
SHOW_AFTER: Final = 1.0
#: Seconds between two looks at the counters.
POLL_EVERY: Final = 0.1


def new_bar(description: str) -> Any:
    """A transient rich progress bar on stderr: description, bar, n/total, times.

    ``description`` is the format of the first column (a rich ``TextColumn``).
    """
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn(f"[bold]{description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    )


class RunProgress:
    """Progress over several dispatcher runs with a known total of jobs."""

    def __init__(self, total: int, enabled: bool, description: str = "jobs") -> None:
        self._total = total
        self._enabled = enabled
        self._description = description
        self._done_before = 0  # jobs of the runs already finished
        self._current: _HasStats | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def follow(self, dispatcher: _HasStats) -> None:
        """Count the jobs of ``dispatcher`` from now on."""
        self._current = dispatcher

    def finish_one(self, jobs: int) -> None:
        """A run of ``jobs`` jobs has ended."""
        self._done_before += jobs
        self._current = None

    def _completed(self) -> int:
        current = self._current
        running = current.stats().finished if current is not None else 0
        return self._done_before + running

    def _poll(self) -> None:
        if self._stop.wait(SHOW_AFTER):
            return
        with new_bar("{task.description}") as progress:
            task = progress.add_task(self._description, total=self._total)
            while not self._stop.wait(POLL_EVERY):
                progress.update(task, completed=self._completed())

    def __enter__(self) -> RunProgress:
        if self._enabled:
            self._thread = threading.Thread(target=self._poll, name="progress", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
