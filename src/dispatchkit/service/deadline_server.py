"""granian's main process for ``serve``: its stop waits for open requests at most the deadline.

On the first SIGTERM or SIGINT granian stops its worker and waits for it; this
server also arms a timer of ``--drain-timeout`` seconds, and when it fires tells
the worker to drain now (shutdown.py), so that a client that never finishes its
request cannot hold ``serve`` forever.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import os
import threading
from typing import Any

from granian.server import MPServer

from .shutdown import DRAIN_NOW, FLUSH_GRACE

__all__ = ["DeadlineServer"]


class DeadlineServer(MPServer):
    """granian's server, whose stop waits for open requests at most ``drain_timeout``.

    At the deadline the worker gets :data:`DRAIN_NOW`: it writes what it accepted
    and exits with :data:`~.shutdown.DRAIN_DEADLINE_EXIT`. granian's
    ``workers_kill_timeout`` SIGKILLs it only if it did not manage that within
    :data:`FLUSH_GRACE`. Each worker process it starts finds its index
    (0-based) in the environment variable ``process_env``.
    """

    def __init__(
        self, target: str, *, drain_timeout: float, process_env: str, **options: Any
    ) -> None:
        kill_after = math.ceil(drain_timeout + FLUSH_GRACE) + 1
        super().__init__(target, workers_kill_timeout=kill_after, **options)
        self._drain_timeout = drain_timeout
        self._process_env = process_env
        self._deadline: threading.Timer | None = None
        self._workers: list[multiprocessing.process.BaseProcess] = []

    def _spawn_worker(self, idx: Any, target: Any, callback_loader: Any, *rest: Any) -> Any:
        # The worker inherits the environment as it starts (right after this):
        # its index names its sink segments and its row of counters.
        os.environ[self._process_env] = str(idx)
        return super()._spawn_worker(idx, target, callback_loader, *rest)

    def signal_handler_interrupt(self, *args: Any, **kwargs: Any) -> None:
        if self._deadline is None:  # the first signal starts the clock
            self._workers = multiprocessing.active_children()
            self._deadline = threading.Timer(self._drain_timeout, self._deadline_passed)
            self._deadline.daemon = True
            self._deadline.start()
        super().signal_handler_interrupt(*args, **kwargs)  # type: ignore[no-untyped-call]

    def _deadline_passed(self) -> None:
        for worker in self._workers:
            if worker.is_alive() and worker.pid is not None:
                with contextlib.suppress(ProcessLookupError):  # it just ended
                    os.kill(worker.pid, DRAIN_NOW)

    def worker_exit_codes(self) -> list[int | None]:
        """How the worker processes ended, once :meth:`serve` returned."""
        if self._deadline is not None:
            self._deadline.cancel()
        for worker in self._workers:
            # granian may return a moment before it reaped a worker that ended
            # by itself (at the drain deadline): its exit code is not known yet.
            worker.join(FLUSH_GRACE)
        return [worker.exitcode for worker in self._workers]
