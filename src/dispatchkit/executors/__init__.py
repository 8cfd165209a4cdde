"""Where jobs run: the worker kinds behind a dispatcher, by name in :mod:`.registry`.

Each name is imported when first used: reading the registry (settings, the CLI's
--executor, a remote worker) does not load the thread pool.
"""

from typing import TYPE_CHECKING

from dispatchkit._lazy import lazy_getattr

if TYPE_CHECKING:
    from .base import WorkerPool
    from .registry import WORKER_KINDS, WorkerKind, kind_names, worker_kind
    from .thread import ThreadWorkerPool

__getattr__ = lazy_getattr(
    __name__,
    globals(),
    {
        "WorkerPool": "base",
        "WORKER_KINDS": "registry",
        "WorkerKind": "registry",
        "kind_names": "registry",
        "worker_kind": "registry",
        "ThreadWorkerPool": "thread",
    },
)

__all__ = [
    "WORKER_KINDS",
    "ThreadWorkerPool",
    "WorkerKind",
    "WorkerPool",
    "kind_names",
    "worker_kind",
]
