"""The protocol every worker kind implements."""

from __future__ import annotations

from typing import Protocol

__all__ = ["WorkerPool"]


class WorkerPool(Protocol):
    """Runs one worker per inbox until the inboxes close and drain.

    The dispatcher owns the inboxes and the worker states; a pool only decides
    where a worker's loop runs (a thread, a process, a task).
    """

    def start(self) -> None:
        """Start every worker."""

    def join(self, timeout: float | None = None) -> bool:
        """Wait for every worker to finish; False if some still run after ``timeout``."""

    def alive(self) -> int:
        """How many workers are still running."""

    def kill(self) -> bool:
        """Stop running jobs now, past a stop's deadline; False if this kind cannot."""
