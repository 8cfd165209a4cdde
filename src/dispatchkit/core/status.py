"""How a job stands: the one status vocabulary of every front end and worker kind."""

from __future__ import annotations

import enum

__all__ = ["JobStatus"]


class JobStatus(enum.Enum):
    """Where a job is in its life.

    Handles keep their state as one of these members and compare it by
    identity (``is``), as cheap as comparing small ints.
    """

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self is not JobStatus.PENDING and self is not JobStatus.RUNNING
