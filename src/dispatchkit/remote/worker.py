"""A worker that runs jobs from Redis streams, on any host.

    main thread: XREADGROUP COUNT n ──▶ lanes ──▶ runner ──▶ done queue
        (the runner: threads, or tasks on one event loop: --executor)
    acker thread: done queue ──▶ XADD outcomes + XACK + XDEL (one MULTI per batch)
    heartbeat thread: ZADD heartbeat, touch held entries, claim the entries of
        dead workers, adopt streams of departed workers, hold partition leases

Streams read: the shared ``pull`` stream, the worker's own stream (round_robin
and batch), the streams of departed workers (adopted), and the partitions whose
lease it holds (key). A partition's entries run one after another, so one key
keeps its order; everything else runs ``concurrency`` at a time.

A claimed entry's delivery count is its attempt count; past ``max_attempts``
it goes to the dead-letter stream, and its submitter gets a ``WorkerLost``.
An entry that fails for good (Redis refuses its outcome, say a ``WRONGTYPE``
reply stream, or its outcome cannot be encoded) is dead-lettered at once;
only failures that may pass (Redis unreachable or busy) are retried.

A worker that cannot reach Redis for ``unreachable_timeout`` seconds exits,
whatever it holds: its entries stay pending and live workers claim them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from queue import Empty, SimpleQueue
from typing import Any, Final, NamedTuple

from dispatchkit._durations import MAX_SECONDS, check_seconds
from dispatchkit.errors import TransportError, TransportRejected, TransportUnavailable, WorkerLost
from dispatchkit.registry import DEFAULT_REGISTRY, Registry
from dispatchkit.transports._codec import CHUNK_JOB, EncodedJob, decode_job, encode_outcome
from dispatchkit.transports._redis_keys import DEFAULT_NAMESPACE
from dispatchkit.transports.base import Delivery, Transport

from .calls import Called, call_in_loop, call_in_pool, call_in_thread
from .runners import JobRunner, Task, make_runner

__all__ = ["RedisWorker", "WorkerReport", "run_worker"]

logger = logging.getLogger(__name__)

#: Default number of partitions of the key strategy (dispatchers must agree).
DEFAULT_PARTITIONS: Final = 16

#: Seconds a worker keeps retrying an unreachable Redis before it exits (by default).
DEFAULT_UNREACHABLE_TIMEOUT: Final = 30.0

#: Seconds a connection or reply may take before the worker's call fails as unreachable:
#: this or ``unreachable_timeout`` if shorter, plus 0.5 s (a blocking read waits 0.2 s).
_LONGEST_REPLY: Final = 10.0

#: Outcomes acknowledged in one transaction, at most.
_ACK_BATCH: Final = 1024
#: Seconds the acker waits for more outcomes when it has fewer than ``_ACK_LINGER_BELOW``.
_ACK_LINGER: Final = 0.001
_ACK_LINGER_BELOW: Final = 32


class _DeadLetter(NamedTuple):
    """Why an entry goes to the dead-letter stream, and the failure its submitter gets."""

    error: str
    reply: tuple[str, int, BaseException] | None


def _unprocessable(job: EncodedJob, exc: Exception) -> _DeadLetter:
    """Why an entry whose processing failed (not its job: dispatchkit) is dead-lettered."""
    error = RuntimeError(f"processing the entry failed: {_describe(exc)}")
    return _DeadLetter(str(error), (job.reply_to, job.job_id, error))


def _describe(exc: BaseException) -> str:
    try:
        return f"{type(exc).__name__}: {exc}"
    except Exception:  # its message cannot be formed either
        return type(exc).__name__


class _Outage:
    """Since when the worker's calls to Redis fail for want of a server.

    Every thread reports: a call that reached Redis (even one it refused) ends
    the outage, one that could not reach it (or found it busy) starts it.
    """

    def __init__(self, limit: float) -> None:
        self.limit = limit
        self._since: float | None = None

    def reached(self) -> None:
        self._since = None

    def missed(self) -> None:
        if self._since is None:
            self._since = time.monotonic()

    def failed(self, exc: TransportError) -> None:
        """A call failed: a refusal came from Redis, anything else did not."""
        if isinstance(exc, TransportRejected):
            self.reached()
        else:
            self.missed()

    def over(self) -> bool:
        since = self._since
        return since is not None and time.monotonic() - since >= self.limit


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
        prefetch: entries held at once, fetched or running (default twice the
            concurrency); they are read in one XREADGROUP. More helps tiny
            unchunked jobs, fewer spreads slow jobs more evenly over workers.
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
        self._outage = _Outage(check_seconds("unreachable_timeout", unreachable_timeout))
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
            self.name = name or _default_name()
            self._transport = _redis_transport(
                url,
                queue,
                namespace,
                self.name,
                # Bounded waits on Redis: a server that hangs (or a network that drops
                # packets) must count as unreachable too, not block a thread for good.
                socket_timeout=min(self._outage.limit, _LONGEST_REPLY) + 0.5,
            )
        else:
            self.name = _transport_consumer(transport, url, queue, name)
            self._transport = transport
        self._runner: JobRunner = make_runner(executor, concurrency)
        self._executor = executor
        self.keys = self._transport.keys
        self._registry = registry
        self._prefetch = 2 * concurrency if prefetch is None else prefetch
        self._refill = max(1, self._prefetch // 2)
        self._heartbeat = heartbeat
        self._dead_after = dead_after
        self._visibility = visibility_timeout
        self._max_attempts = max_attempts
        self._partitions = partitions
        self._own = self.keys.worker_stream(self.name)

        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)
        # Every entry fetched or claimed and not yet acknowledged, by stream.
        self._held: dict[str, dict[str, Delivery]] = {}
        self._held_count = 0
        # Partition entries waiting for the one before them (one key, one order).
        self._lanes: dict[str, deque[Delivery]] = {}
        self._leases: set[str] = set()  # partition streams whose lease we hold
        self._releasing: set[str] = set()  # leases to give up once their entries are done
        self._adopted: set[str] = set()  # streams of departed workers
        # (entry, reply stream, encoded outcome, (jobs succeeded, jobs failed))
        self._done: SimpleQueue[tuple[Delivery, str, bytes, tuple[int, int]] | None] = SimpleQueue()
        self._stopping = threading.Event()
        self._stop_asked: float | None = None  # time.monotonic() of the first stop()
        # Past the drain deadline: outcomes of jobs still running are dropped, so
        # their entries stay pending for other workers.
        self._abandoning = threading.Event()
        self._beat_stop = threading.Event()
        self._succeeded = self._failed = self._dead = self._claimed = 0

    # -- public ------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the worker to stop: it reads no more, finishes and acknowledges what it holds.

        Safe to call from a signal handler and more than once; the drain deadline
        counts from the first call.
        """
        if self._stop_asked is None:
            self._stop_asked = time.monotonic()
        self._stopping.set()

    def run(self) -> WorkerReport:
        """Register, run jobs until :meth:`stop`, drain, unregister.

        Raises:
            TransportUnavailable: Redis could not be reached at start, or for
                ``unreachable_timeout`` seconds while running (then the worker
                stops at once, even with entries in hand).
            TransportError: another Redis failure.
        """
        self._transport.ping()
        self._register()
        self._runner.start()
        logger.info(
            "worker %s started: queue %s, %s executor, concurrency %d",
            *(self.name, self.keys.prefix, self._executor, self._runner.concurrency),
        )
        acker = threading.Thread(target=self._ack_loop, name=f"{self.name}-acker", daemon=True)
        beat = threading.Thread(target=self._beat_loop, name=f"{self.name}-heartbeat", daemon=True)
        acker.start()
        beat.start()
        abandoned = 0
        try:
            self._fetch_loop()
            # Drain: what we hold runs and is acknowledged; heartbeats go on meanwhile.
            abandoned = self._wait_for_held()
        finally:
            lost = self._outage.over()
            # Heartbeats first: a claim after the drain would hand the runner work
            # it no longer takes.
            self._beat_stop.set()
            beat.join()
            self._runner.shutdown(wait=not (abandoned or lost))
            if (abandoned or lost) and self._runner.pool is not None:
                # Worker processes running past the deadline, or after Redis was
                # lost, are killed: the outcomes they end with would be dropped,
                # as their entries stay pending and run again elsewhere.
                self._runner.pool.stop(cancel=True, timeout=0)
            self._done.put(None)
            acker.join()
            if not lost:  # once Redis is lost nothing reaches it: the others take us for dead
                if abandoned:
                    self._abandon()
                else:
                    self._unregister()
            self._transport.close()
        report = WorkerReport(
            self.name, self._succeeded, self._failed, self._dead, self._claimed, abandoned
        )
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
                "worker %s stopped: %d succeeded, %d failed, %d dead-lettered, %d claimed",
                *(report.name, *counts),
            )
        return report

    def _wait_for_held(self) -> int:
        """Wait until every held entry is acknowledged, or the drain deadline passes.

        Returns:
            How many entries are still held at the deadline (0: all were done).
        """
        deadline = (
            math.inf
            if self._drain_timeout is None
            else (self._stop_asked or time.monotonic()) + self._drain_timeout
        )
        with self._room:
            while self._held_count:
                left = deadline - time.monotonic()
                if left <= 0:
                    # From now on a job that ends is not acknowledged: its entry
                    # stays pending, so another worker runs it (at least once).
                    self._abandoning.set()
                    return self._held_count
                self._check_reachable()
                self._room.wait(min(0.1, left))
        return 0

    def _abandon(self) -> None:
        """Leave at the drain deadline: the held entries stay pending, for others to claim.

        The worker stays in the registry with its last heartbeat, so the others
        take it for dead and claim its entries, and its partitions' leases are
        given up, so their new holders take those at once.
        """
        try:
            for stream in list(self._leases):
                self._transport.release_lease(_partition(stream), self.name)
            self._transport.unregister(self.name, forget=False)
        except TransportError:
            logger.warning("worker %s: could not give up its leases", self.name, exc_info=True)

    def _check_reachable(self) -> None:
        """Raise once Redis has been unreachable for ``unreachable_timeout`` seconds.

        Raises:
            TransportUnavailable: it has.
        """
        if not self._outage.over():
            return
        with self._lock:
            held = self._held_count
        raise TransportUnavailable(
            f"Redis unreachable for {self._outage.limit:g} s; the {held} entries it held "
            "stay pending, for other workers to claim"
        )

    # -- registration --------------------------------------------------------------

    def _register(self) -> None:
        t = self._transport
        for stream in (self._own, self.keys.pull):
            t.open_stream(stream)
        t.register(self.name, self._own)

    def _unregister(self) -> None:
        t = self._transport
        try:
            for stream in list(self._leases):
                t.release_lease(_partition(stream), self.name)
            t.unregister(self.name)
            # Our stream, if jobs were still added to it, is adopted by the others.
            t.delete_stream_if_empty(self._own)
            for stream in {self._own, self.keys.pull, *self._leases, *self._adopted}:
                t.delete_consumer(stream, self.name)
        except TransportError:
            logger.warning("worker %s: could not unregister cleanly", self.name, exc_info=True)

    # -- the fetch loop (main thread) ----------------------------------------------

    def _streams(self) -> list[str]:
        with self._lock:
            live_leases = sorted(self._leases - self._releasing)
            return [self._own, self.keys.pull, *sorted(self._adopted), *live_leases]

    def _fetch_loop(self) -> None:
        while not self._stopping.is_set():
            self._check_reachable()
            with self._room:
                room = self._prefetch - self._held_count
                # Refill in gulps of half the prefetch, not entry by entry: a round
                # trip per entry costs more CPU than the jobs of an io workload.
                if room < self._refill:
                    self._room.wait(0.05)
                    continue
            try:
                deliveries = self._transport.fetch(self._streams(), room, 0.2)
            except TransportError as exc:
                self._outage.failed(exc)
                if "NOGROUP" in str(exc):
                    # A stream went away: an adopted one deleted by another worker once
                    # empty, or our own if we were taken for dead. Start afresh.
                    with self._lock:
                        self._adopted.clear()
                    with contextlib.suppress(TransportError):  # retried on the next error
                        self._register()
                else:
                    logger.warning("worker %s: %s; retrying", self.name, exc)
                    time.sleep(0.5)
                continue
            self._outage.reached()
            self._accept(deliveries)

    def _accept(self, deliveries: Iterable[Delivery]) -> None:
        """Hold the entries and hand them to the runner (partition entries in order)."""
        start: list[Delivery] = []
        with self._lock:
            for delivery in deliveries:
                held = self._held.setdefault(delivery.stream, {})
                if delivery.entry_id in held:
                    continue  # already ours (claimed back): it runs once here
                held[delivery.entry_id] = delivery
                self._held_count += 1
                if delivery.stream.startswith(self._partition_prefix):
                    lane = self._lanes.get(delivery.stream)
                    if lane:  # its predecessor still runs: wait behind it
                        lane.append(delivery)
                        continue
                    self._lanes[delivery.stream] = deque([delivery])
                start.append(delivery)
        submit = self._runner.submit
        for delivery in start:
            submit(self._task(delivery))

    @property
    def _partition_prefix(self) -> str:
        return self.keys.partition(0)[:-1]

    def _task(self, delivery: Delivery) -> Task:
        if self._runner.on_loop:
            return lambda: self._process_in_loop(delivery)
        return lambda: self._process(delivery)

    # -- running one entry (runner threads, or tasks on the runner's loop) ------------

    def _process(self, delivery: Delivery) -> None:
        try:
            prepared = self._prepare(delivery)
            if isinstance(prepared, _DeadLetter):
                self._dead_letter(delivery, *prepared)
                return
            job, fn, chunk = prepared
            try:
                pool = self._runner.pool
                called = (
                    call_in_thread(fn, job, chunk)
                    if pool is None
                    else call_in_pool(pool, fn, job, chunk)
                )
                self._finish(delivery, job, called)
            except Exception as exc:  # it would fail again: never leave it pending
                self._dead_letter(delivery, *_unprocessable(job, exc))
        finally:
            self._next_in_lane(delivery)

    async def _process_in_loop(self, delivery: Delivery) -> None:
        try:
            prepared = self._prepare(delivery)
            if isinstance(prepared, _DeadLetter):
                # Redis round trips: in a thread, so the loop's other jobs go on.
                await asyncio.to_thread(self._dead_letter, delivery, *prepared)
            else:
                job, fn, chunk = prepared
                try:
                    self._finish(delivery, job, await call_in_loop(fn, job, chunk))
                except Exception as exc:  # it would fail again: never leave it pending
                    dead = _unprocessable(job, exc)
                    await asyncio.to_thread(self._dead_letter, delivery, *dead)
        finally:
            self._next_in_lane(delivery)

    def _prepare(
        self, delivery: Delivery
    ) -> tuple[EncodedJob, Callable[..., Any], bool] | _DeadLetter:
        """The job, its function and whether it is a chunk; or why to dead-letter it."""
        if delivery.payload is None:
            return _DeadLetter("not a job entry: no job field", None)
        try:
            job = decode_job(delivery.payload)
        except ValueError as exc:
            return _DeadLetter(str(exc), None)
        if delivery.attempts > self._max_attempts:
            error = WorkerLost(
                f"job {job.name!r} was delivered {delivery.attempts} times and its worker "
                f"died each time (max_attempts={self._max_attempts})"
            )
            return _DeadLetter(str(error), (job.reply_to, job.job_id, error))
        chunk = job.name == CHUNK_JOB
        try:
            if chunk and not (len(job.args) == 2 and isinstance(job.args[1], list)):
                raise KeyError("a chunk entry needs [job name, [arguments, ...]]")
            fn = self._registry.get(job.args[0] if chunk else job.name)
        except KeyError as exc:
            unknown = LookupError(str(exc.args[0]))
            return _DeadLetter(str(unknown), (job.reply_to, job.job_id, unknown))
        return job, fn, chunk

    def _finish(self, delivery: Delivery, job: EncodedJob, called: Called) -> None:
        """Hand the outcome to the acker (a job without ``reply_to`` wants none)."""
        if self._abandoning.is_set():
            return  # past the drain deadline: the entry is left for another worker
        value, ok, counts = called
        if not job.reply_to:
            # Fire and forget (an ingest service's payload): nobody reads an
            # outcome, so a failure is told here.
            if not ok:
                logger.warning(
                    "worker %s: job %r failed: %s",
                    *(self.name, job.name, f"{type(value).__name__}: {value}"),
                )
            self._done.put((delivery, "", b"", counts))
            return
        outcome = encode_outcome(job.job_id, ok, value, self.name, delivery.attempts)
        self._done.put((delivery, job.reply_to, outcome, counts))

    def _dead_letter(
        self, delivery: Delivery, error: str, reply: tuple[str, int, BaseException] | None
    ) -> None:
        logger.warning(
            "worker %s: entry %s of %s dead-lettered: %s",
            *(self.name, delivery.entry_id, delivery.stream, error),
        )
        try:
            if reply is not None and reply[0]:  # someone waits for the outcome
                reply_to, job_id, exc = reply
                outcome = encode_outcome(job_id, False, exc, self.name, delivery.attempts)
                try:
                    self._transport.ack([], [(reply_to, outcome)])
                except TransportRejected as refused:  # dead-lettered all the same
                    error = f"{error}; its failure could not be stored either: {refused}"
            self._transport.nack(delivery, error)
        except TransportRejected:
            # Retrying cannot help: the entry is given up, and the log says so.
            logger.error(
                "worker %s: Redis refused to dead-letter an entry", self.name, exc_info=True
            )
        except TransportError:
            # Left pending: it is claimed again later and lands here once more.
            logger.error("worker %s: could not dead-letter an entry", self.name, exc_info=True)
        with self._lock:
            self._dead += 1
        self._release_held([delivery])

    def _next_in_lane(self, delivery: Delivery) -> None:
        lane = self._lanes.get(delivery.stream)
        if lane is None:
            return
        with self._lock:
            lane.popleft()
            following = lane[0] if lane else None
            if following is None:
                del self._lanes[delivery.stream]
        if following is not None:
            self._runner.submit(self._task(following))

    def _release_held(self, deliveries: Iterable[Delivery]) -> None:
        with self._room:
            for delivery in deliveries:
                held = self._held.get(delivery.stream)
                if held is not None and held.pop(delivery.entry_id, None) is not None:
                    self._held_count -= 1
            self._room.notify_all()

    # -- acknowledging (acker thread) -----------------------------------------------

    def _ack_loop(self) -> None:
        finished = False
        while not finished:
            first = self._done.get()
            if first is None:
                break
            batch = [first]
            for linger in (False, True):
                if linger:
                    with self._lock:
                        # Never while the fetcher waits for room we would free.
                        fetcher_waits = self._prefetch - self._held_count < self._refill
                    if finished or fetcher_waits or len(batch) >= _ACK_LINGER_BELOW:
                        break
                    # A few outcomes at a time cost a transaction each: wait a
                    # moment for more (io jobs finish one by one).
                    time.sleep(_ACK_LINGER)
                while len(batch) < _ACK_BATCH:
                    try:
                        item = self._done.get_nowait()
                    except Empty:
                        break
                    if item is None:
                        finished = True
                        break
                    batch.append(item)
            refused = self._store([(d, reply_to, outcome) for d, reply_to, outcome, _ in batch])
            for delivery, error in refused:
                self._dead_letter(delivery, f"its outcome could not be stored: {error}", None)
            given_up = {(d.stream, d.entry_id) for d, _ in refused}
            counted = [
                item[3] for item in batch if (item[0].stream, item[0].entry_id) not in given_up
            ]
            self._succeeded += sum(succeeded for succeeded, _ in counted)
            self._failed += sum(failed for _, failed in counted)
            self._release_held([item[0] for item in batch])

    def _store(self, done: list[tuple[Delivery, str, bytes]]) -> list[tuple[Delivery, str]]:
        """Store the outcomes and acknowledge the entries; return those Redis refused.

        A failure that may pass is retried until Redis has been unreachable for
        ``unreachable_timeout``; then the entries stay pending in Redis, and
        another worker claims and runs them again. Nothing is lost.
        """
        while True:
            try:
                refused = self._transport.ack_outcomes(done)
            except TransportError as exc:
                self._outage.failed(exc)
                if self._outage.over():
                    logger.critical(
                        "worker %s: could not store %d outcomes; they will run again",
                        *(self.name, len(done)),
                        exc_info=True,
                    )
                    return []
                # Keep the outcomes: the entries stay ours (touched) until stored.
                logger.error("worker %s: acknowledging failed; retrying", self.name)
                time.sleep(0.5)
                continue
            self._outage.reached()
            return refused

    # -- heartbeats, claims, leases (heartbeat thread) --------------------------------

    def _beat_loop(self) -> None:
        while not self._beat_stop.wait(self._heartbeat * random.uniform(0.8, 1.0)):
            try:
                self._beat()
                self._outage.reached()
            except TransportError as exc:
                self._outage.failed(exc)
                logger.warning("worker %s: heartbeat failed", self.name, exc_info=True)
            except Exception:
                logger.critical("worker %s: heartbeat crashed", self.name, exc_info=True)

    def _beat(self) -> None:
        t = self._transport
        draining = self._stopping.is_set()
        peers = t.heartbeat(self.name, draining=draining, dead_after=self._dead_after)
        with self._lock:
            held = {s: list(ids) for s, ids in self._held.items() if ids}
        t.touch(held)  # our entries are not idle, whoever looks
        self._renew_leases()
        if draining:
            self._release_leases(all_of_them=True)
            return
        for worker in peers.dead:
            self._reap(worker)
        self._adopt(peers.streams, peers.live)
        self._claim_idle()
        active = len(peers.live - peers.draining) or 1
        self._balance_leases(math.ceil(self._partitions / active))

    def _reap(self, worker: str) -> None:
        """Claim what a dead worker held, then forget it.

        Of the partitions, only those whose lease this worker holds: the others'
        entries are left to whoever holds or takes their lease (``_claim_idle``,
        ``_acquire_leases``), since here they could run beside the partition's
        later entries on another worker.
        """
        t = self._transport
        partitions = [self.keys.partition(i) for i in range(self._partitions)]
        with self._lock:
            leased = sorted(self._leases - self._releasing)
        claimable = [self.keys.pull, *self._known_worker_streams(), *leased]
        total = 0
        for stream in claimable:
            claimed = t.claim_from(stream, worker, self._dead_after)
            total += len(claimed)
            self._take_claimed(claimed)
        left = 0
        # A consumer that still has pending entries is kept (delete_consumer says
        # so): the worker is forgotten once the partitions' new holders took them.
        for stream in [*claimable, *(p for p in partitions if p not in leased)]:
            if not t.delete_consumer(stream, worker):
                left += 1
        if left == 0:
            t.forget_worker(worker)
        if total:
            logger.warning(
                "worker %s: claimed %d entries of dead worker %s", self.name, total, worker
            )

    def _known_worker_streams(self) -> list[str]:
        return sorted(self._transport.worker_streams())

    def _adopt(self, streams: Iterable[str], live: Iterable[str]) -> None:
        """Read the streams of departed workers until they are empty, then delete them."""
        prefix = self.keys.worker_stream("")
        for stream in streams:
            owner = stream[len(prefix) :]
            if owner in live or stream == self._own:
                continue
            with self._lock:
                busy = bool(self._held.get(stream))
            if not busy and self._transport.delete_stream_if_empty(stream):
                with self._lock:
                    self._adopted.discard(stream)
                continue
            if stream not in self._adopted:
                self._transport.open_stream(stream)
                with self._lock:
                    self._adopted.add(stream)

    def _claim_idle(self) -> None:
        with self._lock:
            streams = [self._own, self.keys.pull, *self._adopted, *self._leases]
        for stream in streams:
            self._take_claimed(self._transport.claim_idle(stream, self._visibility))

    def _take_claimed(self, claimed: list[Delivery]) -> None:
        if claimed:
            self._claimed += len(claimed)
            self._accept(claimed)

    def _renew_leases(self) -> None:
        with self._lock:
            leases = list(self._leases)
        for stream in leases:
            if not self._transport.renew_lease(_partition(stream), self.name, self._dead_after):
                with self._lock:
                    self._leases.discard(stream)
                    self._releasing.discard(stream)

    def _balance_leases(self, share: int) -> None:
        with self._lock:
            held = len(self._leases - self._releasing)
        if held > share:
            with self._lock:
                extra = sorted(self._leases - self._releasing)[: held - share]
                self._releasing.update(extra)
        elif held < share:
            self._acquire_leases(share - held)
        self._release_leases(all_of_them=False)

    def _acquire_leases(self, wanted: int) -> None:
        t = self._transport
        order = list(range(self._partitions))
        random.shuffle(order)
        for index in order:
            if wanted == 0:
                return
            stream = self.keys.partition(index)
            if stream in self._leases:
                continue
            if not t.take_lease(index, self.name, self._dead_after):
                continue
            t.open_stream(stream)
            # The previous holder died or left: what it held runs first, in order.
            self._take_claimed(t.claim_idle(stream, 0, everything=True))
            with self._lock:
                self._leases.add(stream)
            wanted -= 1

    def _release_leases(self, all_of_them: bool) -> None:
        with self._lock:
            if all_of_them:
                self._releasing |= self._leases
            idle = [s for s in self._releasing if not self._held.get(s)]
        for stream in idle:
            self._transport.release_lease(_partition(stream), self.name)
            with self._lock:
                self._leases.discard(stream)
                self._releasing.discard(stream)


def _partition(stream: str) -> int:
    """The index of a partition stream."""
    return int(stream.rsplit(":", 1)[1])


def _default_name() -> str:
    from dispatchkit.transports.redis import default_consumer_name

    return default_consumer_name()


def _redis_transport(
    url: str | None, queue: str | None, namespace: str, consumer: str, socket_timeout: float
) -> Transport:
    """The Redis transport of a worker or dispatcher given a URL (redis-py loads here)."""
    if url is None or queue is None:
        raise ValueError("give the Redis URL and the queue, or a transport")
    from dispatchkit.transports.redis import RedisTransport

    return RedisTransport(
        url, queue=queue, namespace=namespace, consumer=consumer, socket_timeout=socket_timeout
    )


def _transport_consumer(
    transport: Transport, url: str | None, queue: str | None, name: str | None
) -> str:
    """The worker's name given a transport: its consumer name (checked against the rest)."""
    if url is not None:
        raise ValueError("give either a Redis URL or a transport, not both")
    if queue is not None and queue != transport.keys.queue:
        raise ValueError(f"queue {queue!r} is not the transport's ({transport.keys.queue!r})")
    if not transport.consumer:
        raise ValueError("a worker's transport needs a consumer name (the worker's)")
    if name is not None and name != transport.consumer:
        raise ValueError(f"name {name!r} is not the transport's consumer ({transport.consumer!r})")
    return transport.consumer


def run_worker(
    url: str,
    queue: str,
    *,
    imports: Iterable[str] = (),
    concurrency: int = 1,
    executor: str = "thread",
    **options: object,
) -> WorkerReport:
    """Import the job modules, then run a worker until SIGTERM or SIGINT.

    A signal stops it gracefully: it reads no more, finishes and acknowledges
    what it holds, and returns.

    Raises:
        ImportError: a module in ``imports`` cannot be imported.
        ValueError: a bad argument.
        TransportError: Redis failed (TransportUnavailable if it cannot be reached).
    """
    import importlib
    import signal

    for module in imports:
        importlib.import_module(module)
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

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        return worker.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
