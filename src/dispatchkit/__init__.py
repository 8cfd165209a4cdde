"""dispatchkit: dispatch jobs to a pool of workers with the strategy you choose.

    >>> from dispatchkit import Dispatcher
    >>> with Dispatcher(workers=4, strategy="pull") as d:
    ...     handle = d.submit(pow, 2, 10)
    ...     squares = list(d.map(lambda x: x * x, range(5)))
    >>> handle.result(), squares
    (1024, [0, 1, 4, 9, 16])

Importing this package loads only the standard library; the dispatchers, the
settings, the strategies and the stats load when first named, so that a remote
worker, which uses none of them, does not start them up.
"""

from typing import TYPE_CHECKING

from ._lazy import lazy_getattr
from ._waiting import ALL_COMPLETED, FIRST_COMPLETED, FIRST_EXCEPTION, as_completed, wait
from .errors import (
    ClosedError,
    DispatchError,
    ForkedError,
    JobCancelled,
    QueueFull,
    TimedOut,
    WorkerLost,
    WorkerStartError,
)
from .job import Job, JobHandle, JobStatus, Outcome
from .retry import RetryPolicy

if TYPE_CHECKING:
    from .async_dispatcher import AsyncDispatcher, AsyncJobHandle
    from .dispatcher import Dispatcher
    from .settings import Settings
    from .stats import DispatcherStats, WorkerStats
    from .strategies import Auto, Batch, ByKey, Pull, RoundRobin, Strategy, parse_strategy

#: Modules that ``import dispatchkit`` used to load, still reached as its attributes.
_SUBMODULES = ("executors", "settings", "stats", "strategies")

#: The names imported when first used, and the module of each.
__getattr__ = lazy_getattr(
    __name__,
    globals(),
    {
        "AsyncDispatcher": "async_dispatcher",
        "AsyncJobHandle": "async_dispatcher",
        "Dispatcher": "dispatcher",
        "Settings": "settings",
        "DispatcherStats": "stats",
        "WorkerStats": "stats",
        **dict.fromkeys(
            ("Auto", "Batch", "ByKey", "Pull", "RoundRobin", "Strategy", "parse_strategy"),
            "strategies",
        ),
    },
    submodules=_SUBMODULES,
)


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__, *_SUBMODULES})


__version__ = "0.1.0"

__all__ = [
    "ALL_COMPLETED",
    "FIRST_COMPLETED",
    "FIRST_EXCEPTION",
    "AsyncDispatcher",
    "AsyncJobHandle",
    "Auto",
    "Batch",
    "ByKey",
    "ClosedError",
    "DispatchError",
    "Dispatcher",
    "DispatcherStats",
    "ForkedError",
    "Job",
    "JobCancelled",
    "JobHandle",
    "JobStatus",
    "Outcome",
    "Pull",
    "QueueFull",
    "RetryPolicy",
    "RoundRobin",
    "Settings",
    "Strategy",
    "TimedOut",
    "WorkerLost",
    "WorkerStartError",
    "WorkerStats",
    "as_completed",
    "parse_strategy",
    "wait",
]
