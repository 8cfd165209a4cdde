"""A transport in one process: the remote worker and dispatcher without a server (for tests).

    MemoryTransport(broker, consumer="w1") ─┐
    MemoryTransport(broker, consumer="w2") ─┼─▶ MemoryBroker: streams, groups, sets, leases
    MemoryTransport(broker)  (dispatcher) ──┘        (one lock; a clock you can move)

A :class:`MemoryBroker` stands for the server: every transport made on it sees
the same streams. It keeps what Redis keeps for dispatchkit, with the same
rules: a stream is a deque of new entries plus the entries by id; its readers'
group holds the pending entries, each with its consumer, its delivery count and
the time of its last delivery; an entry stays pending until acknowledged, and a
claim takes over the entries idle for long enough, counting one more delivery.

Times (heartbeat scores, idle times, lease expiries) come from the broker's
``clock``: a test moves it forward to make a consumer look dead, with no sleep.
Blocking reads wait in real time, at most ``block`` seconds.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from dispatchkit.errors import TransportRejected

from ._redis_keys import DEFAULT_NAMESPACE, GROUP, Keys
from .base import Delivery, Peers

__all__ = ["DeadLetter", "ManualClock", "MemoryBroker", "MemoryTransport"]

#: Entries one claim takes over at most (as the Redis transport's XAUTOCLAIM batch).
_CLAIM_BATCH = 256


class ManualClock:
    """A clock that moves only when told to: ``broker = MemoryBroker(clock=clock)``."""

    def __init__(self, start: float = 1_000_000.0) -> None:
        self._now = start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        """Move the clock ``seconds`` forward."""
        with self._lock:
            self._now += seconds


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """An entry given up on, as the dead-letter stream holds it."""

    stream: str
    entry_id: str
    attempts: int
    error: str
    payload: bytes


@dataclass(slots=True)
class _Entry:
    payload: bytes | None
    #: Deliveries before this entry was added (a requeued entry keeps its count).
    before: int = 0


@dataclass(slots=True)
class _Pending:
    consumer: str
    deliveries: int
    since: float


@dataclass(slots=True)
class _Stream:
    entries: dict[str, _Entry] = field(default_factory=dict)
    #: Ids not yet delivered to the group, oldest first (some may be deleted since).
    new: deque[str] = field(default_factory=deque)
    #: The readers' group: None until a worker opens the stream.
    pending: dict[str, _Pending] | None = None
    consumers: set[str] = field(default_factory=set)


def _seq(entry_id: str) -> int:
    return int(entry_id.partition("-")[0])


class MemoryBroker:
    """The shared state of :class:`MemoryTransport` objects: one in-process "server".

    Args:
        clock: seconds, for heartbeats, idle times and lease expiries
            (default ``time.monotonic``; a :class:`ManualClock` in tests).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._changed = threading.Condition()
        self._streams: dict[str, _Stream] = {}
        self._scores: dict[str, dict[str, float]] = {}  # sorted sets: member -> score
        self._sets: dict[str, set[str]] = {}
        self._leases: dict[str, tuple[str, float]] = {}  # key -> (owner, expires at)
        self._dead: dict[str, list[DeadLetter]] = {}
        self._next_id = 0

    def stream_length(self, stream: str) -> int:
        """Entries in ``stream`` (queued or pending), as XLEN counts them."""
        with self._changed:
            found = self._streams.get(stream)
            return 0 if found is None else len(found.entries)

    def undelivered(self, stream: str) -> int:
        """Entries of ``stream`` no consumer has fetched yet."""
        with self._changed:
            found = self._streams.get(stream)
            return 0 if found is None else len(found.new)

    def dead_letters(self, keys: Keys) -> list[DeadLetter]:
        """The entries of ``keys``' queue given up on, oldest first."""
        with self._changed:
            return list(self._dead.get(keys.dead_letter, ()))

    def members(self, key: str) -> dict[str, float]:
        """The members of a sorted set (the registered workers, say) with their scores."""
        with self._changed:
            return dict(self._scores.get(key, {}))

    # -- for the transports, with the lock held ------------------------------------

    def _add(self, stream: str, payload: bytes | None, before: int = 0) -> str:
        self._next_id += 1
        entry_id = f"{self._next_id}-0"
        found = self._streams.setdefault(stream, _Stream())
        found.entries[entry_id] = _Entry(payload, before)
        found.new.append(entry_id)
        return entry_id

    def _group(self, stream: str) -> _Stream:
        found = self._streams.get(stream)
        if found is None or found.pending is None:
            raise TransportRejected(
                f"NOGROUP No such key '{stream}' or consumer group '{GROUP}' (memory transport)"
            )
        return found

    def _done(self, stream: str, entry_id: str) -> None:
        found = self._streams.get(stream)
        if found is None:
            return
        if found.pending is not None:
            found.pending.pop(entry_id, None)
        found.entries.pop(entry_id, None)

    def _lease(self, key: str) -> str | None:
        held = self._leases.get(key)
        if held is None:
            return None
        if held[1] <= self.clock():
            del self._leases[key]
            return None
        return held[0]


class MemoryTransport:
    """The :class:`~dispatchkit.transports.base.Transport` protocol over a :class:`MemoryBroker`.

    Args:
        broker: the shared state (make one per test, give it to every transport).
        queue: the queue's name.
        namespace: the first part of every stream name.
        consumer: this worker's name (workers only).
    """

    def __init__(
        self,
        broker: MemoryBroker,
        *,
        queue: str,
        namespace: str = DEFAULT_NAMESPACE,
        consumer: str = "",
    ) -> None:
        self.broker = broker
        self.keys = Keys(namespace, queue)
        self.consumer = consumer
        self._worker_prefix = self.keys.worker_stream("")
        self._b = broker
        self._lock = broker._changed

    def ping(self) -> None:
        """Nothing to reach: always answers."""

    def close(self) -> None:
        """Nothing to release."""

    # -- jobs ------------------------------------------------------------------

    def put(self, entries: Sequence[tuple[str, bytes]]) -> list[str]:
        with self._lock:
            ids = [self._b._add(stream, payload) for stream, payload in entries]
            streams = {s for s, _ in entries if s.startswith(self._worker_prefix)}
            self._b._sets.setdefault(self.keys.worker_streams, set()).update(streams)
            self._lock.notify_all()
        return ids

    def put_if_room(
        self, stream: str, limit: int, requests: Sequence[Sequence[bytes]]
    ) -> tuple[int, list[bool]]:
        fitted: list[bool] = []
        with self._lock:
            found = self._b._streams.get(stream)
            length = 0 if found is None else len(found.entries)
            for jobs in requests:
                fits = length + len(jobs) <= limit
                if fits:
                    for payload in jobs:
                        self._b._add(stream, payload)
                    length += len(jobs)
                fitted.append(fits)
            if any(fitted) and stream.startswith(self._worker_prefix):
                self._b._sets.setdefault(self.keys.worker_streams, set()).add(stream)
            self._lock.notify_all()
        return length, fitted

    def open_stream(self, stream: str) -> None:
        with self._lock:
            found = self._b._streams.setdefault(stream, _Stream())
            if found.pending is None:
                found.pending = {}

    def fetch(self, streams: Sequence[str], count: int, block: float) -> list[Delivery]:
        if not streams:
            return []
        deadline = time.monotonic() + block
        with self._lock:
            while True:
                got = self._take_new(streams, count)
                left = deadline - time.monotonic()
                if got or left <= 0:
                    return got
                self._lock.wait(left)

    def _take_new(self, streams: Sequence[str], count: int) -> list[Delivery]:
        now = self._b.clock()
        got: list[Delivery] = []
        for stream in streams:
            found = self._b._group(stream)
            pending = found.pending
            assert pending is not None
            found.consumers.add(self.consumer)
            taken = 0
            while found.new and taken < count:  # COUNT applies to each stream, as XREADGROUP
                entry_id = found.new.popleft()
                entry = found.entries.get(entry_id)
                if entry is None:
                    continue
                pending[entry_id] = _Pending(self.consumer, 1, now)
                got.append(Delivery(stream, entry_id, entry.before + 1, entry.payload))
                taken += 1
        return got

    def ack(self, deliveries: Sequence[Delivery], replies: Sequence[tuple[str, bytes]]) -> None:
        with self._lock:
            for stream, payload in replies:
                self._b._add(stream, payload)
            for delivery in deliveries:
                self._b._done(delivery.stream, delivery.entry_id)
            self._lock.notify_all()

    def ack_outcomes(
        self, done: Sequence[tuple[Delivery, str, bytes]]
    ) -> list[tuple[Delivery, str]]:
        """Store the outcomes and acknowledge the entries; nothing is ever refused here."""
        self.ack([d for d, _, _ in done], [(to, outcome) for _, to, outcome in done if to])
        return []

    def nack(self, delivery: Delivery, error: str) -> None:
        payload = delivery.payload if delivery.payload is not None else b""
        letter = DeadLetter(delivery.stream, delivery.entry_id, delivery.attempts, error, payload)
        with self._lock:
            self._b._dead.setdefault(self.keys.dead_letter, []).append(letter)
            self._b._done(delivery.stream, delivery.entry_id)

    def requeue(self, entries: Sequence[tuple[Delivery, str, str, int]]) -> list[bool]:
        from ._codec import encode_moved  # msgpack: loaded only where moves are made

        given: list[bool] = []
        with self._lock:
            for delivery, stream, reply_to, job_id in entries:
                found = self._b._streams.get(delivery.stream)
                owner = None if found is None else (found.pending or {}).get(delivery.entry_id)
                if owner is None or owner.consumer != self.consumer:
                    given.append(False)
                    continue
                self._b._done(delivery.stream, delivery.entry_id)
                entry_id = self._b._add(stream, delivery.payload, delivery.attempts - 1)
                if reply_to:
                    self._b._add(reply_to, encode_moved(job_id, stream, entry_id))
                given.append(True)
            self._lock.notify_all()
        return given

    def vanished(self, entries: Sequence[tuple[str, str]]) -> list[bool]:
        with self._lock:
            gone: list[bool] = []
            for stream, entry_id in entries:
                found = self._b._streams.get(stream)
                gone.append(
                    found is None
                    or (entry_id not in found.entries and entry_id not in (found.pending or {}))
                )
            return gone

    # -- holding and claiming entries ------------------------------------------

    def touch(self, held: Mapping[str, Sequence[str]]) -> None:
        with self._lock:
            now = self._b.clock()
            for stream, ids in held.items():
                found = self._b._streams.get(stream)
                pending = {} if found is None or found.pending is None else found.pending
                for entry_id in ids:
                    owner = pending.get(entry_id)
                    if owner is not None:
                        owner.consumer, owner.since = self.consumer, now

    def claim_idle(self, stream: str, min_idle: float, everything: bool = False) -> list[Delivery]:
        return self._claim(stream, None, min_idle, None if everything else _CLAIM_BATCH)

    def claim_from(self, stream: str, consumer: str, min_idle: float) -> list[Delivery]:
        return self._claim(stream, consumer, min_idle, _CLAIM_BATCH)

    def _claim(
        self, stream: str, holder: str | None, min_idle: float, most: int | None
    ) -> list[Delivery]:
        with self._lock:
            found = self._b._streams.get(stream)
            if found is None or found.pending is None:
                return []
            now = self._b.clock()
            found.consumers.add(self.consumer)
            claimed: list[Delivery] = []
            for entry_id, owner in list(found.pending.items()):
                if most is not None and len(claimed) >= most:
                    break
                if holder is not None and owner.consumer != holder:
                    continue
                if now - owner.since < min_idle:
                    continue
                entry = found.entries.get(entry_id)
                if entry is None:  # deleted meanwhile: it leaves the group too
                    del found.pending[entry_id]
                    continue
                owner.consumer, owner.since = self.consumer, now
                owner.deliveries += 1
                attempts = entry.before + owner.deliveries
                claimed.append(Delivery(stream, entry_id, attempts, entry.payload))
            return claimed

    def consumers(self, stream: str) -> dict[str, int]:
        """The readers of ``stream`` and how many entries each holds."""
        with self._lock:
            found = self._b._streams.get(stream)
            if found is None or found.pending is None:
                return {}
            counts = dict.fromkeys(found.consumers, 0)
            for owner in found.pending.values():
                counts[owner.consumer] = counts.get(owner.consumer, 0) + 1
            return counts

    def delete_consumer(self, stream: str, consumer: str) -> bool:
        with self._lock:
            found = self._b._streams.get(stream)
            if found is None or consumer not in found.consumers:
                return True
            if any(owner.consumer == consumer for owner in (found.pending or {}).values()):
                return False
            found.consumers.discard(consumer)
            return True

    def delete_stream_if_empty(self, stream: str) -> bool:
        with self._lock:
            found = self._b._streams.get(stream)
            if found is not None and found.entries:
                return False
            self._b._streams.pop(stream, None)
            self._b._sets.get(self.keys.worker_streams, set()).discard(stream)
            return True

    # -- membership ------------------------------------------------------------

    def register(self, worker: str, stream: str) -> None:
        with self._lock:
            self._b._sets.setdefault(self.keys.worker_streams, set()).add(stream)
            self._b._scores.setdefault(self.keys.workers, {})[worker] = self._b.clock()

    def heartbeat(self, worker: str, *, draining: bool, dead_after: float) -> Peers:
        with self._lock:
            now = self._b.clock()
            scores = self._b._scores.setdefault(self.keys.workers, {})
            scores[worker] = now
            if draining:
                self._b._sets.setdefault(self.keys.draining, set()).add(worker)
            live = frozenset(w for w, score in scores.items() if score >= now - dead_after)
            return Peers(
                live,
                frozenset(scores.keys() - live),
                frozenset(self._b._sets.get(self.keys.draining, ())),
                frozenset(self._b._sets.get(self.keys.worker_streams, ())),
            )

    def unregister(self, worker: str, *, forget: bool = True) -> None:
        with self._lock:
            if forget:
                self._b._scores.get(self.keys.workers, {}).pop(worker, None)
            self._b._sets.get(self.keys.draining, set()).discard(worker)

    def forget_worker(self, worker: str) -> None:
        with self._lock:
            self._b._scores.get(self.keys.workers, {}).pop(worker, None)

    def worker_streams(self) -> set[str]:
        with self._lock:
            return set(self._b._sets.get(self.keys.worker_streams, ()))

    def live_workers(self, within: float) -> list[str]:
        with self._lock:
            now = self._b.clock()
            scores = self._b._scores.get(self.keys.workers, {})
            draining = self._b._sets.get(self.keys.draining, set())
            return sorted(w for w, s in scores.items() if s >= now - within and w not in draining)

    # -- partition leases ------------------------------------------------------

    def take_lease(self, partition: int, owner: str, ttl: float) -> bool:
        key = self.keys.lease(partition)
        with self._lock:
            if self._b._lease(key) is not None:
                return False
            self._b._leases[key] = (owner, self._b.clock() + ttl)
            return True

    def renew_lease(self, partition: int, owner: str, ttl: float) -> bool:
        key = self.keys.lease(partition)
        with self._lock:
            if self._b._lease(key) != owner:
                return False
            self._b._leases[key] = (owner, self._b.clock() + ttl)
            return True

    def release_lease(self, partition: int, owner: str) -> None:
        key = self.keys.lease(partition)
        with self._lock:
            if self._b._lease(key) == owner:
                del self._b._leases[key]

    # -- outcomes --------------------------------------------------------------

    def read_outcomes(
        self, stream: str, after: str, count: int, block: float | None
    ) -> list[tuple[str, bytes | None]]:
        deadline = time.monotonic() + (block or 0.0)
        start = _seq(after)
        with self._lock:
            while True:
                found = self._b._streams.get(stream)
                got = [
                    (entry_id, entry.payload)
                    for entry_id, entry in (found.entries.items() if found else ())
                    if _seq(entry_id) > start
                ][:count]
                left = deadline - time.monotonic()
                if got or left <= 0:
                    return got
                self._lock.wait(left)

    def trim_outcomes(self, stream: str, through: str) -> None:
        last = _seq(through)
        with self._lock:
            found = self._b._streams.get(stream)
            if found is not None:
                for entry_id in [e for e in found.entries if _seq(e) < last]:
                    del found.entries[entry_id]
                found.new = deque(e for e in found.new if e in found.entries)

    def drop_outcomes(self, stream: str) -> None:
        with self._lock:
            self._b._streams.pop(stream, None)
