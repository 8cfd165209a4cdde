"""The Redis Streams transport: consumer groups, at-least-once delivery.

    dispatcher ──XADD (pipelined)──▶ stream ──XREADGROUP COUNT n──▶ worker
         ▲                                                          │
         └──XREAD── results stream ◀── XADD outcome, XACK, XDEL ────┘  (one MULTI)

An entry stays pending in the group until its outcome is stored: the outcome,
the XACK and the XDEL go in one transaction, so a worker that dies before it
leaves its entries pending, for a live worker to claim.

Claims are in :mod:`._redis_claims`; registration, heartbeats, partition leases and outcomes in
:mod:`._redis_membership`, the Lua scripts in :mod:`._redis_scripts`, the
translation of redis-py's errors in :mod:`._redis_errors`, every key name in
:mod:`._redis_keys`. redis-py is loaded (by :mod:`._redis_py`) when this module is
imported; the core never imports it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

from dispatchkit.errors import (
    TransportError,
    TransportRejected,
)

from . import _redis_scripts as scripts
from ._redis_claims import ATTEMPTS_FIELD, JOB_FIELD, RedisClaims, delivery_of, s
from ._redis_errors import is_rejection, redacted_url, reply_text, translate_errors
from ._redis_keys import DEFAULT_NAMESPACE, GROUP, Keys
from ._redis_membership import OUTCOME_FIELD, RedisMembership, outcome_field
from ._redis_py import driver_options, redis
from .base import Delivery

if TYPE_CHECKING:
    from redis.client import Pipeline

__all__ = [
    "JOB_FIELD",
    "OUTCOME_FIELD",
    "RedisTransport",
    "is_rejection",
    "redacted_url",
    "translate_errors",
]


#: Seconds a results stream outlives its last outcome (its dispatcher may have died).
RESULTS_TTL: Final = 24 * 3600


class RedisTransport(RedisClaims, RedisMembership):
    """One connection pool to one Redis server, for one queue.

    Args:
        url: ``redis://HOST:PORT/DB``.
        queue: the queue's name; every key of it starts with ``namespace:queue``.
        namespace: the first part of every key.
        consumer: this worker's name in the consumer groups (workers only).
        socket_timeout: seconds a connection or a reply may take before the call
            fails as unreachable (None: as long as it takes). A server that hangs,
            or a network that drops packets, then counts as unreachable.

    Raises:
        ValueError: a malformed URL.
    """

    def __init__(
        self,
        url: str,
        *,
        queue: str,
        namespace: str = DEFAULT_NAMESPACE,
        consumer: str = "",
        socket_timeout: float | None = None,
    ) -> None:
        try:
            self.client: redis.Redis = redis.Redis.from_url(
                url,
                socket_keepalive=True,
                health_check_interval=30,
                socket_timeout=socket_timeout,
                socket_connect_timeout=socket_timeout,
                **driver_options(),
            )
        except ValueError as exc:
            raise ValueError(f"not a Redis URL: {redacted_url(url)!r} ({exc})") from None
        self.url = url
        self.keys = Keys(namespace, queue)
        self.consumer = consumer
        self._delete_if_empty = self.client.register_script(scripts.DELETE_IF_EMPTY)
        self._renew = self.client.register_script(scripts.RENEW_LEASE)
        self._release = self.client.register_script(scripts.RELEASE_LEASE)
        self._add_if_room = self.client.register_script(scripts.ADD_IF_ROOM)
        self._requeue = self.client.register_script(scripts.REQUEUE)
        self._worker_prefix = self.keys.worker_stream("")

    def ping(self) -> None:
        """Check that the server answers.

        Raises:
            TransportUnavailable: it does not.
        """
        with translate_errors(f"connecting to {redacted_url(self.url)}"):
            self.client.ping()

    # -- the Transport protocol ------------------------------------------------

    def put(self, entries: Sequence[tuple[str, bytes]]) -> list[str]:
        """Append job entries in one pipelined round trip.

        Returns:
            The id of each entry, in order.

        Raises:
            TransportError: Redis failed.
        """
        worker_streams: set[str] = set()
        pipe = self.client.pipeline(transaction=False)
        for stream, payload in entries:
            pipe.xadd(stream, {JOB_FIELD: payload})
            if stream.startswith(self._worker_prefix):
                worker_streams.add(stream)
        if worker_streams:
            # Recorded so that a stream whose worker left is found and adopted.
            pipe.sadd(self.keys.worker_streams, *worker_streams)
        with translate_errors("publishing jobs"):
            ids: list[Any] = pipe.execute()
        return [s(entry_id) for entry_id in ids[: len(entries)]]

    def fetch(self, streams: Sequence[str], count: int, block: float) -> list[Delivery]:
        """Read up to ``count`` new entries of ``streams`` for this consumer.

        Raises:
            TransportError: Redis failed (a missing group included).
        """
        if not streams:
            return []
        with translate_errors("reading jobs"):
            reply: Any = self.client.xreadgroup(
                GROUP,
                self.consumer,
                dict.fromkeys(streams, ">"),
                count=count,
                block=max(1, int(block * 1000)),
            )
        deliveries: list[Delivery] = []
        for stream, entries in reply or ():
            name = s(stream)
            for entry_id, fields in entries:
                deliveries.append(delivery_of(name, entry_id, fields, 1))
        return deliveries

    def ack(self, deliveries: Sequence[Delivery], replies: Sequence[tuple[str, bytes]]) -> None:
        """Store outcomes, then XACK and XDEL the entries, in one transaction.

        Raises:
            TransportError: Redis failed; nothing was acknowledged.
        """
        pipe = self.client.pipeline(transaction=True)
        for stream, payload in replies:
            pipe.xadd(stream, {OUTCOME_FIELD: payload})
        for stream in {stream for stream, _ in replies}:
            # A dispatcher deletes its results stream on shutdown; one that died cannot.
            pipe.expire(stream, RESULTS_TTL)
        self._ack_into(pipe, deliveries)
        with translate_errors("acknowledging jobs"):
            pipe.execute()

    def ack_outcomes(
        self, done: Sequence[tuple[Delivery, str, bytes]]
    ) -> list[tuple[Delivery, str]]:
        """Store each entry's outcome, then XACK and XDEL the entries, in one transaction.

        ``done`` holds ``(entry, reply stream, outcome)``; an entry whose reply
        stream is ``""`` wants no outcome.

        Returns:
            The entries Redis refused (:func:`is_rejection`: retrying cannot help),
            each with the error, for the caller to dead-letter. Redis runs the rest
            of a transaction when one command fails, so every other outcome is
            stored, once, and its entry acknowledged. A batch refused before any
            of it ran is tried again entry by entry.

        Raises:
            TransportError: Redis failed otherwise (unreachable, busy): nothing was
                acknowledged, or (rarely) all but the refused entries were.
        """
        try:
            return self._ack_outcomes(done)
        except TransportRejected as exc:
            if len(done) == 1:
                return [(done[0][0], str(exc))]
            return [refused for item in done for refused in self.ack_outcomes([item])]

    def _ack_outcomes(
        self, done: Sequence[tuple[Delivery, str, bytes]]
    ) -> list[tuple[Delivery, str]]:
        pipe = self.client.pipeline(transaction=True)
        # For each command queued: what it does, and the entries whose fate it decides.
        decides: list[tuple[str, list[Delivery]]] = []
        replying: dict[str, list[tuple[Delivery, bytes]]] = {}
        for delivery, reply_to, outcome in done:
            if reply_to:
                replying.setdefault(reply_to, []).append((delivery, outcome))
        for stream, items in replying.items():
            # One entry holds the batch's outcomes for one dispatcher, a field each:
            # one XADD where there was one per job.
            pipe.xadd(stream, {outcome_field(i): outcome for i, (_, outcome) in enumerate(items)})
            deliveries = [delivery for delivery, _ in items]
            decides.append((f"storing its outcome in {stream}", deliveries))
            # A dispatcher deletes its results stream on shutdown; one that died cannot.
            pipe.expire(stream, RESULTS_TTL)
            decides.append((f"setting the expiry of {stream}", deliveries))
        decides.extend(self._ack_into(pipe, [delivery for delivery, _, _ in done]))
        with translate_errors("acknowledging jobs"):
            results: list[Any] = pipe.execute(raise_on_error=False)
        refused: dict[tuple[str, str], tuple[Delivery, str]] = {}
        for result, (what, deliveries) in zip(results, decides, strict=True):
            if not isinstance(result, Exception):
                continue
            if not is_rejection(result):
                raise TransportError(
                    f"Redis error while acknowledging jobs: {reply_text(result)}"
                ) from result
            for delivery in deliveries:
                error = f"Redis refused {what}: {reply_text(result)}"
                refused.setdefault((delivery.stream, delivery.entry_id), (delivery, error))
        return list(refused.values())

    def vanished(self, entries: Sequence[tuple[str, str]]) -> list[bool]:
        """Whether each ``(stream, entry id)`` is gone: neither in its stream nor pending.

        Checked in one pipelined round trip (XPENDING and XRANGE by id). A stream
        or group that no longer exists holds nothing; any other error reply
        counts as "not gone".

        Raises:
            TransportError: Redis failed.
        """
        pipe = self.client.pipeline(transaction=False)
        for stream, entry_id in entries:
            pipe.xpending_range(stream, GROUP, entry_id, entry_id, 1)
            pipe.xrange(stream, entry_id, entry_id, count=1)
        with translate_errors("looking for job entries"):
            results: list[Any] = pipe.execute(raise_on_error=False)
        gone: list[bool] = []
        for pending, present in zip(results[::2], results[1::2], strict=True):
            not_pending = pending == [] or (
                isinstance(pending, redis.ResponseError) and "NOGROUP" in str(pending)
            )
            gone.append(not_pending and present == [])
        return gone

    def nack(self, delivery: Delivery, error: str) -> None:
        """Move an entry to the dead-letter stream with its error, and acknowledge it.

        Raises:
            TransportError: Redis failed.
        """
        pipe = self.client.pipeline(transaction=True)
        pipe.xadd(
            self.keys.dead_letter,
            {
                b"stream": delivery.stream,
                b"id": delivery.entry_id,
                b"attempts": delivery.attempts,
                b"error": error,
                b"payload": delivery.payload if delivery.payload is not None else b"",
            },
        )
        self._ack_into(pipe, [delivery])
        with translate_errors("dead-lettering a job"):
            pipe.execute()

    def requeue(self, entries: Sequence[tuple[Delivery, str, str, int]]) -> list[bool]:
        """Give entries back unstarted (one script call: :data:`~._redis_scripts.REQUEUE`).

        Raises:
            TransportError: Redis failed (nothing, or every entry held, was given back).
        """
        if not entries:
            return []
        keys: list[str] = []
        args: list[Any] = [GROUP, self.consumer, JOB_FIELD, ATTEMPTS_FIELD, RESULTS_TTL]
        args.append(OUTCOME_FIELD)
        for delivery, stream, reply_to, job_id in entries:
            keys += [delivery.stream, stream, reply_to or stream]
            payload = b"" if delivery.payload is None else delivery.payload
            args += [delivery.entry_id, delivery.attempts - 1, payload, job_id if reply_to else ""]
        with translate_errors("giving back jobs"):
            given = self._requeue(keys=keys, args=args)
        return [bool(answer) for answer in given]

    def close(self) -> None:
        self.client.close()

    # -- consumer groups, claims and workers -----------------------------------

    def open_stream(self, stream: str) -> None:
        """Create the consumer group of ``stream`` (and the stream), reading from the start.

        Raises:
            TransportError: Redis failed.
        """
        with translate_errors("creating a consumer group"):
            try:
                self.client.xgroup_create(stream, GROUP, id="0", mkstream=True)
            except redis.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    ensure_group = open_stream

    def put_if_room(
        self, stream: str, limit: int, requests: Sequence[Sequence[bytes]]
    ) -> tuple[int, list[bool]]:
        """Add each request's job entries whole if ``stream`` stays within ``limit`` entries.

        One script call (atomic): a request is added whole or not at all.

        Returns:
            The stream's length after, and whether each request was added.

        Raises:
            TransportError: Redis failed (nothing, or everything, was added).
        """
        args: list[Any] = [limit, JOB_FIELD]
        for jobs in requests:
            args += [len(jobs), *jobs]
        keys = [stream]
        if stream.startswith(self._worker_prefix):
            keys.append(self.keys.worker_streams)  # as put() records it
        with translate_errors("queueing payloads"):
            length, *fitted = self._add_if_room(keys=keys, args=args)
        return int(length), [bool(fit) for fit in fitted]

    # -- internals ---------------------------------------------------------------

    @staticmethod
    def _ack_into(
        pipe: Pipeline, deliveries: Sequence[Delivery]
    ) -> list[tuple[str, list[Delivery]]]:
        """Queue the XACK and XDEL of ``deliveries``; say what each command does, to which."""
        by_stream: dict[str, list[Delivery]] = {}
        for delivery in deliveries:
            by_stream.setdefault(delivery.stream, []).append(delivery)
        decides: list[tuple[str, list[Delivery]]] = []
        for stream, of_stream in by_stream.items():
            ids = [delivery.entry_id for delivery in of_stream]
            pipe.xack(stream, GROUP, *ids)
            # Acknowledged entries are deleted, so a stream holds only what is
            # still to do: its length is its backlog, and it never grows unbounded.
            pipe.xdel(stream, *ids)
            decides += [(f"acknowledging it in {stream}", of_stream)]
            decides += [(f"deleting it from {stream}", of_stream)]
        return decides
