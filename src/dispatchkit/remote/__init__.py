"""Dispatchers and workers on different machines, over Redis Streams.

Needs the extra: ``pip install dispatchkit[redis]``. Importing :mod:`dispatchkit`
does not import this package.
"""

from typing import TYPE_CHECKING

from dispatchkit._lazy import lazy_getattr

if TYPE_CHECKING:
    from .dispatcher import RedisDispatcher, RemoteStats
    from .runners import RUNNERS, JobRunner, ThreadRunner, make_runner
    from .worker import RedisWorker, WorkerReport, run_worker

# Each name is imported when first used: a worker does not load the dispatcher's
# half, nor a dispatcher the worker's.
__getattr__ = lazy_getattr(
    __name__,
    globals(),
    {
        "RedisDispatcher": "dispatcher",
        "RemoteStats": "dispatcher",
        "RUNNERS": "runners",
        "JobRunner": "runners",
        "ThreadRunner": "runners",
        "make_runner": "runners",
        "RedisWorker": "worker",
        "WorkerReport": "worker",
        "run_worker": "worker",
    },
)

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
