"""Dispatchers and workers on different machines, over Redis Streams (issue 6).

Needs the extra: ``pip install dispatchkit[redis]``. Importing :mod:`dispatchkit`
does not import this package.
"""

from .dispatcher import RedisDispatcher, RemoteStats
from .runners import RUNNERS, JobRunner, ThreadRunner, make_runner
from .worker import RedisWorker, WorkerReport, run_worker

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
