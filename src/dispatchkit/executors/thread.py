"""Thread workers: each worker is a thread looping over its inbox.

    submitting thread ──put──▶ Inbox[i] ──get──▶ worker thread i ──▶ message._run(state[i])

With the pull strategy every worker thread reads the same shared inbox.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from time import monotonic, perf_counter
from typing import Any

from dispatchkit._inbox import Inbox
from dispatchkit._work import run_burst
from dispatchkit.core import WorkerState
from dispatchkit.errors import WorkerStartError

__all__ = ["ThreadWorkerPool"]

logger = logging.getLogger(__name__)


def _worker_loop(inbox: Inbox[Any], state: WorkerState) -> None:
    get = inbox.get
    while True:
        message = get()
        if message is None:
            return
        # Busy time is measured per burst (from waking to sleeping again), not
        # per job: two clock reads a job would cost the seed's workload 10%.
        started = perf_counter()
        if state.first_start is None:
            state.first_start = started
        try:
            run_burst(message, inbox, state)
        except BaseException:
            # Jobs' own errors are caught inside the runners; reaching here is a
            # bug in dispatchkit. Log it and go on: a worker must not die silently.
            logger.critical("worker %d: internal error", state.index, exc_info=True)
        state.busy += perf_counter() - started


class ThreadWorkerPool:
    """One thread per worker."""

    def __init__(
        self,
        inboxes: Sequence[Inbox[Any]],
        states: Sequence[WorkerState],
        name: str,
        options: object = None,
    ) -> None:
        if len(inboxes) != len(states):
            raise ValueError("one inbox per worker state is needed")
        self._inboxes = list(inboxes)
        self._threads = [
            threading.Thread(
                target=_worker_loop,
                args=(inbox, state),
                name=f"{name}-worker-{state.index}",
                daemon=True,
            )
            for inbox, state in zip(inboxes, states, strict=True)
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
                for inbox in {id(inbox): inbox for inbox in self._inboxes}.values():
                    inbox.close()
                for running in self._threads[:started]:
                    running.join()
                raise WorkerStartError(
                    f"the operating system refused to start worker thread {started + 1} "
                    f"of {len(self._threads)} ({exc}): ask for fewer workers, or raise the "
                    "system's limits (ulimit -u, kernel.pid_max, kernel.threads-max, memory)"
                ) from exc

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
