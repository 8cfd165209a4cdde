"""Thread workers: each worker is a thread looping over its inbox.

    submitting thread ──put──▶ Inbox[i] ──get──▶ worker thread i ──▶ message._run(state[i])

With the pull strategy every worker thread reads the same shared inbox.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from time import monotonic, perf_counter
from typing import Any

from dispatchkit._inbox import Inbox
from dispatchkit._steal import SleepBoard, Thief
from dispatchkit._work import run_burst
from dispatchkit.core import WorkerState
from dispatchkit.errors import WorkerStartError

__all__ = ["ThreadWorkerPool"]

logger = logging.getLogger(__name__)


def _worker_loop(
    inbox: Inbox[Any], state: WorkerState, start: _Start | None = None, thief: Thief | None = None
) -> None:
    """Run bursts of messages until the inbox is closed and drained. With a ``thief``
    (a dispatcher that steals, :mod:`dispatchkit._steal`) an idle worker also takes
    jobs queued behind a busy one, and each burst is marked ``active``: while it
    runs, others may take from this inbox."""
    if start is not None and not start.initialize(state.index):
        return
    get = inbox.get if thief is None else thief.next_message
    while True:
        message = get()
        if message is None:
            return
        # Busy time is measured per burst (from waking to sleeping again), not
        # per job: two clock reads a job would cost the seed's workload 10%.
        started = perf_counter()
        if state.first_start is None:
            state.first_start = started
        if thief is not None:
            state.active = True
            thief.started()
        try:
            run_burst(message, inbox, state)
        except BaseException:
            # Jobs' own errors are caught inside the runners; reaching here is a
            # bug in dispatchkit. Log it and go on: a worker must not die silently.
            logger.critical("worker %d: internal error", state.index, exc_info=True)
        state.active = False
        state.busy += perf_counter() - started


class _Start:
    """Runs the initializer in each worker thread and tells ``start`` how it went."""

    def __init__(self, initializer: Callable[..., object], initargs: tuple[Any, ...], n: int):
        self._initializer = initializer
        self._initargs = initargs
        self._lock = threading.Lock()
        self._all_reported = threading.Condition(self._lock)
        self._waiting = n
        #: (worker index, exception) of each initializer that raised.
        self.failures: list[tuple[int, BaseException]] = []

    def initialize(self, index: int) -> bool:
        """Run the initializer in this worker thread; False if it raised."""
        failure: BaseException | None = None
        try:
            self._initializer(*self._initargs)
        except BaseException as exc:  # reported to start(), which raises it
            failure = exc
        with self._lock:
            if failure is not None:
                self.failures.append((index, failure))
            self._waiting -= 1
            self._all_reported.notify_all()
        return failure is None

    def wait(self) -> None:
        """Until every worker thread has run the initializer."""
        with self._lock:
            while self._waiting:
                self._all_reported.wait()


class ThreadWorkerPool:
    """One thread per worker; ``name`` prefixes the threads' names (``{index}`` in
    it, if any, is replaced by the worker index instead)."""

    def __init__(
        self,
        inboxes: Sequence[Inbox[Any]],
        states: Sequence[WorkerState],
        name: str,
        options: object = None,
        steal: bool = False,
    ) -> None:
        """``steal``: idle workers take jobs queued behind busy ones (one inbox each)."""
        if len(inboxes) != len(states):
            raise ValueError("one inbox per worker state is needed")
        self._inboxes = list(inboxes)
        #: Where idle workers sleep while none runs a job (see :class:`SleepBoard`).
        self.board = board = SleepBoard()
        thieves = [Thief(i, inboxes, states, board) if steal else None for i in range(len(states))]
        initializer = getattr(options, "initializer", None)
        self._init = (
            None
            if initializer is None
            else _Start(initializer, getattr(options, "initargs", ()), len(states))
        )
        self._threads = [
            threading.Thread(
                target=_worker_loop,
                args=(inbox, state, self._init, thief),
                name=(
                    name.format(index=state.index)
                    if "{index}" in name
                    else f"{name}-worker-{state.index}"
                ),
                daemon=True,
            )
            for inbox, state, thief in zip(inboxes, states, thieves, strict=True)
        ]

    def start(self) -> None:
        """Start every worker thread, or none.

        Raises:
            WorkerStartError: the OS refused a thread; the threads started
                before it were stopped (their inboxes closed) and joined.
        """
        for started, thread in enumerate(self._threads):
            try:
                thread.start()
            except RuntimeError as exc:  # "can't start new thread": a limit of the OS
                self._stop_started(started)
                raise WorkerStartError(
                    f"the operating system refused to start worker thread {started + 1} "
                    f"of {len(self._threads)} ({exc}): ask for fewer workers, or raise the "
                    "system's limits (ulimit -u, kernel.pid_max, kernel.threads-max, memory)"
                ) from exc
        if self._init is not None:
            self._init.wait()
            if self._init.failures:
                index, error = min(self._init.failures, key=lambda failure: failure[0])
                self._stop_started(len(self._threads))
                raise WorkerStartError(
                    f"the initializer failed in worker thread {index}: {error!r}"
                ) from error

    def _stop_started(self, started: int) -> None:
        """Close the inboxes and join the first ``started`` threads."""
        for inbox in {id(inbox): inbox for inbox in self._inboxes}.values():
            inbox.close()
        for running in self._threads[:started]:
            running.join()

    def join(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else monotonic() + timeout
        for thread in self._threads:
            remaining = None if deadline is None else max(0.0, deadline - monotonic())
            thread.join(remaining)
        return self.alive() == 0

    def alive(self) -> int:
        return sum(thread.is_alive() for thread in self._threads)

    def kill(self) -> bool:
        """A running thread cannot be stopped: False."""
        return False
