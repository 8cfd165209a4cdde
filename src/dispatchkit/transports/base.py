"""The protocol every transport implements: everything remote workers and dispatchers need.

The core verbs are ``put/fetch/ack/nack/requeue/close``; the rest says what a
remote worker (registration, heartbeats, claims, partition leases) and a remote
dispatcher (outcomes, live workers, vanished entries) ask of the server, named
by what they do. :mod:`.redis` implements it over Redis Streams, :mod:`.memory`
in one process (for tests), so the worker and the dispatcher know only this.

Streams are named by :class:`~._redis_keys.Keys`; every duration is in seconds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ._redis_keys import Keys

__all__ = ["Delivery", "Peers", "Transport"]


@dataclass(frozen=True, slots=True)
class Delivery:
    """One job entry handed to a worker.

    Attributes:
        stream: the queue (stream) it was read from.
        entry_id: its id there.
        attempts: how many times it has been delivered, this one included.
        payload: the encoded job, or None if the entry holds no job field.
    """

    stream: str
    entry_id: str
    attempts: int
    payload: bytes | None


@dataclass(frozen=True, slots=True)
class Peers:
    """What a heartbeat learns about the workers of a queue.

    Attributes:
        live: workers whose last heartbeat is recent (this one included).
        dead: workers silent for longer than the heartbeat's ``dead_after``.
        draining: workers shutting down (they get no new jobs).
        streams: every worker stream that may hold entries.
    """

    live: frozenset[str]
    dead: frozenset[str]
    draining: frozenset[str]
    streams: frozenset[str]


class Transport(Protocol):
    """Moves encoded jobs to workers and their outcomes back, at least once.

    Every method but :meth:`close` raises ``TransportError`` (or a subclass:
    ``TransportUnavailable``, ``TransportRejected``) when the server fails.
    """

    #: The names of the queue's streams.
    keys: Keys
    #: This client's name among the readers of a stream (workers only; "" otherwise).
    consumer: str

    # -- jobs ------------------------------------------------------------------

    def ping(self) -> None:
        """Check that the server answers."""

    def put(self, entries: Sequence[tuple[str, bytes]]) -> list[str]:
        """Append ``(stream, payload)`` entries, in one round trip where possible; their ids."""

    def put_if_room(
        self, stream: str, limit: int, requests: Sequence[Sequence[bytes]]
    ) -> tuple[int, list[bool]]:
        """Append each request's payloads whole if ``stream`` stays within ``limit`` entries.

        Returns the stream's length after, and whether each request was added.
        """

    def open_stream(self, stream: str) -> None:
        """Create ``stream`` and its readers' group if missing, so entries can be fetched."""

    def fetch(self, streams: Sequence[str], count: int, block: float) -> list[Delivery]:
        """Take up to ``count`` new entries from ``streams``, waiting up to ``block`` seconds."""

    def ack(self, deliveries: Sequence[Delivery], replies: Sequence[tuple[str, bytes]]) -> None:
        """Store ``(stream, payload)`` replies, then mark ``deliveries`` done, atomically."""

    def ack_outcomes(
        self, done: Sequence[tuple[Delivery, str, bytes]]
    ) -> list[tuple[Delivery, str]]:
        """Store each ``(entry, reply stream or "", outcome)`` and mark the entries done.

        Returns the entries the server refused, each with the error (retrying
        cannot help: the caller dead-letters them); the others are done.
        """

    def nack(self, delivery: Delivery, error: str) -> None:
        """Give up on ``delivery``: move it to the dead-letter queue with ``error``."""

    def requeue(self, entries: Sequence[tuple[Delivery, str, str, int]]) -> list[bool]:
        """Give each ``(entry, stream, reply stream or "", job id)`` back, unstarted.

        Atomically for each entry this consumer still holds: the entry is added
        again at the end of ``stream`` (a new id; its attempt count unchanged,
        as it never ran), the old one acknowledged, and, with a reply stream, a
        move (``_codec.encode_moved``: the job's new stream and id) stored
        there for its dispatcher. Returns whether each was given back (False:
        this consumer holds it no more, so nothing was done).
        """

    def vanished(self, entries: Sequence[tuple[str, str]]) -> list[bool]:
        """Whether each ``(stream, entry id)`` is gone: neither queued nor held by a worker."""

    # -- holding and claiming entries ------------------------------------------

    def touch(self, held: Mapping[str, Sequence[str]]) -> None:
        """Reset the idle time of the entries (ids by stream) this consumer holds."""

    def claim_idle(self, stream: str, min_idle: float, everything: bool = False) -> list[Delivery]:
        """Take over entries of ``stream`` held but idle for ``min_idle`` seconds."""

    def claim_from(self, stream: str, consumer: str, min_idle: float) -> list[Delivery]:
        """Take over the entries of ``stream`` that ``consumer`` (a dead one) holds."""

    def delete_consumer(self, stream: str, consumer: str) -> bool:
        """Forget ``consumer`` as a reader of ``stream``, unless it holds entries; whether done."""

    def delete_stream_if_empty(self, stream: str) -> bool:
        """Delete a worker stream if it holds no entry, atomically; whether it was deleted."""

    # -- membership ------------------------------------------------------------

    def register(self, worker: str, stream: str) -> None:
        """Announce ``worker``, reading its own ``stream``, with a first heartbeat."""

    def heartbeat(self, worker: str, *, draining: bool, dead_after: float) -> Peers:
        """Record that ``worker`` lives (and whether it drains); what is known of the others."""

    def unregister(self, worker: str, *, forget: bool = True) -> None:
        """End ``worker``'s draining; with ``forget``, remove it from the workers too.

        Without ``forget`` its last heartbeat stays, so the others take it for
        dead and claim what it held.
        """

    def forget_worker(self, worker: str) -> None:
        """Remove a (dead) worker from the registry."""

    def worker_streams(self) -> set[str]:
        """Every worker stream that may hold entries (those of departed workers too)."""

    def live_workers(self, within: float) -> list[str]:
        """Workers with a heartbeat in the last ``within`` seconds that are not draining, sorted."""

    # -- partition leases ------------------------------------------------------

    def take_lease(self, partition: int, owner: str, ttl: float) -> bool:
        """Lease ``partition`` to ``owner`` for ``ttl`` seconds if no one holds it."""

    def renew_lease(self, partition: int, owner: str, ttl: float) -> bool:
        """Extend ``owner``'s lease by ``ttl`` seconds; False if it holds it no more."""

    def release_lease(self, partition: int, owner: str) -> None:
        """Give up ``owner``'s lease of ``partition`` (nothing if another holds it)."""

    # -- outcomes --------------------------------------------------------------

    def read_outcomes(
        self, stream: str, after: str, count: int, block: float | None
    ) -> list[tuple[str, bytes | None]]:
        """Up to ``count`` ``(id, outcome)`` of ``stream`` after id ``after`` ("0-0": all).

        Waits up to ``block`` seconds for one to arrive (None: does not wait).
        """

    def trim_outcomes(self, stream: str, through: str) -> None:
        """Drop the outcomes of ``stream`` before id ``through`` (they were read)."""

    def drop_outcomes(self, stream: str) -> None:
        """Delete a results stream."""

    def close(self) -> None:
        """Release connections. Safe to call more than once."""
