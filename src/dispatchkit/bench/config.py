"""One configuration to measure: a workload on one worker kind with one setting."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from dispatchkit.executors.registry import kind_names

__all__ = ["EXECUTORS", "PEERS", "Config"]

#: dispatchkit's worker kinds, in the order they are measured.
EXECUTORS: Final = kind_names()

#: The standard library's ways to run the same jobs, measured beside dispatchkit.
PEERS: Final = ("ThreadPoolExecutor", "ProcessPoolExecutor", "multiprocessing.Pool", "asyncio")


@dataclass(frozen=True, slots=True)
class Config:
    """A point of the sweep.

    Attributes:
        workload: the workload's name.
        executor: ``thread``, ``process`` or ``async`` for dispatchkit; a
            peer's name (one of :data:`PEERS`) otherwise.
        strategy: dispatchkit's strategy; None for a peer.
        chunk: jobs per hand-off (for peers, the ``chunksize`` where they take one).
        workers: number of workers.
    """

    workload: str
    executor: str
    strategy: str | None
    chunk: int
    workers: int

    @property
    def is_peer(self) -> bool:
        return self.strategy is None

    @property
    def label(self) -> str:
        """A short name for tables and charts, e.g. ``pull c32 thread x8``."""
        if self.strategy is None:
            chunk = f" c{self.chunk}" if self.chunk != 1 else ""
            return f"{self.executor}{chunk} x{self.workers}"
        return f"{self.strategy} c{self.chunk} {self.executor} x{self.workers}"

    def to_dict(self) -> dict[str, object]:
        return {
            "workload": self.workload,
            "executor": self.executor,
            "strategy": self.strategy,
            "chunk": self.chunk,
            "workers": self.workers,
            "label": self.label,
        }
