"""What travels through an inbox, and the private state of the worker that runs it.

A message is anything with ``_run(worker)``, ``_cancel_taken()`` and
``_job_count()``: a :class:`~dispatchkit.job.JobHandle` (one submitted job),
a :class:`BulkChunk` (fire-and-forget jobs, counted only) or a
:class:`MapChunk` (jobs of one ``map`` call, whose results go back to it).
A chunk of ``n`` jobs is one hand-off: the dispatcher's ``chunk`` setting.

One more message is a plain tuple ``(fn, item, on_error)``: a single
fire-and-forget job, the seed's one-message-at-a-time hot path, where creating
an object per job would cost a third of the time. :func:`run_single` runs it.
"""

from __future__ import annotations

import logging
import operator
import threading
from collections import deque
from collections.abc import Callable, Sequence
from functools import partial
from itertools import islice
from time import perf_counter
from typing import TYPE_CHECKING, Any, Protocol

from ._lanes import LanedMessage
from .core import JobStatus, MapRun, WorkerState, cancelled_rows, map_result
from .core.adaptive import AdaptiveFeed, BulkRun, MeasuredMapRun
from .retry import RetryPolicy, run_with_policy

if TYPE_CHECKING:
    from ._inbox import Inbox

__all__ = [
    "BulkChunk",
    "Control",
    "FireAndForget",
    "MapChunk",
    "MapRun",
    "Message",
    "WorkerState",
    "cancel_message",
    "map_result",
    "run_burst",
    "thread_map_run",
]

logger = logging.getLogger(__name__)

#: Jobs a bulk chunk runs between two looks at the stop flag.
_STOP_CHECK_EVERY = 512

#: How many errors of fire-and-forget jobs are kept as samples.
ERROR_SAMPLES = 10


class Message(Protocol):
    def _run(self, worker: WorkerState) -> None: ...
    def _cancel_taken(self) -> None: ...
    def _job_count(self) -> int: ...
    def _moved_to(self, queue: Any) -> None: ...


class Control:
    """State shared by the dispatcher and all its workers."""

    __slots__ = ("error_samples", "retry", "stop_event", "stopping")

    def __init__(self, retry: RetryPolicy | None = None) -> None:
        #: Set by ``stop(cancel=True)``: workers abandon the rest of a chunk.
        self.stopping = False
        #: Set with ``stopping``; retry waits end on it.
        self.stop_event = threading.Event()
        #: The dispatcher's retry policy for jobs that have none of their own.
        self.retry = retry
        #: The first errors of fire-and-forget jobs, as (item, exception).
        self.error_samples: deque[tuple[Any, BaseException]] = deque(maxlen=ERROR_SAMPLES)


class FireAndForget:
    """Fire-and-forget jobs ``fn(item)`` handed over together, for any worker kind.

    ``tally`` is the :class:`~dispatchkit.core.adaptive.BulkRun` of an adaptive
    ``dispatch``: the chunk tells it, once, when it ran (or that it was
    cancelled), so that the next chunks are sized from that.
    """

    __slots__ = ("fn", "items", "on_error", "tally")

    def __init__(
        self,
        fn: Callable[[Any], Any],
        items: Sequence[Any],
        on_error: Callable[[Any, BaseException], object] | None,
        tally: BulkRun | None = None,
    ) -> None:
        self.fn, self.items, self.on_error, self.tally = fn, items, on_error, tally

    def _job_count(self) -> int:
        return len(self.items)

    def _moved_to(self, queue: object) -> None:
        """Stolen into another worker's queue: nothing here refers to the old one."""

    def _ended(
        self, worker: int | None, jobs: int, started: float | None, finished: float | None
    ) -> None:
        """Tell an adaptive ``dispatch`` that ``jobs`` jobs of this chunk ended."""
        if self.tally is not None:
            self.tally.ended(worker, jobs, started, finished)


class BulkChunk(FireAndForget):
    """Fire-and-forget jobs ``fn(item)`` for thread and process workers: counted, their
    values dropped."""

    __slots__ = ()

    def _cancel_taken(self) -> None:
        jobs, self.items = len(self.items), []
        self._ended(None, jobs, None, None)

    def _run(self, worker: WorkerState) -> None:
        if self.tally is None:
            self._run_jobs(worker)
            return
        jobs, started = len(self.items), perf_counter()
        try:
            self._run_jobs(worker)
        finally:
            self._ended(worker.index, jobs, started, perf_counter())

    def _run_jobs(self, worker: WorkerState) -> None:
        if worker.control.retry is not None:
            self._run_with_policy(worker, worker.control.retry)
            return
        # Successes are added once the chunk ends, but stats() is current while it
        # runs (the service's /metrics too): it reads how much of ``it`` is used
        # up (WorkerState.live_succeeded), so the loop counts nothing per job.
        fn, items = self.fn, self.items
        total = len(items)
        failed_before = worker.failed
        ran = total
        it = iter(items)
        worker.chunk_size = total
        worker.chunk_failed = failed_before
        worker.chunk = it
        if total <= _STOP_CHECK_EVERY:
            for item in it:
                try:
                    fn(item)
                except BaseException as exc:  # a failing job never stops its worker
                    worker.failed += 1
                    self._report(item, exc, worker)
        else:
            control = worker.control
            for _ in range(0, total, _STOP_CHECK_EVERY):
                if control.stopping:
                    left = operator.length_hint(it)
                    worker.cancelled += left
                    ran = total - left
                    break
                for item in islice(it, _STOP_CHECK_EVERY):
                    try:
                        fn(item)
                    except BaseException as exc:
                        worker.failed += 1
                        self._report(item, exc, worker)
        worker.chunk = None  # before the count below: a reader never counts twice
        worker.succeeded += ran - (worker.failed - failed_before)
        self.items = []

    def _run_with_policy(self, worker: WorkerState, policy: RetryPolicy) -> None:
        fn, control = self.fn, worker.control
        for position, item in enumerate(self.items):
            if control.stopping:
                worker.cancelled += len(self.items) - position
                break
            status, value, _ = run_with_policy(partial(fn, item), policy, control.stop_event)
            worker.count(status)
            if status is JobStatus.FAILED:
                self._report(item, value, worker)
        self.items = []

    def _report(self, item: Any, exc: BaseException, worker: WorkerState) -> None:
        report_error(item, exc, worker, self.on_error)


def report_error(
    item: Any,
    exc: BaseException,
    worker: WorkerState,
    on_error: Callable[[Any, BaseException], object] | None,
) -> None:
    """Keep a sample of a fire-and-forget job's failure and tell ``on_error``."""
    worker.control.error_samples.append((item, exc))
    if on_error is not None:
        try:
            on_error(item, exc)
        except Exception:
            logger.exception("on_error callback raised")


def run_burst(first: Any, inbox: Inbox[Any], worker: WorkerState) -> None:
    """Run ``first`` and then every message already waiting in ``inbox``.

    The hot loop of a worker: single jobs sent as ``(fn, item, on_error)``
    tuples are run inline, without a call per job, and the deque is read
    directly rather than through ``get``. Each job is counted as it ends (one
    integer increment), so that ``stats()`` is current within a burst.
    """
    items = inbox._items
    popleft = items.popleft
    message = first
    while True:
        if message.__class__ is tuple:
            fn, item, on_error = message
            try:
                fn(item)
            except BaseException as exc:  # a failing job never stops its worker
                worker.failed += 1
                report_error(item, exc, worker, on_error)
            else:
                worker.succeeded += 1
        else:
            message._run(worker)
            if inbox._putters and len(items) <= inbox._low_water:
                inbox._wake_putter()
        try:
            message = popleft()
        except IndexError:
            # A producer waiting for room is woken here at the latest; for
            # single jobs, looking after each one would cost 10% of the run.
            if inbox._putters:
                inbox._wake_putter()
            return


def moved(message: Any, queue: Any) -> None:
    """Tell a message taken into ``queue`` by a stealing worker where it waits now
    (a handle cancels itself there)."""
    if message.__class__ is not tuple:
        message._moved_to(queue)


def cancel_message(message: Any) -> int:
    """Cancel a message taken off a queue; return how many jobs it held."""
    if message.__class__ is tuple:
        return 1
    count: int = message._job_count()
    message._cancel_taken()
    if message.__class__ is LanedMessage:
        count += message.cancel_waiting()
    return count


def thread_map_run(
    outcomes: bool, adaptive: AdaptiveFeed | None = None
) -> tuple[MapRun, Callable[[float | None], None]]:
    """A :class:`MapRun` for thread (or process-liaison) workers, and how ``map`` waits on it
    (a measured one, feeding ``adaptive``, when the chunk adapts).

    ``map`` sets ``waiting`` (under the lock) before it sleeps, and a worker
    that sees it set notifies: the same no-lost-wake-up handshake as the inbox.
    """
    lock = threading.Lock()
    cond = threading.Condition(lock)

    def notify() -> None:
        with lock:
            cond.notify()

    run = (
        MapRun(outcomes, notify) if adaptive is None else MeasuredMapRun(adaptive, notify, outcomes)
    )

    def wait(timeout: float | None = None) -> None:
        """Sleep until a chunk is delivered (returns at once if one is waiting),
        or ``timeout`` seconds have passed."""
        with lock:
            run.waiting = True
            try:
                if not run.finished:
                    cond.wait(timeout)
            finally:
                run.waiting = False

    return run, wait


class MapChunk:
    """Jobs of one ``map`` call; each ends as a :class:`~dispatchkit.core.ResultRow`."""

    __slots__ = ("fn", "items", "run", "seqs", "star", "submitted_at")

    def __init__(
        self,
        run: MapRun,
        fn: Callable[..., Any],
        items: Sequence[Any],
        seqs: Sequence[int],
        star: bool,
        submitted_at: float,
    ) -> None:
        self.run = run
        self.fn = fn
        self.items = items
        self.seqs = seqs
        self.star = star
        self.submitted_at = submitted_at

    def _job_count(self) -> int:
        return len(self.items)

    def _moved_to(self, queue: object) -> None:
        """Stolen into another worker's queue: nothing here refers to the old one."""

    def _cancel_taken(self) -> None:
        self._deliver_cancelled(self.seqs)

    def _deliver_cancelled(self, seqs: Sequence[int]) -> None:
        self.run.deliver(cancelled_rows(seqs, self.submitted_at, perf_counter()))

    def _run(self, worker: WorkerState) -> None:
        fn, star, index = self.fn, self.star, worker.index
        submitted = self.submitted_at
        control = worker.control
        policy = control.retry
        # Rows in ResultRow's field order, built as plain tuples: the NamedTuple's
        # constructor would add a Python call per job to this hot loop.
        results: list[Any] = []
        append = results.append
        timed = self.run.outcomes
        seqs = self.seqs
        # Untimed jobs are measured as a chunk: two clock reads, not two a job.
        chunk_started = perf_counter()
        for position, item in enumerate(self.items):
            if control.stopping:
                worker.cancelled += len(seqs) - position
                self._deliver_cancelled(seqs[position:])
                break
            started = perf_counter() if timed else None
            # Counted as each job ends (see BulkChunk._run).
            if policy is None:
                attempts = 1
                try:
                    value = fn(*item) if star else fn(item)
                    status = JobStatus.SUCCEEDED
                    worker.succeeded += 1
                except BaseException as exc:  # a failing job never stops its worker
                    value, status = exc, JobStatus.FAILED
                    worker.failed += 1
            else:
                call = (lambda i=item: fn(*i)) if star else (lambda i=item: fn(i))
                status, value, attempts = run_with_policy(call, policy, control.stop_event)
                worker.count(status)
            finished = perf_counter() if timed else None
            append((seqs[position], status, value, index, submitted, started, finished, attempts))
        self.items = []
        if not results:
            return
        if timed:
            self.run.deliver(results)  # measured from the rows' own times, if at all
        else:
            self.run.deliver_measured(results, index, len(results), chunk_started, perf_counter())
