"""Process workers: CPU-bound Python runs in parallel, one process per worker.

    Inbox[i] ──get──▶ liaison thread i ──Task (one pickle per chunk)──▶ pipe ──▶ process i
                          ▲                                                      │ runs the jobs
                          └───────────────── results ◀── pipe ◀──────────────────┘

Each worker is a pair: a process that runs jobs, and a *liaison* thread in the
dispatcher's process that feeds it and completes the handles, map results and
counters with what comes back. The liaison keeps the pipe full: while the
process runs one task, the next waits in its pipe (at most one, as in the
stdlib's pool), so the process never sits idle for a round trip between two; a
task queued behind one whose process dies had not started, and is sent again.
The liaison waits on
the pipe *and* on the process's sentinel, so a worker that dies (a signal,
``os._exit``, a segfault) is noticed at once: the message it held fails with
``WorkerLost`` (or is retried, if the policy allows), a new process takes its
place, and every other job goes on. Per-job timeouts are enforced the same
way: past its deadline the process is killed, the job is ``TimedOut``, and the
jobs of its chunk that had not started run on the replacement. A process that
dies while idle is seen before the next hand-off (a poll of its sentinel) and
replaced, so no job is blamed for it.

After ``os.fork()`` the worker processes stay the parent's: the child forgets
them (see :func:`_let_go_after_fork`) and its copy of the dispatcher refuses work.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import multiprocessing.forkserver
import multiprocessing.process
import os
import sys
import threading
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from time import monotonic
from typing import Any, Final

from dispatchkit._durations import check_seconds
from dispatchkit._inbox import Inbox
from dispatchkit._steal import SleepBoard, Thief
from dispatchkit.core import WorkerState

from ._liaison import Liaison, PoolHealth

__all__ = ["START_METHODS", "ProcessOptions", "ProcessWorkerPool"]

logger = logging.getLogger(__name__)

#: Start methods a dispatcher accepts.
START_METHODS: Final = ("fork", "forkserver", "spawn")


def _fork_server_preload() -> list[str]:
    """The modules the fork server imports once, so that no worker it forks pays
    for them before its first job.

    A worker runs ``dispatchkit.executors._child``; and, started from a script,
    it first runs the script's top level again (as ``__mp_main__``; the stdlib's
    own ``"__main__"`` preload does not reach a worker here), whose imports are
    then found loaded: a script that imports ``Dispatcher``, and the ``dispatchkit``
    command when it is what runs (10 to 30 ms a worker on a small machine), with
    the module of the bench's jobs.
    """
    always = [
        "dispatchkit",
        "dispatchkit.dispatcher",
        "dispatchkit.executors._child",
        "dispatchkit.demo",  # the seed's job, for `dispatchkit run`
    ]
    # The command, and the bench's jobs, where this process runs them.
    loaded = [
        name for name in ("dispatchkit.cli", "dispatchkit.bench.workloads") if name in sys.modules
    ]
    return always + loaded


@dataclass(frozen=True, slots=True)
class ProcessOptions:
    """How worker processes are started and recycled.

    Attributes:
        start_method: ``fork``, ``forkserver`` or ``spawn`` (default
            ``forkserver``: safe with threads, and quick after the first start).
        initializer: called as ``initializer(*initargs)`` in each new process.
        max_jobs_per_worker: replace a process after this many jobs (None: never).
        job_timeout: seconds any one job may run (None: no limit).
    """

    start_method: str = "forkserver"
    initializer: Callable[..., object] | None = None
    initargs: tuple[Any, ...] = ()
    max_jobs_per_worker: int | None = None
    job_timeout: float | None = None

    @classmethod
    def given(
        cls,
        worker_processes: bool,
        *,
        start_method: str | None,
        initializer: Callable[..., object] | None,
        initargs: tuple[Any, ...],
        max_jobs_per_worker: int | None,
        job_timeout: float | None,
    ) -> ProcessOptions | None:
        """The options of a dispatcher's arguments, or None for a kind without processes.

        Raises:
            ValueError: a process option given to a kind without worker processes
                (threads take ``initializer`` and ``initargs`` too).
        """
        if worker_processes:
            return cls(
                start_method or "forkserver",
                initializer,
                initargs,
                max_jobs_per_worker,
                job_timeout,
            )
        given = {"start_method": start_method, "max_jobs_per_worker": max_jobs_per_worker}
        named = [name for name, value in given.items() if value is not None]
        if named:
            raise ValueError(f"{', '.join(named)} need executor='process'")
        if initializer is not None:
            # Thread workers run an initializer too (once per thread, before any job):
            # of these options they read only initializer and initargs.
            return cls("forkserver", initializer, initargs, None, None)
        if initargs:
            raise ValueError("initargs need an initializer")
        return None

    def __post_init__(self) -> None:
        if self.start_method not in START_METHODS:
            raise ValueError(
                f"unknown start method {self.start_method!r}: choose one of "
                + ", ".join(START_METHODS)
            )
        if self.max_jobs_per_worker is not None and (
            isinstance(self.max_jobs_per_worker, bool)
            or not isinstance(self.max_jobs_per_worker, int)
            or self.max_jobs_per_worker < 1
        ):
            raise ValueError(
                f"max_jobs_per_worker must be a whole number of at least 1, "
                f"got {self.max_jobs_per_worker!r}"
            )
        if self.job_timeout is not None:
            check_seconds("job_timeout", self.job_timeout)
        if self.initializer is not None and not callable(self.initializer):
            raise TypeError("initializer must be callable")


#: Every pool not yet garbage-collected, for :func:`_let_go_after_fork`.
_pools: weakref.WeakSet[ProcessWorkerPool] = weakref.WeakSet()

#: Whether a pool of this process uses the fork server (see :func:`_let_go_after_fork`).
_uses_fork_server = False


def _let_go_after_fork() -> None:
    """In a child made by ``os.fork()``: the worker processes are the parent's.

    multiprocessing's exit handler in the child would otherwise SIGTERM every
    daemon process it finds in its inherited list of children, the parent's
    workers among them; forgetting them also means that nothing in the child
    can kill them. The fork server is the parent's too: its ``ensure_running``
    would fail in the child (``waitpid`` of a process that is not its child),
    so the child is set to start its own, and a new dispatcher there works.
    """
    children: Any = getattr(multiprocessing.process, "_children", None)
    for pool in list(_pools):
        for liaison in pool._liaisons:
            liaison.let_go(children if isinstance(children, set) else None)
    _pools.clear()
    server: Any = getattr(multiprocessing.forkserver, "_forkserver", None)
    if _uses_fork_server and getattr(server, "_forkserver_pid", None) is not None:
        with contextlib.suppress(OSError, TypeError):
            os.close(server._forkserver_alive_fd)
        server._forkserver_pid = server._forkserver_alive_fd = server._forkserver_address = None
        server._lock = threading.Lock()  # another thread may have held it during the fork


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_let_go_after_fork)


class ProcessWorkerPool:
    """One process (and its liaison thread) per worker."""

    def __init__(
        self,
        inboxes: Sequence[Inbox[Any]],
        states: Sequence[WorkerState],
        name: str,
        options: ProcessOptions,
        steal: bool = False,
    ) -> None:
        """``steal``: an idle liaison takes jobs queued behind a busy one (one inbox each)."""
        global _uses_fork_server
        context = multiprocessing.get_context(options.start_method)
        if options.start_method == "forkserver":
            _uses_fork_server = True
            context.set_forkserver_preload(_fork_server_preload())
        board = SleepBoard()
        # One queue for all: a worker that cannot start leaves it to the others.
        shared = len({id(inbox) for inbox in inboxes}) == 1 and len(inboxes) > 1
        health = PoolHealth(len(inboxes)) if shared else None
        if shared:
            inboxes[0].expect_consumers(len(inboxes))  # a broken worker gives back to it
        self._liaisons = [
            Liaison(
                inbox,
                state,
                context,
                options,
                f"{name}-worker-{state.index}",
                Thief(state.index, inboxes, states, board) if steal else None,
                health,
            )
            for inbox, state in zip(inboxes, states, strict=True)
        ]
        _pools.add(self)

    def start(self) -> None:
        """Start every worker process and wait until each can run jobs, or start none.

        As for threads, the work starts once the workers are ready, so that
        start-up (a fork, or an interpreter and its imports under spawn, and
        the initializer) is not billed to the first jobs, and a worker that
        cannot start is said here.

        Raises:
            WorkerStartError: a worker's processes failed to start 3 times in a
                row (its initializer's error is the cause); every process
                started was stopped.
        """
        try:
            for liaison in self._liaisons:
                liaison.start_process()
            for liaison in self._liaisons:
                liaison.wait_ready()
        except BaseException:
            for liaison in self._liaisons:
                liaison.discard_process()
            raise
        for liaison in self._liaisons:
            liaison.thread.start()

    def join(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else monotonic() + timeout
        for liaison in self._liaisons:
            remaining = None if deadline is None else max(0.0, deadline - monotonic())
            liaison.thread.join(remaining)
        return self.alive() == 0

    def alive(self) -> int:
        return sum(liaison.thread.is_alive() for liaison in self._liaisons)

    def kill(self) -> bool:
        """Kill every worker process (their running jobs fail with WorkerLost)."""
        for liaison in self._liaisons:
            liaison.kill()
        return True
