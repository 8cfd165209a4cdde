"""One configuration to measure: a workload on one worker kind with one setting."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from dispatchkit.executors.registry import kind_names

__all__ = ["DEFAULTS_LABEL", "EXECUTORS", "PEERS", "Config"]

#: How the configuration a user gets with no arguments is named in reports.
DEFAULTS_LABEL: Final = "dispatchkit defaults"

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
        chunk: jobs per hand-off (for peers, the ``chunksize`` where they take one),
            or ``"auto"`` (the defaults' adaptive chunk).
        workers: number of workers.
    """

    workload: str
    executor: str
    strategy: str | None
    chunk: int | Literal["auto"]
    workers: int

    @classmethod
    def defaults(cls, workload: str, executor: str, workers: int) -> Config:
        """What a user gets with no arguments but the worker kind and count."""
        return cls(workload, executor, "auto", "auto", workers)

    @property
    def peer_chunk(self) -> int:
        """The ``chunksize`` a stdlib peer takes (peers have no ``"auto"``)."""
        return self.chunk if isinstance(self.chunk, int) else 1

    @property
    def is_defaults(self) -> bool:
        return self.strategy == "auto" and self.chunk == "auto"

    @property
    def is_peer(self) -> bool:
        return self.strategy is None

    @property
    def label(self) -> str:
        """A short name for tables and charts, e.g. ``pull c32 thread x8``."""
        if self.strategy is None:
            chunk = f" c{self.chunk}" if self.chunk != 1 else ""
            return f"{self.executor}{chunk} x{self.workers}"
        if self.is_defaults:
            return f"{DEFAULTS_LABEL} {self.executor} x{self.workers}"
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
