"""Dispatchers and workers on different machines, over Redis Streams (issue 6).

Needs the extra: ``pip install dispatchkit[redis]``. Importing :mod:`dispatchkit`
does not import this package.
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .dispatcher import RedisDispatcher, RemoteStats
    from .runners import RUNNERS, JobRunner, ThreadRunner, make_runner
    from .worker import RedisWorker, WorkerReport, run_worker

# Each name is imported when first used: a worker does not load the dispatcher's
# half, nor a dispatcher the worker's.
_LAZY = {
    "RedisDispatcher": "dispatcher",
    "RemoteStats": "dispatcher",
    "RUNNERS": "runners",
    "JobRunner": "runners",
    "ThreadRunner": "runners",
    "make_runner": "runners",
    "RedisWorker": "worker",
    "WorkerReport": "worker",
    "run_worker": "worker",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "RUNNERS",
    "JobRunner",
    "RedisDispatcher",
    "RedisWorker",
    "RemoteStats",
    "ThreadRunner",
    "WorkerReport",
    "make_runner",
    "run_worker",
]
