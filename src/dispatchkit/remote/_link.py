"""The I/O half of :class:`~dispatchkit.remote.RedisDispatcher`: its two threads.

    outbox ──flusher thread: pipelined XADD──▶ job streams
    Waiting records ◀──listener thread: XREAD results stream── workers

Outcomes are delivered at least once: a duplicate (the job ran twice after its
worker died) finds its entry settled already and is dropped.

An entry still waiting ``visibility`` seconds after it was published is
checked (by the listener, many in one pipelined round trip, each at most once
per timeout): if it is neither in its stream nor pending in the group, and no
outcome came, the entry vanished (Redis restarted without persistence, say) and
its jobs fail with :class:`~dispatchkit.errors.JobVanished`. A worker that gives an
entry back unstarted adds it again under a new id and, in the same atomic step,
stores a move in the results stream: the listener then looks for the new id.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Sized
from itertools import groupby
from typing import Any, Final

from dispatchkit.errors import JobVanished, TransportError
from dispatchkit.strategies import Strategy, stable_hash
from dispatchkit.transports._codec import Moved, decode_reply
from dispatchkit.transports.base import Transport

from .outcomes import Waiting

__all__ = ["Link"]

logger = logging.getLogger(__name__)

#: Entries published in one pipelined round trip, at most.
_PUBLISH_BATCH: Final = 2048
#: Outcomes read in one XREAD, at most.
_READ_BATCH: Final = 2048
#: Entries looked for in one pipelined round trip, at most.
_CHECK_BATCH: Final = 1024
#: Seconds between two looks for vanished entries, at most.
_CHECK_EVERY: Final = 5.0
#: Seconds to wait before publishing again to a stream that was full.
_FULL_WAIT: Final = 0.05


class Link:
    """Publishes the outbox and settles each :class:`Waiting` entry from its outcome.

    Args:
        transport: the queue's transport.
        results: this dispatcher's results stream.
        strategy: routes each entry (by what it declares).
        partitions: partitions of a keyed strategy.
        worker_wait: seconds to wait for a registered worker to route to.
        visibility: seconds after which a waiting entry is looked for.
        capacity: entries of a stream at most, for those whose outcome nobody wants.
        freed: called once per entry settled (a slot of the capacity is free).
    """

    def __init__(
        self,
        transport: Transport,
        results: str,
        strategy: Strategy,
        *,
        partitions: int,
        worker_wait: float,
        visibility: float,
        capacity: int,
        freed: Callable[[], None],
    ) -> None:
        self._transport, self.keys, self._results = transport, transport.keys, results
        self._strategy, self._partitions = strategy, partitions
        self._worker_wait, self._visibility, self._freed = worker_wait, visibility, freed
        self._capacity = capacity
        self.lock = threading.Lock()
        self._wake = threading.Condition(self.lock)  # the flusher's: the outbox has entries
        self._awaited = threading.Condition(self.lock)  # the listener's: an outcome is due
        self._outbox: deque[tuple[Waiting, Hashable, bytes]] = deque()
        #: Every entry submitted whose outcome has not come, by its id.
        self.waiting: dict[int, Waiting] = {}
        # Where each published, unsettled entry is, and when to look for it:
        # in order of that time (published in order; one looked at goes last).
        self._placed: dict[int, tuple[str, str, float]] = {}
        self._last_outcome = "0-0"
        self._unread = 0
        self._stopping = threading.Event()
        self._workers: list[str] = []
        self._workers_at = 0.0
        self.published = self.succeeded = self.failed = self.cancelled = self.duplicates = 0
        #: Jobs published with no outcome wanted (``dispatch(forget=True)``).
        self.forgotten = 0
        self._threads = [
            threading.Thread(target=self._flush_loop, name="redis-flusher", daemon=True),
            threading.Thread(target=self._listen, name="redis-listener", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def send(self, entry: Waiting, key: Hashable, payload: bytes) -> None:
        """Queue an entry for the flusher (the caller holds :attr:`lock`)."""
        self.waiting[entry.seq] = entry
        if len(self.waiting) == 1:
            self._awaited.notify()
        self._outbox.append((entry, key, payload))
        if len(self._outbox) == 1:
            self._wake.notify()

    def cancel_waiting(self, why: str) -> None:
        """Cancel every entry not yet published or still waiting for its outcome."""
        with self.lock:
            self._outbox.clear()  # never published: nobody will run them
            left = list(self.waiting.values())
            self.waiting.clear()
            self._placed.clear()
        for entry in left:
            entry.cancel(why, self._count)
            self._freed()

    def _count(self, succeeded: int, failed: int, cancelled: int) -> None:
        with self.lock:
            self.succeeded += succeeded
            self.failed += failed
            self.cancelled += cancelled

    def release(self) -> None:
        """Stop both threads (once nothing waits) and drop the results stream. Idempotent."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        with self.lock:
            self._wake.notify()
            self._awaited.notify()
        for thread in self._threads:
            thread.join()
        try:
            self._transport.drop_outcomes(self._results)
        except TransportError:
            logger.warning("could not delete %s", self._results)
        self._transport.close()

    def _work_in(self, work: Sized, changed: threading.Condition) -> bool:
        """Wait (holding ``changed``) for ``work`` to be non-empty; False: stopped, none left."""
        while not work and not self._stopping.is_set():
            changed.wait(0.5)
        return bool(work)

    # -- publishing (flusher thread) ---------------------------------------------------

    def _flush_loop(self) -> None:
        while True:
            with self._wake:
                if not self._work_in(self._outbox, self._wake):
                    return
                count = min(len(self._outbox), _PUBLISH_BATCH)
                batch = [self._outbox.popleft() for _ in range(count)]
            # In runs of one kind, so that entries keep their order.
            for forget, run in groupby(batch, key=lambda item: item[0].forget):
                if forget:
                    self._publish_forgotten(list(run))
                else:
                    self._publish(list(run))

    def _publish(self, batch: list[tuple[Waiting, Hashable, bytes]]) -> None:
        try:
            entries = [(self._stream_of(e.seq, key), payload) for e, key, payload in batch]
            ids = self._transport.put(entries)
            self.published += len(entries)
            due = time.monotonic() + self._visibility
            with self.lock:
                for (e, _, _), (stream, _), entry_id in zip(batch, entries, ids, strict=True):
                    # Not settled already, nor given back and moved meanwhile.
                    if e.seq in self.waiting and e.seq not in self._placed:
                        self._placed[e.seq] = (stream, entry_id, due)
        except (TransportError, LookupError) as exc:
            self._fail_publish(batch, exc)

    def _fail_publish(self, batch: list[tuple[Waiting, Hashable, bytes]], exc: Exception) -> None:
        """These entries could not be published: each job fails with ``exc``."""
        logger.error("publishing %d entries failed: %s", len(batch), exc)
        for e, _, _ in batch:
            self.settle(e.seq, False, exc, 0)

    def _publish_forgotten(self, batch: list[tuple[Waiting, Hashable, bytes]]) -> None:
        """Publish entries whose outcome nobody wants; each ends here, as forgotten.

        No outcome frees their room, so the bound is their stream's length: an
        entry is added only while the stream holds fewer than ``capacity``; those
        that do not fit go back to the head of the outbox, and are tried again shortly.
        """
        by_stream: dict[str, list[tuple[Waiting, Hashable, bytes]]] = {}
        try:
            for item in batch:
                by_stream.setdefault(self._stream_of(item[0].seq, item[1]), []).append(item)
        except LookupError as exc:
            self._fail_publish(batch, exc)
            return
        left: list[tuple[Waiting, Hashable, bytes]] = []
        for stream, items in by_stream.items():
            try:
                _, fitted = self._transport.put_if_room(
                    stream, self._capacity, [[payload] for _, _, payload in items]
                )
            except TransportError as exc:
                self._fail_publish(items, exc)
                continue
            for item, fit in zip(items, fitted, strict=True):
                if fit:
                    self.published += 1
                    self._forget(item[0])
                else:
                    left.append(item)
        if left:
            left.sort(key=lambda item: item[0].seq)
            with self.lock:  # those cancelled meanwhile are dropped
                self._outbox.extendleft(reversed([i for i in left if i[0].seq in self.waiting]))
            self._stopping.wait(_FULL_WAIT)

    def _forget(self, entry: Waiting) -> None:
        """End a published entry whose outcome nobody wants: counted as forgotten."""
        with self.lock:
            if self.waiting.pop(entry.seq, None) is None:
                return  # cancelled meanwhile
            self.forgotten += len(entry.seqs)
        self._freed()

    def _stream_of(self, seq: int, key: Hashable) -> str:
        # Routed by what the strategy declares, so that one of the user's own goes
        # where it belongs: one shared stream, a partition per key, or a worker's stream.
        strategy = self._strategy
        if strategy.shared:
            return self.keys.pull
        if strategy.needs_key:
            return self.keys.partition(stable_hash(key) % self._partitions)
        # round_robin and batch: the strategy picks among the registered workers.
        workers = self._live_workers()
        return self.keys.worker_stream(workers[strategy.assign(seq, key, len(workers))])

    def worker_count(self) -> int:
        """Registered workers that take jobs (waiting ``worker_wait`` for one).

        Raises:
            LookupError: none registered within ``worker_wait`` seconds.
        """
        return len(self._live_workers())

    def _live_workers(self) -> list[str]:
        """Registered workers that are not draining, refreshed at most once a second.

        Raises:
            LookupError: none registered within ``worker_wait`` seconds.
        """
        now = time.monotonic()
        if self._workers and now - self._workers_at < 1.0:
            return self._workers
        deadline = now + self._worker_wait
        while True:
            # Fresh heartbeats only: a worker silent for 10 s gets no new jobs.
            names = self._transport.live_workers(10.0)
            if names:
                self._workers, self._workers_at = names, time.monotonic()
                return names
            if time.monotonic() > deadline or self._stopping.is_set():
                raise LookupError(f"no worker registered on queue {self.keys.prefix}")
            time.sleep(0.1)

    # -- outcomes (listener thread) ------------------------------------------------------

    def _listen(self) -> None:
        check_every = min(self._visibility / 2, _CHECK_EVERY)
        next_check = time.monotonic() + check_every
        while True:
            # Nothing awaited, nothing to read: an idle dispatcher asks Redis nothing.
            with self._awaited:
                if not self._work_in(self.waiting, self._awaited):
                    return
            try:
                self._read_outcomes(block=0.2)
                if time.monotonic() >= next_check:
                    self._fail_vanished()
                    next_check = time.monotonic() + check_every
            except TransportError as exc:
                logger.error("reading outcomes failed: %s; retrying", exc)
                time.sleep(0.5)

    def _read_outcomes(self, block: float | None) -> int:
        """Read and settle the next outcomes (waiting ``block`` seconds for some); how many
        (at least ``_READ_BATCH`` if there may be more: an entry may hold many).

        Raises:
            TransportError: Redis failed.
        """
        t = self._transport
        entries = t.read_outcomes(self._results, self._last_outcome, _READ_BATCH, block)
        if not entries:
            return 0
        self._last_outcome = entries[-1][0]
        for _, payload in entries:
            try:
                reply = decode_reply(payload or b"")
            except ValueError:
                logger.warning("ignored a malformed outcome on %s", self._results)
                continue
            if isinstance(reply, Moved):
                self._moved(reply)
                continue
            seq, ok, value, _worker, attempts = reply
            self.settle(seq, ok, value, attempts)
        self._unread += len(entries)
        if self._unread >= _READ_BATCH or not self.waiting:
            # Trim what was read, in one command per many outcomes.
            t.trim_outcomes(self._results, self._last_outcome)
            self._unread = 0
        return len(entries)

    def _fail_vanished(self) -> None:
        """Fail the entries, due for a look, that are gone from Redis.

        Raises:
            TransportError: Redis failed (the entries are looked at next time).
        """
        while due := self._due_for_a_look():
            try:
                gone = self._transport.vanished([(stream, eid) for _, stream, eid in due])
            except TransportError:
                self._look_again(due)
                raise
            self._look_again([d for d, lost in zip(due, gone, strict=True) if not lost])
            lost = [d for d, vanished in zip(due, gone, strict=True) if vanished]
            if not lost:
                continue
            # An entry acknowledged before the look had its outcome stored with it:
            # read every outcome up to now before calling any entry lost.
            while self._read_outcomes(block=None) >= _READ_BATCH:
                pass
            with self.lock:  # a moved entry is placed anew: it is not lost
                lost = [d for d in lost if d[0] in self.waiting and d[0] not in self._placed]
            for seq, stream, entry_id in lost:
                error = JobVanished(
                    f"job {seq} vanished from Redis: its entry {entry_id} is neither in "
                    f"{stream} nor held by a worker, and no outcome came (did Redis restart "
                    "without persistence?)"
                )
                self.settle(seq, False, error, 0)
            if lost:
                logger.error("%d entries vanished from Redis: their jobs fail", len(lost))

    def _moved(self, move: Moved) -> None:
        """A worker gave the entry back: look for it where it went, one timeout from now."""
        with self.lock:
            if move.job_id in self.waiting:
                self._placed.pop(move.job_id, None)  # goes last: the latest look-up time
                due = time.monotonic() + self._visibility
                self._placed[move.job_id] = (move.stream, move.entry_id, due)

    def _due_for_a_look(self) -> list[tuple[int, str, str]]:
        now = time.monotonic()
        due: list[tuple[int, str, str]] = []
        with self.lock:
            for seq, (stream, entry_id, when) in self._placed.items():
                if when > now or len(due) == _CHECK_BATCH:
                    break
                due.append((seq, stream, entry_id))
            for seq, _, _ in due:
                del self._placed[seq]
        return due

    def _look_again(self, entries: list[tuple[int, str, str]]) -> None:
        """Put entries still unsettled back, to be looked at one timeout from now."""
        when = time.monotonic() + self._visibility
        with self.lock:
            for seq, stream, entry_id in entries:
                if seq in self.waiting:
                    self._placed[seq] = (stream, entry_id, when)

    def settle(self, seq: int, ok: bool, value: Any, attempts: int) -> None:
        """End the entry ``seq`` as its outcome says (a duplicate is counted and dropped)."""
        with self.lock:
            entry = self.waiting.pop(seq, None)
            self._placed.pop(seq, None)
            if entry is None:
                self.duplicates += 1  # at-least-once: the job ran again after a worker died
                return
        entry.settle(ok, value, attempts, self._count)
        self._freed()
