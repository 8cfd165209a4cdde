"""Several workers forked from one process: ``dispatchkit worker --processes N``.

One process imports what every worker needs (dispatchkit's transport, redis-py,
the job modules), then forks the workers, so that the machine's workers start in
the time of one import rather than N at once (on a small machine, N workers
launched apart compete for its cores while each imports the same modules), and
they all start taking work within a few milliseconds of each other.

The parent only supervises:

* SIGTERM and SIGINT are passed on to every worker, which drains as it would
  alone; the parent waits for them all.
* A worker killed by a signal the parent did not pass on (``kill -9``, the OOM
  killer) is replaced by a new fork, unless it died within ``_STEADY`` seconds of
  its start (it would likely die again): its entries are claimed as any dead
  worker's are. A worker that exits (drained, or Redis unreachable past its
  timeout) is not replaced.
* The exit code is the highest of the workers' (a worker killed by a signal and
  not replaced counts as ``_FAILED``; a replaced one does not count).
* A fork that fails (out of processes or memory) is logged and counts as
  ``_FAILED``: at launch the workers already started are stopped (they drain),
  so that a fleet never runs short-handed unnoticed; a replacement that cannot
  be forked leaves the others running.

The workers forked at launch start taking work together: each one, once
connected and registered, calls the ``started`` callback it was given, which
waits at a gate the parent opens when all of them got there (or after
``_GATE_TIMEOUT`` seconds, or at a stop). Otherwise the first to finish its
start-up (on a small machine, tens of milliseconds apart) would take the queued
entries before the last had connected. A replacement forked later does not wait.

The fork happens before any thread or connection exists in the parent: each
worker opens its own connections and starts its own threads.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Mapping
from time import monotonic
from types import FrameType
from typing import Any, Final

__all__ = ["run_forked"]

logger = logging.getLogger(__name__)

#: Seconds a worker must have lived for its death by a signal to be replaced.
_STEADY: Final = 1.0

#: The exit code of a worker that ended by an exception, or was killed by a signal.
_FAILED: Final = 1

_STOP_SIGNALS: Final = (signal.SIGTERM, signal.SIGINT)

#: Most seconds the workers forked at launch wait for one another before taking work.
_GATE_TIMEOUT: Final = 1.0

#: What a worker is given to call once it is ready to take work.
Started = Callable[[], None]


class _StartGate:
    """Lets the workers forked at launch take their first work together.

    Two pipes: each worker writes a byte to ``ready`` when it gets to the gate,
    then waits for end-of-file on ``go``, which comes when the parent closes the
    only write end left (the workers close their copies as they start).
    """

    def __init__(self) -> None:
        self._ready_r, self._ready_w = os.pipe()
        self._go_r, self._go_w = os.pipe()
        self.opened = False

    def for_child(self) -> Started:
        """In a worker just forked: its ``started`` callback."""
        os.close(self._ready_r)
        if self.opened:  # a replacement: nobody to wait for
            return _no_wait
        os.close(self._go_w)
        ready_w, go_r = self._ready_w, self._go_r

        def started() -> None:
            with contextlib.suppress(OSError):
                os.write(ready_w, b".")
            # End-of-file once the gate opens; the timeout bounds a lost parent.
            select.select([go_r], [], [], _GATE_TIMEOUT)
            os.close(ready_w)
            os.close(go_r)

        return started

    def open_when_ready(self, alive: Callable[[], int], stopping: Callable[[], bool]) -> None:
        """Open once every worker still ``alive()`` got to the gate, at a stop, or
        after ``_GATE_TIMEOUT``."""
        deadline = monotonic() + _GATE_TIMEOUT
        ready = 0
        while ready < alive() and not stopping():
            left = deadline - monotonic()
            if left <= 0:
                break
            # In slices: a stop's handler sets the flag, a worker dies, while this waits.
            readable, _, _ = select.select([self._ready_r], [], [], min(left, 0.05))
            if readable:
                ready += len(os.read(self._ready_r, 64))
        self.open()

    def open(self) -> None:
        """Let every worker waiting at the gate go; idempotent.

        The read end of ``ready`` stays open until :meth:`close`: a worker that
        gets to the gate late still writes to a pipe with a reader (a job module
        may have made SIGPIPE fatal).
        """
        if not self.opened:
            self.opened = True
            for fd in (self._go_w, self._go_r, self._ready_w):
                os.close(fd)

    def close(self) -> None:
        """Open the gate and release its last descriptor; idempotent."""
        self.open()
        if self._ready_r >= 0:
            os.close(self._ready_r)
            self._ready_r = -1


def _no_wait() -> None:
    """The ``started`` of a worker forked once the gate is open."""


def run_forked(processes: int, run_one: Callable[[Started], int]) -> int:
    """Run ``run_one(started)`` in ``processes`` forked workers until they all end;
    the highest exit code (see the module's notes). Each worker calls ``started()``
    once ready to take work, before taking any. It starts with SIGTERM and SIGINT
    blocked (a stop stays pending): it unblocks them once it handles them.

    Raises:
        ValueError: ``processes`` below 1.
    """
    if processes < 1:
        raise ValueError(f"processes must be at least 1, got {processes}")
    if threading.active_count() > 1:
        # A thread holding a lock at the fork leaves it held in every child.
        logger.warning(
            "forking %d workers while %d threads run (started by a job module?): "
            "a lock one of them holds stays held in the workers",
            processes,
            threading.active_count() - 1,
        )
    started: dict[int, float] = {}  # pid -> when it was forked
    codes: list[int] = []
    stopping = False
    gate = _StartGate()

    def pass_on(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for pid in started:
            with contextlib.suppress(ProcessLookupError):  # reaped meanwhile
                os.kill(pid, signum)

    previous = {sig: signal.signal(sig, pass_on) for sig in _STOP_SIGNALS}

    def spawn() -> bool:
        """Fork one more worker (none once stopping); False if the fork failed."""
        # Signals wait while a worker is forked and recorded: the child must not
        # run the parent's handler, and a stop must reach every recorded worker.
        signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
        try:
            if not stopping:  # a stop that came before the block: no new worker
                started[_fork(run_one, gate, previous)] = monotonic()
        except OSError as exc:  # out of processes or memory: the others go on
            logger.error("cannot start a worker process: %s", exc)
            codes.append(_FAILED)
            return False
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
        return True

    def settle(pid: int, status: int) -> None:
        """Count a worker that ended, or replace it (see the module's notes)."""
        born = started.pop(pid, None)
        if born is None:
            return  # not one of the workers (a job module's own child)
        code = os.waitstatus_to_exitcode(status)
        if code >= 0:
            codes.append(code)
            return
        lived = monotonic() - born
        if stopping or lived < _STEADY:
            logger.warning("worker process %d was killed by signal %d", pid, -code)
            codes.append(_FAILED)
            return
        logger.warning(
            "worker process %d was killed by signal %d after %.1f s: starting another",
            pid,
            -code,
            lived,
        )
        spawn()

    def reap_exited() -> int:
        """Settle the workers that ended while the gate waits; how many still run."""
        while started:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if not pid:
                break
            settle(pid, status)
        return len(started)

    try:
        for _ in range(processes):
            if not spawn():
                # Fewer workers than asked for: stop those started (they drain)
                # rather than run short-handed unnoticed.
                pass_on(signal.SIGTERM, None)
                break
        gate.open_when_ready(reap_exited, lambda: stopping)
        while started:
            settle(*os.waitpid(-1, 0))  # retried after a signal's handler (PEP 475)
    finally:
        gate.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return max(codes, default=0)


def _fork(
    run_one: Callable[[Started], int], gate: _StartGate, handlers: Mapping[signal.Signals, Any]
) -> int:
    """Fork one worker running ``run_one`` (with the stop signals blocked); its pid."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        return pid
    # The worker: the handlers the parent had before it supervised, and the stop
    # signals still blocked: run_one unblocks them once its own handler is set, so
    # a stop that comes sooner (the parent's, when a later fork failed) waits for
    # it, and drains, rather than meeting the CLI's Ctrl-C handler mid-start.
    code = _FAILED
    try:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        code = run_one(gate.for_child())
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else _FAILED
    except BaseException:
        traceback.print_exc()
    finally:
        # Never back into the parent's stack: its loop is not this process's.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
