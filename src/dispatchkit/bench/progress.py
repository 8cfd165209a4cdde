"""A rich progress bar over the runs of a bench, on stderr."""

from __future__ import annotations

from typing import Any

from dispatchkit._progress import new_bar

from .config import Config

__all__ = ["BenchProgress"]


class BenchProgress:
    """Counts runs; shows the configuration being measured. A no-op when disabled."""

    def __init__(self, total: int, enabled: bool) -> None:
        self._total = total
        self._enabled = enabled
        self._progress: Any = None
        self._task: Any = None

    def __enter__(self) -> BenchProgress:
        if self._enabled:
            self._progress = new_bar("{task.description:<44}")
            self._progress.start()
            self._task = self._progress.add_task("runs", total=self._total)
        return self

    def on_run(self, done: int, total: int, config: Config) -> None:
        """Called before each run: show what runs now and how many are done."""
        if self._progress is not None:
            self._progress.update(
                self._task,
                completed=done,
                total=total,
                description=f"{config.workload}: {config.label}",
            )

    def __exit__(self, *exc_info: object) -> None:
        if self._progress is not None:
            self._progress.stop()
