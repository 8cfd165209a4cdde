"""The registry of worker kinds: every place that names one reads it here.

Settings, the CLI's ``--executor``, ``bench``, ``serve`` and the test harness
take their allowed values from :data:`WORKER_KINDS`; ``Dispatcher`` builds its
pool from :meth:`WorkerKind.pool_class`, and a consumer that runs any kind (the
bench) opens :meth:`WorkerKind.front_end_class` and hands it
:attr:`WorkerKind.takes_coroutines` jobs, so a new kind needs no edit there. A
pool or front-end module is imported only when its kind is used (the process
pool pulls in ``multiprocessing``).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

__all__ = ["WORKER_KINDS", "WorkerKind", "kind_names", "worker_kind"]


@dataclass(frozen=True, slots=True)
class WorkerKind:
    """One kind of worker, by name.

    Attributes:
        name: what ``executor=`` and ``--executor`` say.
        summary: one line for help texts.
        front_end: the dispatcher class that drives it.
        in_process: jobs run in the dispatcher's own process (so a handler
            may share its memory); False for worker processes.
        stops_running_jobs: a job past its timeout can be stopped (a thread
            cannot be: ``job_timeout`` is refused for it).
        pool: ``module:Class`` of the worker pool, imported on first use.
    """

    name: str
    summary: str
    front_end: Literal["Dispatcher", "AsyncDispatcher"]
    in_process: bool
    stops_running_jobs: bool
    pool: str

    def pool_class(self) -> Any:
        """The pool class (imported now)."""
        return _load(self.pool)

    def front_end_class(self) -> Any:
        """The dispatcher class that drives this kind (imported now)."""
        return _load(_FRONT_ENDS[self.front_end])

    @property
    def takes_coroutines(self) -> bool:
        """Jobs are coroutine functions, awaited on an event loop (else plain callables)."""
        return self.front_end == "AsyncDispatcher"


#: ``module:Class`` of each front end a kind can name.
_FRONT_ENDS: Final[Mapping[str, str]] = {
    "Dispatcher": "dispatchkit.dispatcher:Dispatcher",
    "AsyncDispatcher": "dispatchkit.async_dispatcher:AsyncDispatcher",
}


def _load(path: str) -> Any:
    """The attribute a ``module:attribute`` path names, its module imported now."""
    module, _, attribute = path.partition(":")
    return getattr(importlib.import_module(module), attribute)


#: Every worker kind, by name, in the order help texts list them.
WORKER_KINDS: Final[Mapping[str, WorkerKind]] = {
    kind.name: kind
    for kind in (
        WorkerKind(
            "thread",
            "one thread per worker",
            "Dispatcher",
            in_process=True,
            stops_running_jobs=False,
            pool="dispatchkit.executors.thread:ThreadWorkerPool",
        ),
        WorkerKind(
            "process",
            "one process per worker, for CPU-bound jobs",
            "Dispatcher",
            in_process=False,
            stops_running_jobs=True,
            pool="dispatchkit.executors.process:ProcessWorkerPool",
        ),
        WorkerKind(
            "async",
            "one asyncio task per worker, on one event loop",
            "AsyncDispatcher",
            in_process=True,
            stops_running_jobs=True,
            pool="dispatchkit.executors.asyncio:AsyncWorkerPool",
        ),
    )
}


def kind_names(*, front_end: str | None = None, in_process: bool | None = None) -> tuple[str, ...]:
    """Names of the worker kinds, optionally only those of one front end or placement."""
    return tuple(
        kind.name
        for kind in WORKER_KINDS.values()
        if (front_end is None or kind.front_end == front_end)
        and (in_process is None or kind.in_process == in_process)
    )


def worker_kind(name: str, *, front_end: str | None = None) -> WorkerKind:
    """The worker kind called ``name``.

    Raises:
        ValueError: no such kind (for ``front_end``, if given).
    """
    kind = WORKER_KINDS.get(name)
    if kind is None or (front_end is not None and kind.front_end != front_end):
        choices = ", ".join(kind_names(front_end=front_end))
        raise ValueError(f"unknown executor {name!r}: choose one of {choices}")
    return kind
