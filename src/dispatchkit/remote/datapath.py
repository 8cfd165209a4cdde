"""The data path of a remote worker: fetch entries, run their jobs, acknowledge their outcomes.

    fetch loop (main thread): transport.fetch ──▶ held, lanes ──▶ runner
        (the runner: threads, a process pool, or tasks on one event loop)
    runner: decode, look up (entries.py), call ──▶ done queue   (or dead-letter the entry)
    acker thread: done queue ──▶ transport.ack_outcomes (one transaction per batch)

Every entry fetched or claimed is *held* until its outcome is acknowledged; at
most ``prefetch`` are held at once, and fewer while entries take long: a worker
holds one entry per runner slot, and beyond that only as many as its slots
would start within ``_HORIZON`` seconds at the entry time it measured (none
before it measured one). Entries it could not start soon stay in the stream
for the workers that can: fair prefetch, even for entries queued before
several workers start. When running entries turn out slow, so that held ones
would start only past ``_GIVE_BACK_AFTER``, the worker gives those back
(:mod:`.giveback`) and fetches no more until an entry ends; a draining worker
gives back every unstarted entry at once. A partition's entries (the key strategy)
wait in a lane behind the one before them, so one key keeps its order.

The streams to read, and what to do when one went away, come from the
worker's membership (:mod:`.membership`), which also hands claimed entries in
through :meth:`DataPath.accept`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from queue import Empty, SimpleQueue
from typing import Final

from dispatchkit.errors import TransportError, TransportRejected, TransportUnavailable
from dispatchkit.registry import Registry
from dispatchkit.transports._codec import EncodedJob, encode_outcome
from dispatchkit.transports.base import Delivery, Transport

from ._outage import Outage
from .calls import (
    Called,
    call_in_loop,
    call_in_pool,
    call_in_thread,
    retry_in_loop,
    retry_in_pool,
    retry_in_thread,
    unread_failure,
)
from .entries import DeadLetter, prepare, unprocessable
from .giveback import Unstarted, destinations
from .runners import JobRunner, Task

__all__ = ["DataPath"]

logger = logging.getLogger(__name__)

#: Outcomes acknowledged in one transaction, at most.
_ACK_BATCH: Final = 1024
#: Seconds the acker waits for more outcomes when it has fewer than ``_ACK_LINGER_BELOW``.
_ACK_LINGER: Final = 0.001
_ACK_LINGER_BELOW: Final = 32

#: Seconds ahead a worker holds work for: beyond one entry per runner slot, the
#: entries its slots would start within this time (at the measured entry time).
_HORIZON: Final = 0.05
#: Weight of the newest entry's time in the running measure of entry times.
_ENTRY_TIME_WEIGHT: Final = 0.2
#: Seconds ahead past which a held entry's predicted start makes it overdue: it is
#: given back. Twice the horizon, so that a measure that merely wavers gives back none.
_GIVE_BACK_AFTER: Final = 2 * _HORIZON


class DataPath:
    """Fetches, runs and acknowledges the entries of one worker.

    Args:
        name: the worker's name (its consumer name).
        transport: where entries come from and outcomes go.
        runner: where jobs run.
        registry: where job names are looked up.
        prefetch: entries held at once, at most.
        max_attempts: deliveries of one entry before it is dead-lettered.
        outage: the worker's record of failed calls.
        partition_prefix: the start of every partition stream's name.
        lock: the lock shared with the worker's membership.
    """

    def __init__(
        self,
        *,
        name: str,
        transport: Transport,
        runner: JobRunner,
        registry: Registry,
        prefetch: int,
        max_attempts: int,
        outage: Outage,
        partition_prefix: str,
        lock: threading.Lock,
    ) -> None:
        self.name = name
        self._transport = transport
        self._runner = runner
        self._registry = registry
        self._prefetch = prefetch
        self._refill = max(1, prefetch // 2)
        #: Seconds an entry runs, measured (None: none has run yet).
        self.entry_seconds: float | None = None
        self._max_attempts = max_attempts
        self._outage = outage
        self._partition_prefix = partition_prefix
        self.lock = lock
        self._room = threading.Condition(lock)
        #: Every entry fetched or claimed and not yet acknowledged, by stream.
        self.held: dict[str, dict[str, Delivery]] = {}
        self.held_count = 0
        # Partition entries waiting for the one before them (one key, one order).
        self._lanes: dict[str, deque[Delivery]] = {}
        self._unstarted = Unstarted()
        # Entries were given back as overdue: fetch none until an entry ends.
        self._stalled = False
        self._next_look = 0.0
        # (entry, reply stream, encoded outcome, (jobs succeeded, jobs failed))
        self._done: SimpleQueue[tuple[Delivery, str, bytes, tuple[int, int]] | None] = SimpleQueue()
        #: Set by the worker's stop(): the fetch loop reads no more.
        self.stopping = threading.Event()
        # Past the drain deadline: outcomes of jobs still running are dropped, so
        # their entries stay pending for other workers.
        self._abandoning = threading.Event()
        self.succeeded = self.failed = self.dead = self.given_back = 0
        #: The streams to read now (given by the membership).
        self.streams: Callable[[], list[str]] = list
        #: Called when a stream read went away (the membership starts afresh).
        self.on_missing_stream: Callable[[], None] = lambda: None

    # -- the fetch loop (main thread) ----------------------------------------------

    def fetch_loop(self) -> None:
        """Fetch and start entries until :attr:`stopping` is set.

        Raises:
            TransportUnavailable: the server has been unreachable for too long.
        """
        while not self.stopping.is_set():
            self.check_reachable()
            if self._unstarted.entries and time.perf_counter() >= self._next_look:
                self._next_look = time.perf_counter() + _HORIZON
                seconds = self.entry_seconds or 0.0
                late = self._unstarted.overdue(self._runner.concurrency, seconds, _GIVE_BACK_AFTER)
                self.give_back(late, draining=False)
            with self._room:
                room, gulp = self._room_and_gulp()
                if room < gulp:
                    self._room.wait(0.05)
                    continue
            try:
                deliveries = self._transport.fetch(self.streams(), room, 0.2)
            except TransportError as exc:
                self._outage.failed(exc)
                if "NOGROUP" in str(exc):
                    # A stream went away: an adopted one deleted by another worker once
                    # empty, or our own if we were taken for dead. Start afresh.
                    self.on_missing_stream()
                else:
                    logger.warning("worker %s: %s; retrying", self.name, exc)
                    time.sleep(0.5)
                continue
            self._outage.reached()
            self.accept(deliveries)

    def _room_and_gulp(self) -> tuple[int, int]:
        """How many more entries to hold now, and the fewest worth a fetch (under the lock).

        The limit is one entry per runner slot, plus what the slots would start
        within ``_HORIZON`` at the measured entry time, never past ``prefetch``.
        Short entries are fetched in gulps of up to half of what may be held
        ahead (a round trip per entry costs more CPU than the jobs of an io
        workload); long ones one by one, as slots free up. Once overdue entries
        were given back, no more than those held (one at least) until an entry ends.
        """
        slots = self._runner.concurrency
        seconds = self.entry_seconds
        ahead = 0 if seconds is None else int(slots * _HORIZON / max(seconds, 1e-6))
        limit = max(1, min(self._prefetch, slots + ahead))
        if self._stalled:  # one at least: an entry that ended just before did not reset it
            limit = max(1, min(limit, self.held_count))
        gulp = max(1, min(self._refill, (limit - slots) // 2))
        return limit - self.held_count, gulp

    def _measured(self, started: float) -> None:
        """Fold the time of an entry that ran since ``started`` into :attr:`entry_seconds`."""
        seconds = time.perf_counter() - started
        last = self.entry_seconds
        w = _ENTRY_TIME_WEIGHT
        self.entry_seconds = seconds if last is None else last + w * (seconds - last)
        self._stalled = False

    def accept(self, deliveries: Iterable[Delivery]) -> None:
        """Hold the entries and hand them to the runner (partition entries in order)."""
        start: list[Delivery] = []
        with self.lock:
            for delivery in deliveries:
                held = self.held.setdefault(delivery.stream, {})
                if delivery.entry_id in held:
                    continue  # already ours (claimed back): it runs once here
                held[delivery.entry_id] = delivery
                self.held_count += 1
                if delivery.stream.startswith(self._partition_prefix):
                    lane = self._lanes.get(delivery.stream)
                    if lane:  # its predecessor still runs: wait behind it
                        lane.append(delivery)
                        continue
                    self._lanes[delivery.stream] = deque([delivery])
                start.append(delivery)
                self._unstarted.add(delivery)
        submit = self._runner.submit
        for delivery in start:
            submit(self._task(delivery))

    def give_back(self, deliveries: list[Delivery], *, draining: bool) -> None:
        """Give back those of ``deliveries`` still unstarted (where to: :func:`destinations`);
        if the server fails, they are started here after all."""
        keys, prefix = self._transport.keys, self._partition_prefix
        own = keys.worker_stream(self.name)
        where = destinations(deliveries, own, keys.pull, prefix, draining=draining)
        back = self._unstarted.take(where)
        if not back:
            return
        try:
            given = self._transport.requeue(back)
        except TransportError as exc:
            self._outage.failed(exc)
            logger.warning("worker %s: giving back failed (%s): running them", self.name, exc)
            for delivery, *_ in back:  # its task may have passed already: a new one
                self._unstarted.add(delivery)
                self._runner.submit(self._task(delivery))
            return
        self._outage.reached()
        with self._room:
            self.given_back += sum(given)
            self._stalled = self._stalled or (not draining and any(given))
        # Given back, or (not given) held by another worker now: not ours to run.
        self._release_held([delivery for delivery, *_ in back])
        if any(given):
            why = "draining" if draining else "its slots would start them late"
            logger.info("worker %s: gave back %d unstarted entries: %s", self.name, sum(given), why)

    def give_back_unstarted(self) -> None:
        """Give back every unstarted entry at once (the worker drains)."""
        self.give_back(list(self._unstarted.entries.values()), draining=True)

    def wait_for_held(self, deadline: float) -> int:
        """Wait until every held entry is acknowledged, or ``deadline`` (monotonic) passes.

        Returns:
            How many entries are still held at the deadline (0: all were done).

        Raises:
            TransportUnavailable: the server has been unreachable for too long.
        """
        with self._room:
            while self.held_count:
                left = deadline - time.monotonic()
                if left <= 0:
                    # From now on a job that ends is not acknowledged: its entry
                    # stays pending, so another worker runs it (at least once).
                    self._abandoning.set()
                    return self.held_count
                self.check_reachable()
                self._room.wait(min(0.1, left))
        return 0

    def check_reachable(self) -> None:
        """Raise once the server has been unreachable for the outage's limit.

        Raises:
            TransportUnavailable: it has.
        """
        if not self._outage.over():
            return
        with self.lock:
            held = self.held_count
        raise TransportUnavailable(
            f"Redis unreachable for {self._outage.limit:g} s; the {held} entries it held "
            "stay pending, for other workers to claim"
        )

    def _task(self, delivery: Delivery) -> Task:
        if self._runner.on_loop:
            return lambda: self._process_in_loop(delivery)
        return lambda: self._process(delivery)

    # -- running one entry (runner threads, or tasks on the runner's loop) ------------

    def _process(self, delivery: Delivery) -> None:
        started = self._unstarted.begin(delivery)
        if started is None:
            return  # given back
        try:
            prepared = prepare(delivery, self._registry, self._max_attempts)
            if isinstance(prepared, DeadLetter):
                self._dead_letter(delivery, *prepared)
                return
            job, fn, chunk, options = prepared
            try:
                pool = self._runner.pool
                if options is not None:  # a timeout or a retry policy (submit_job)
                    called, runs = (
                        retry_in_thread(fn, job, *options)
                        if pool is None
                        else retry_in_pool(pool, fn, job, *options)
                    )
                    self._finish(delivery, job, called, runs)
                    return
                called = (
                    call_in_thread(fn, job, chunk)
                    if pool is None
                    else call_in_pool(pool, fn, job, chunk)
                )
                self._finish(delivery, job, called)
            except Exception as exc:  # it would fail again: never leave it pending
                self._dead_letter(delivery, *unprocessable(job, exc))
        finally:
            self._ended(delivery, started)

    async def _process_in_loop(self, delivery: Delivery) -> None:
        started = self._unstarted.begin(delivery)
        if started is None:
            return  # given back
        try:
            prepared = prepare(delivery, self._registry, self._max_attempts)
            if isinstance(prepared, DeadLetter):
                # Round trips to the server: in a thread, so the loop's other jobs go on.
                await asyncio.to_thread(self._dead_letter, delivery, *prepared)
            else:
                job, fn, chunk, options = prepared
                try:
                    if options is not None:  # a timeout or a retry policy (submit_job)
                        called, runs = await retry_in_loop(fn, job, *options)
                        self._finish(delivery, job, called, runs)
                    else:
                        self._finish(delivery, job, await call_in_loop(fn, job, chunk))
                except Exception as exc:  # it would fail again: never leave it pending
                    dead = unprocessable(job, exc)
                    await asyncio.to_thread(self._dead_letter, delivery, *dead)
        finally:
            self._ended(delivery, started)

    def _ended(self, delivery: Delivery, started: float) -> None:
        self._unstarted.end(delivery)
        self._measured(started)
        self._next_in_lane(delivery)

    def _finish(self, delivery: Delivery, job: EncodedJob, called: Called, runs: int = 1) -> None:
        """Hand the outcome to the acker (a job without ``reply_to`` wants none).

        ``runs``: how often the job ran in this delivery (more with a retry policy).
        """
        if self._abandoning.is_set():
            return  # past the drain deadline: the entry is left for another worker
        value, ok, counts = called
        if not job.reply_to:
            # Fire and forget (an ingest service's payload, dispatch(forget=True)):
            # nobody reads an outcome, so a failure is told here (and counted).
            if (failure := unread_failure(job, called)) is not None:
                logger.warning("worker %s: %s", self.name, failure)
            self._done.put((delivery, "", b"", counts))
            return
        attempts = delivery.attempts + runs - 1
        outcome = encode_outcome(job.job_id, ok, value, self.name, attempts)
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
        with self.lock:
            self.dead += 1
        self._release_held([delivery])

    def _next_in_lane(self, delivery: Delivery) -> None:
        lane = self._lanes.get(delivery.stream)
        if lane is None:
            return
        with self.lock:
            lane.popleft()
            following = lane[0] if lane else None
            if following is None:
                del self._lanes[delivery.stream]
        if following is not None:
            self._unstarted.add(following)
            self._runner.submit(self._task(following))

    def _release_held(self, deliveries: Iterable[Delivery]) -> None:
        with self._room:
            for delivery in deliveries:
                held = self.held.get(delivery.stream)
                if held is not None and held.pop(delivery.entry_id, None) is not None:
                    self.held_count -= 1
            self._room.notify_all()

    # -- acknowledging (acker thread) -----------------------------------------------

    def end_acks(self) -> None:
        """Tell the acker that no outcome comes any more: it stores what it has and returns."""
        self._done.put(None)

    def ack_loop(self) -> None:
        finished = False
        while not finished:
            first = self._done.get()
            if first is None:
                break
            batch = [first]
            for linger in (False, True):
                if linger:
                    with self.lock:
                        # Never while the fetcher waits for room we would free.
                        room, gulp = self._room_and_gulp()
                        fetcher_waits = room < gulp
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
            self.succeeded += sum(succeeded for succeeded, _ in counted)
            self.failed += sum(failed for _, failed in counted)
            self._release_held([item[0] for item in batch])

    def _store(self, done: list[tuple[Delivery, str, bytes]]) -> list[tuple[Delivery, str]]:
        """Store the outcomes and acknowledge the entries; return those the server refused.

        A failure that may pass is retried until the server has been unreachable
        for the outage's limit; then the entries stay pending, and another worker
        claims and runs them again. Nothing is lost.
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
