"""Where a remote worker runs its jobs: the ``--executor`` kinds.

A runner takes zero-argument callables and runs them with bounded
concurrency. Only threads exist for now; a process or asyncio runner plugs in
by implementing :class:`JobRunner` and adding itself to :data:`RUNNERS`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from queue import SimpleQueue
from typing import Final, Protocol

__all__ = ["RUNNERS", "JobRunner", "ThreadRunner", "make_runner"]

logger = logging.getLogger(__name__)


class JobRunner(Protocol):
    """Runs submitted callables, ``concurrency`` at a time."""

    concurrency: int

    def start(self) -> None:
        """Start the runner's workers."""

    def submit(self, task: Callable[[], None]) -> None:
        """Queue ``task``; it must catch its own errors."""

    def shutdown(self, wait: bool = True) -> None:
        """Run what is queued, then stop; safe to call more than once."""


class ThreadRunner:
    """``concurrency`` threads reading one queue."""

    def __init__(self, concurrency: int, name: str = "dispatchkit-remote") -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        self.concurrency = concurrency
        self._queue: SimpleQueue[Callable[[], None] | None] = SimpleQueue()
        self._threads = [
            threading.Thread(target=self._loop, name=f"{name}-worker-{i}", daemon=True)
            for i in range(concurrency)
        ]
        self._stopped = False

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def submit(self, task: Callable[[], None]) -> None:
        self._queue.put(task)

    def shutdown(self, wait: bool = True) -> None:
        if not self._stopped:
            self._stopped = True
            for _ in self._threads:
                self._queue.put(None)
        if wait:
            for thread in self._threads:
                if thread.is_alive():
                    thread.join()

    def _loop(self) -> None:
        get = self._queue.get
        while True:
            task = get()
            if task is None:
                return
            try:
                task()
            except BaseException:
                # Tasks catch jobs' errors themselves: this is a bug in dispatchkit.
                logger.critical("remote worker thread: internal error", exc_info=True)


#: Runner kinds by ``--executor`` name.
RUNNERS: Final[dict[str, Callable[[int], JobRunner]]] = {"thread": ThreadRunner}


def make_runner(kind: str, concurrency: int) -> JobRunner:
    """The runner of ``kind`` with ``concurrency`` workers.

    Raises:
        ValueError: an unknown kind, or a concurrency below 1.
    """
    factory = RUNNERS.get(kind)
    if factory is None:
        raise ValueError(
            f"executor {kind!r} is not available for remote workers: choose "
            + ", ".join(sorted(RUNNERS))
        )
    return factory(concurrency)
