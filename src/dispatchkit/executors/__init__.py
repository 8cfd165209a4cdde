"""Where jobs run: the worker kinds behind a dispatcher, by name in :mod:`.registry`."""

from .base import WorkerPool
from .registry import WORKER_KINDS, WorkerKind, kind_names, worker_kind
from .thread import ThreadWorkerPool

__all__ = [
    "WORKER_KINDS",
    "ThreadWorkerPool",
    "WorkerKind",
    "WorkerPool",
    "kind_names",
    "worker_kind",
]
