"""Where a remote worker runs its jobs: the ``--executor`` kinds.

A runner takes zero-argument callables and runs them with bounded
concurrency: :class:`ThreadRunner` on ``concurrency`` threads;
:class:`ProcessRunner` on as many threads, each handing its job's function to
one of ``concurrency`` worker processes (a local process ``Dispatcher``:
CPU-bound jobs run in parallel, a process that dies fails only its job); and
:class:`AsyncRunner` as ``concurrency`` tasks on one event loop (in a thread
of its own), where a callable may return an awaitable to be awaited. Another
kind plugs in by implementing :class:`JobRunner` and adding itself to
:data:`RUNNERS`.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
from collections.abc import Awaitable, Callable
from queue import SimpleQueue
from typing import TYPE_CHECKING, Final, Protocol

if TYPE_CHECKING:  # the process kind imports it when it starts: a thread worker never does
    from dispatchkit.dispatcher import Dispatcher

__all__ = [
    "RUNNERS",
    "AsyncRunner",
    "JobRunner",
    "ProcessRunner",
    "Task",
    "ThreadRunner",
    "make_runner",
]

logger = logging.getLogger(__name__)

#: What a runner runs: a call that may return an awaitable (awaited on a loop).
Task = Callable[[], Awaitable[None] | None]


class JobRunner(Protocol):
    """Runs submitted callables, ``concurrency`` at a time."""

    concurrency: int
    #: Whether tasks run on an event loop (and may return awaitables).
    on_loop: bool
    #: Worker processes that run the jobs' functions, for the process kind.
    pool: Dispatcher | None

    def start(self) -> None:
        """Start the runner's workers."""

    def submit(self, task: Task) -> None:
        """Queue ``task``; it must catch its own errors."""

    def shutdown(self, wait: bool = True) -> None:
        """Run what is queued, then stop; safe to call more than once."""


def _checked_concurrency(concurrency: int) -> int:
    """``concurrency``, which a runner needs to be at least 1.

    Raises:
        ValueError: it is less.
    """
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, got {concurrency}")
    return concurrency


class ThreadRunner:
    """``concurrency`` threads reading one queue."""

    on_loop = False
    pool: Dispatcher | None = None

    def __init__(self, concurrency: int, name: str = "dispatchkit-remote") -> None:
        self.concurrency = _checked_concurrency(concurrency)
        self._queue: SimpleQueue[Task | None] = SimpleQueue()
        self._threads = [
            threading.Thread(target=self._loop, name=f"{name}-worker-{i}", daemon=True)
            for i in range(concurrency)
        ]
        self._stopped = False

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def submit(self, task: Task) -> None:
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


class ProcessRunner(ThreadRunner):
    """``concurrency`` threads, each running its jobs' functions in worker processes.

    :attr:`pool` is a process :class:`~dispatchkit.Dispatcher` with
    ``concurrency`` workers, made by :meth:`start`; the threads wait on it.
    """

    def __init__(self, concurrency: int, name: str = "dispatchkit-remote") -> None:
        super().__init__(concurrency, name)
        self.pool: Dispatcher | None = None

    def start(self) -> None:
        from dispatchkit.dispatcher import Dispatcher

        self.pool = Dispatcher(
            workers=self.concurrency, executor="process", strategy="pull", name="remote"
        )
        super().start()

    def shutdown(self, wait: bool = True) -> None:
        super().shutdown(wait)
        if wait and self.pool is not None:
            self.pool.shutdown(wait=True)


class AsyncRunner:
    """``concurrency`` tasks on one event loop, run by a thread of its own.

    Each task is called on the loop; if it returns an awaitable, that is
    awaited, so up to ``concurrency`` coroutine jobs wait at once. Tasks come
    from any thread (:meth:`submit` is thread-safe).
    """

    on_loop = True
    pool: Dispatcher | None = None

    def __init__(self, concurrency: int, name: str = "dispatchkit-remote") -> None:
        self.concurrency = _checked_concurrency(concurrency)
        self._loop: asyncio.AbstractEventLoop | None = None  # made by the runner's thread
        self._queue: asyncio.Queue[Task | None] | None = None
        self._thread = threading.Thread(target=self._run, name=f"{name}-loop", daemon=True)
        self._ready = threading.Event()
        self._stopped = False

    def start(self) -> None:
        self._thread.start()
        self._ready.wait()

    def submit(self, task: Task) -> None:
        loop, queue = self._loop, self._queue
        assert loop is not None, "start() the runner first"
        assert queue is not None
        if self._stopped:
            # Its entry stays pending: another worker claims it once idle.
            logger.error("remote worker: a task came after shutdown and was not run")
            return
        loop.call_soon_threadsafe(queue.put_nowait, task)

    def shutdown(self, wait: bool = True) -> None:
        loop, queue = self._loop, self._queue
        if not self._stopped and loop is not None and queue is not None:
            self._stopped = True
            for _ in range(self.concurrency):  # after every task queued so far
                loop.call_soon_threadsafe(queue.put_nowait, None)
        if wait and self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        # asyncio.Runner closes the loop as asyncio.run does: leftover tasks
        # cancelled, async generators and the default executor shut down.
        with asyncio.Runner() as runner:
            self._loop = runner.get_loop()
            runner.run(self._main())

    async def _main(self) -> None:
        self._queue = asyncio.Queue()
        self._ready.set()
        async with asyncio.TaskGroup() as group:
            for _ in range(self.concurrency):
                group.create_task(self._consume(self._queue))

    async def _consume(self, queue: asyncio.Queue[Task | None]) -> None:
        while (task := await queue.get()) is not None:
            try:
                result = task()
                if result is not None and inspect.isawaitable(result):
                    await result
            except asyncio.CancelledError:
                raise
            except BaseException:
                # Tasks catch jobs' errors themselves: this is a bug in dispatchkit.
                logger.critical("remote worker task: internal error", exc_info=True)


#: Runner kinds by ``--executor`` name.
RUNNERS: Final[dict[str, Callable[[int], JobRunner]]] = {
    "thread": ThreadRunner,
    "process": ProcessRunner,
    "async": AsyncRunner,
}


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
