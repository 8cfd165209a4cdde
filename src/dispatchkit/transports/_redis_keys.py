"""Every Redis key name dispatchkit uses, in one place.

All keys of one queue share the prefix ``{namespace}:{queue}``; a test (or a
tenant) picks its own namespace so that runs never collide.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

__all__ = ["DEFAULT_NAMESPACE", "GROUP", "Keys"]

#: Namespace of every key unless one is given.
DEFAULT_NAMESPACE: Final = "dispatchkit"

#: The consumer group every job stream is read by.
GROUP: Final = "workers"


@dataclass(frozen=True, slots=True)
class Keys:
    """The key names of one queue."""

    namespace: str
    queue: str

    @property
    def prefix(self) -> str:
        return f"{self.namespace}:{self.queue}"

    @property
    def pull(self) -> str:
        """The stream of the pull strategy, read by every worker."""
        return f"{self.prefix}:pull"

    def worker_stream(self, worker: str) -> str:
        """The stream of one worker (round_robin and batch)."""
        return f"{self.prefix}:w:{worker}"

    def partition(self, index: int) -> str:
        """The stream of one partition (key strategy)."""
        return f"{self.prefix}:p:{index}"

    def lease(self, index: int) -> str:
        """Which worker reads a partition now (a string with a time to live)."""
        return f"{self.prefix}:lease:{index}"

    @property
    def workers(self) -> str:
        """Sorted set of registered workers, scored by their last heartbeat (unix seconds)."""
        return f"{self.prefix}:workers"

    @property
    def worker_streams(self) -> str:
        """Set of every worker stream that may hold entries (to find those of departed workers)."""
        return f"{self.prefix}:streams"

    @property
    def draining(self) -> str:
        """Set of workers that are shutting down: they get no new jobs."""
        return f"{self.prefix}:draining"

    @property
    def dead_letter(self) -> str:
        """Entries that could not be run, each with its error."""
        return f"{self.prefix}:dead"

    def results(self, dispatcher: str) -> str:
        """Where workers store the outcomes of one dispatcher's jobs."""
        return f"{self.prefix}:r:{dispatcher}"

    def pattern(self) -> str:
        """A SCAN pattern matching every key of this queue."""
        return f"{self.prefix}:*"
