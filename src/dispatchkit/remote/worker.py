"""A worker that runs jobs from the streams of a transport (Redis), on any host.

The worker is a thin composition of two parts, each a module:

    datapath.DataPath     fetch loop (main thread) ──▶ runner ──▶ acker thread
                          (fetch, run, acknowledge: the data path)
    membership.Membership heartbeat thread: register, heartbeats, reap dead peers,
                          adopt departed workers' streams, partition leases

Both speak only the :class:`~dispatchkit.transports.base.Transport` protocol:
Redis in production, :mod:`dispatchkit.transports.memory` in tests.

A claimed entry's delivery count is its attempt count; past ``max_attempts``
it goes to the dead-letter stream, and its submitter gets a ``WorkerLost``.
An entry that fails for good (Redis refuses its outcome, say a ``WRONGTYPE``
reply stream, or its outcome cannot be encoded) is dead-lettered at once;
only failures that may pass (Redis unreachable or busy) are retried.

A worker that cannot reach Redis for ``unreachable_timeout`` seconds exits,
whatever it holds: its entries stay pending and live workers claim them.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final

from dispatchkit._durations import MAX_SECONDS, check_seconds
from dispatchkit.registry import DEFAULT_REGISTRY, Registry
from dispatchkit.transports._redis_keys import DEFAULT_NAMESPACE
from dispatchkit.transports.base import Transport

from ._connect import default_name, redis_transport, transport_consumer
from ._outage import Outage
from .datapath import DataPath
from .membership import Membership
from .runners import JobRunner, make_runner

__all__ = ["RedisWorker", "WorkerReport", "import_job_modules", "run_worker"]

logger = logging.getLogger(__name__)

#: Default number of partitions of the key strategy (dispatchers must agree).
DEFAULT_PARTITIONS: Final = 16

#: Seconds a worker keeps retrying an unreachable Redis before it exits (by default).
DEFAULT_UNREACHABLE_TIMEOUT: Final = 30.0

#: Seconds a connection or reply may take before the worker's call fails as unreachable:
#: this or ``unreachable_timeout`` if shorter, plus 0.5 s (a blocking read waits 0.2 s).
_LONGEST_REPLY: Final = 10.0


@dataclass(frozen=True, slots=True)
class WorkerReport:
    """What a worker did, reported when it stops."""

    name: str
    succeeded: int
    failed: int
    dead_lettered: int
    claimed: int
    #: Entries still held at the drain deadline, left unacknowledged for others to claim.
    abandoned: int = 0
    #: Entries given back unstarted, for other workers to take.
    given_back: int = 0


class RedisWorker:
    """Runs registered jobs read from the Redis streams of one queue.

    Args:
        url: ``redis://HOST:PORT/DB`` (or give ``transport``).
        queue: the queue's name.
        concurrency: jobs run at once.
        executor: the runner kind: ``thread`` (plain functions, on
            ``concurrency`` threads), ``process`` (plain functions in
            ``concurrency`` worker processes, for CPU-bound jobs) or ``async``
            (coroutine functions, as ``concurrency`` tasks on one event loop;
            plain functions run on the loop too, so must not block).
        registry: where job names are looked up.
        namespace: first part of every key.
        name: the worker's name (default ``host-pid-random``).
        prefetch: entries held at once at most, fetched or running (default
            twice the concurrency). The worker holds one per slot, and more only
            while its slots would start them within 50 ms at the entry time it
            measured, so slow entries stay in the stream for other workers. More
            helps tiny unchunked jobs.
        heartbeat: seconds between heartbeats.
        dead_after: seconds without a heartbeat after which a worker is dead
            and its entries are claimed (default 5 heartbeats).
        visibility_timeout: seconds an entry may stay untouched before any
            worker claims it (XAUTOCLAIM), whatever its holder's heartbeat says.
        max_attempts: deliveries of one entry before it is dead-lettered.
        partitions: partitions of the key strategy.
        drain_timeout: seconds :meth:`stop` waits for the jobs in hand (None:
            as long as they take); past it, the entries still held are left
            unacknowledged, for other workers to claim, and :meth:`run` returns.
        unreachable_timeout: seconds Redis may stay unreachable before the
            worker gives up and :meth:`run` raises, whatever it holds (its
            entries stay pending, for live workers to claim).
        transport: the transport to use instead of a Redis URL (a
            :class:`~dispatchkit.transports.memory.MemoryTransport` in tests, say);
            its consumer name is the worker's name.

    Raises:
        ValueError: a bad argument (unknown executor, non-positive numbers, a
            duration that is not a finite number of seconds above 0, bad URL).
    """

    def __init__(
        self,
        url: str | None = None,
        queue: str | None = None,
        *,
        concurrency: int = 1,
        executor: str = "thread",
        registry: Registry = DEFAULT_REGISTRY,
        namespace: str = DEFAULT_NAMESPACE,
        name: str | None = None,
        prefetch: int | None = None,
        heartbeat: float = 1.0,
        dead_after: float | None = None,
        visibility_timeout: float = 60.0,
        max_attempts: int = 3,
        partitions: int = DEFAULT_PARTITIONS,
        drain_timeout: float | None = None,
        unreachable_timeout: float = DEFAULT_UNREACHABLE_TIMEOUT,
        transport: Transport | None = None,
    ) -> None:
        heartbeat = check_seconds("heartbeat", heartbeat)
        if dead_after is None:
            dead_after = min(5 * heartbeat, MAX_SECONDS)
        dead_after = check_seconds("dead_after", dead_after)
        visibility_timeout = check_seconds("visibility_timeout", visibility_timeout)
        self._outage = Outage(check_seconds("unreachable_timeout", unreachable_timeout))
        for what, value in (
            ("concurrency", concurrency),
            ("prefetch", 2 * concurrency if prefetch is None else prefetch),
            ("max_attempts", max_attempts),
            ("partitions", partitions),
        ):
            if value < 1:
                raise ValueError(f"{what} must be at least 1, got {value}")
        self._drain_timeout = (
            None
            if drain_timeout is None
            else check_seconds("drain_timeout", drain_timeout, zero_ok=True)
        )
        if transport is None:
            self.name = name or default_name()
            transport = redis_transport(
                url,
                queue,
                namespace,
                self.name,
                # Bounded waits on Redis: a server that hangs (or a network that drops
                # packets) must count as unreachable too, not block a thread for good.
                socket_timeout=min(self._outage.limit, _LONGEST_REPLY) + 0.5,
            )
        else:
            self.name = transport_consumer(transport, url, queue, name)
        self._transport = transport
        self._runner: JobRunner = make_runner(executor, concurrency)
        self._executor = executor
        self.keys = transport.keys
        self._stop_asked: float | None = None  # time.monotonic() of the first stop()
        self._path = DataPath(
            name=self.name,
            transport=transport,
            runner=self._runner,
            registry=registry,
            prefetch=2 * concurrency if prefetch is None else prefetch,
            max_attempts=max_attempts,
            outage=self._outage,
            partition_prefix=self.keys.partition(0)[:-1],
            lock=threading.Lock(),
        )
        self._members = Membership(
            name=self.name,
            transport=transport,
            path=self._path,
            heartbeat=heartbeat,
            dead_after=dead_after,
            visibility_timeout=visibility_timeout,
            partitions=partitions,
            outage=self._outage,
        )

    # -- public ------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the worker to stop: it reads no more, finishes and acknowledges what it holds.

        Safe to call from a signal handler and more than once; the drain deadline
        counts from the first call.
        """
        if self._stop_asked is None:
            self._stop_asked = time.monotonic()
        self._path.stopping.set()

    def run(self, started: Callable[[], None] | None = None) -> WorkerReport:
        """Register, run jobs until :meth:`stop`, drain, unregister.

        ``started`` is called once the worker is registered and ready, before it
        takes any work (``--processes`` holds its workers there to start them together).

        Raises:
            TransportUnavailable: Redis could not be reached at start, or for
                ``unreachable_timeout`` seconds while running (then the worker
                stops at once, even with entries in hand).
            TransportError: another Redis failure.
        """
        path, members = self._path, self._members
        self._transport.ping()
        members.register()
        self._runner.start()
        logger.info(
            "worker %s started: queue %s, %s executor, concurrency %d",
            *(self.name, self.keys.prefix, self._executor, self._runner.concurrency),
        )
        acker = threading.Thread(target=path.ack_loop, name=f"{self.name}-acker", daemon=True)
        beat = threading.Thread(
            target=members.beat_loop, name=f"{self.name}-heartbeat", daemon=True
        )
        acker.start()
        beat.start()
        abandoned = 0
        try:
            if started is not None:
                started()
            path.fetch_loop()
            # Drain: what has not started goes back at once, for the other workers; what
            # runs is finished and acknowledged; heartbeats go on meanwhile.
            path.give_back_unstarted()
            abandoned = path.wait_for_held(self._drain_deadline())
        finally:
            lost = self._outage.over()
            # Heartbeats first: a claim after the drain would hand the runner work
            # it no longer takes.
            members.beat_stop.set()
            beat.join()
            self._runner.shutdown(wait=not (abandoned or lost))
            if (abandoned or lost) and self._runner.pool is not None:
                # Worker processes running past the deadline, or after Redis was
                # lost, are killed: the outcomes they end with would be dropped,
                # as their entries stay pending and run again elsewhere.
                self._runner.pool.stop(cancel=True, timeout=0)
            path.end_acks()
            acker.join()
            if not lost:  # once Redis is lost nothing reaches it: the others take us for dead
                if abandoned:
                    members.abandon()
                else:
                    members.unregister()
            self._transport.close()
        report = WorkerReport(
            self.name, path.succeeded, path.failed, path.dead, members.claimed, abandoned,
            path.given_back,
        )  # fmt: skip
        counts = (report.succeeded, report.failed, report.dead_lettered, report.claimed)
        if abandoned:
            logger.warning(
                "worker %s: drain deadline passed after %g s: %d entries left unacknowledged "
                "for other workers to claim; %d succeeded, %d failed, %d dead-lettered, "
                "%d claimed",
                *(report.name, self._drain_timeout, abandoned, *counts),
            )
        else:
            logger.info(
                "worker %s stopped: %d succeeded, %d failed, %d dead-lettered, %d claimed, "
                "%d given back",
                *(report.name, *counts, report.given_back),
            )
        return report

    def _drain_deadline(self) -> float:
        """When (``time.monotonic``) the drain gives up: the first stop() plus the timeout."""
        if self._drain_timeout is None:
            return math.inf
        return (self._stop_asked or time.monotonic()) + self._drain_timeout


def import_job_modules(imports: Iterable[str]) -> None:
    """Import the modules that register the jobs (each once per process).

    Raises:
        ImportError: a module cannot be imported (or raised on import).
    """
    import importlib

    for module in imports:
        try:
            importlib.import_module(module)
        except Exception as exc:  # a job module that raises is a bad --import too
            raise ImportError(
                f"cannot import job module {module!r}: {type(exc).__name__}: {exc}"
            ) from exc


def run_worker(
    url: str,
    queue: str,
    *,
    imports: Iterable[str] = (),
    concurrency: int = 1,
    executor: str = "thread",
    started: Callable[[], None] | None = None,
    **options: object,
) -> WorkerReport:
    """Import the job modules, then run a worker until SIGTERM or SIGINT.

    A signal stops it gracefully: it reads no more, finishes and acknowledges
    what it holds, and returns. ``started``: as :meth:`RedisWorker.run`.

    Raises:
        ImportError: a module in ``imports`` cannot be imported (or raised on import).
        ValueError: a bad argument.
        TransportError: Redis failed (TransportUnavailable if it cannot be reached).
    """
    import signal

    import_job_modules(imports)
    worker = RedisWorker(
        url,
        queue,
        concurrency=concurrency,
        executor=executor,
        **options,  # type: ignore[arg-type]
    )

    def on_signal(signum: int, frame: object) -> None:
        logger.info("worker %s: signal %d, draining", worker.name, signum)
        worker.stop()

    stops = (signal.SIGTERM, signal.SIGINT)
    previous = {sig: signal.signal(sig, on_signal) for sig in stops}
    # A forked worker starts with them blocked (forked.py): a stop that came
    # meanwhile is handled now, and drains.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, stops)
    try:
        return worker.run(started)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
