"""The Redis transport's claims: holding, taking over, forgetting entries (in RedisTransport).

A pending entry belongs to the consumer that read it; XCLAIM and XAUTOCLAIM
hand it to another, counting one more delivery, which is its attempt count.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from dispatchkit.errors import TransportError

from ._redis_errors import translate_errors
from ._redis_keys import GROUP, Keys
from ._redis_py import redis
from .base import Delivery

__all__ = ["ATTEMPTS_FIELD", "JOB_FIELD", "RedisClaims", "delivery_of", "s"]

#: Field of a job entry holding the encoded job.
JOB_FIELD: Final = b"j"
#: Field of a requeued entry holding the deliveries it had before.
ATTEMPTS_FIELD: Final = b"a"

#: Entries one XAUTOCLAIM call looks at.
_CLAIM_BATCH: Final = 256


class RedisClaims:
    """Touching, claiming and deleting consumers and streams (mixed into RedisTransport)."""

    client: redis.Redis
    keys: Keys
    consumer: str
    _delete_if_empty: Any

    def touch(self, held: Mapping[str, Sequence[str]]) -> None:
        """Reset the idle time of entries this worker holds, so no one claims them.

        Raises:
            TransportError: Redis failed.
        """
        if not held:
            return
        pipe = self.client.pipeline(transaction=False)
        for stream, ids in held.items():
            if ids:
                pipe.xclaim(stream, GROUP, self.consumer, 0, list(ids), justid=True)
        with translate_errors("refreshing held jobs"):
            pipe.execute()

    def claim_idle(self, stream: str, min_idle: float, everything: bool = False) -> list[Delivery]:
        """Take over entries of ``stream`` idle for ``min_idle`` seconds (XAUTOCLAIM).

        At most a batch of entries, or every one with ``everything``. A stream
        that does not exist (or has no group yet) holds nothing to claim.

        Raises:
            TransportError: Redis failed.
        """
        return _unless_no_group(lambda: self._claim_idle(stream, min_idle, everything))

    def _claim_idle(self, stream: str, min_idle: float, everything: bool) -> list[Delivery]:
        claimed: list[Delivery] = []
        cursor: bytes | str = "0-0"
        with translate_errors("claiming idle jobs"):
            while True:
                reply = self.client.xautoclaim(
                    stream, GROUP, self.consumer, int(min_idle * 1000), cursor, count=_CLAIM_BATCH
                )
                cursor, entries = reply[0], reply[1]
                claimed.extend(
                    delivery_of(stream, entry_id, fields, 0)
                    for entry_id, fields in entries
                    if fields is not None
                )
                if s(cursor) == "0-0" or (len(claimed) >= _CLAIM_BATCH and not everything):
                    break
            return self._with_attempts(stream, claimed)

    def claim_from(self, stream: str, consumer: str, min_idle: float) -> list[Delivery]:
        """Take over the pending entries of one (dead) consumer of ``stream``.

        A stream that does not exist (or has no group yet) holds nothing to claim.

        Raises:
            TransportError: Redis failed.
        """
        return _unless_no_group(lambda: self._claim_from(stream, consumer, min_idle))

    def _claim_from(self, stream: str, consumer: str, min_idle: float) -> list[Delivery]:
        with translate_errors("claiming a dead worker's jobs"):
            pending: Any = self.client.xpending_range(
                stream, GROUP, "-", "+", _CLAIM_BATCH, consumername=consumer
            )
            ids: list[Any] = [p["message_id"] for p in pending]
            if not ids:
                return []
            entries: Any = self.client.xclaim(
                stream, GROUP, self.consumer, int(min_idle * 1000), ids
            )
            claimed = [
                delivery_of(stream, entry_id, fields, 0)
                for entry_id, fields in entries
                if fields is not None
            ]
            return self._with_attempts(stream, claimed)

    def consumers(self, stream: str) -> dict[str, int]:
        """The consumers of ``stream``'s group and how many entries each holds.

        Raises:
            TransportError: Redis failed.
        """
        with translate_errors("listing consumers"):
            try:
                info = self.client.xinfo_consumers(stream, GROUP)
            except redis.ResponseError:  # no such stream or group
                return {}
        return {s(c["name"]): int(c["pending"]) for c in info}

    def delete_consumer(self, stream: str, consumer: str) -> bool:
        """Delete a consumer, but never one that still holds entries.

        Returns True if it was deleted.

        Raises:
            TransportError: Redis failed.
        """
        consumers = self.consumers(stream)
        if consumer not in consumers:
            return True  # no such consumer (or stream): nothing to delete
        if consumers[consumer] != 0:
            return False
        # The stream may have gone away meanwhile: then so has the consumer.
        with translate_errors("deleting a consumer"), contextlib.suppress(redis.ResponseError):
            self.client.xgroup_delconsumer(stream, GROUP, consumer)
        return True

    def delete_stream_if_empty(self, stream: str) -> bool:
        """Delete a worker stream if it holds no entry (atomically).

        Raises:
            TransportError: Redis failed.
        """
        with translate_errors("deleting a stream"):
            return bool(self._delete_if_empty(keys=[stream, self.keys.worker_streams]))

    def _with_attempts(self, stream: str, claimed: list[Delivery]) -> list[Delivery]:
        """Fill in the delivery counts of claimed entries (XPENDING): they are the attempts."""
        if not claimed:
            return claimed
        counts: dict[str, int] = {}
        ids = [d.entry_id for d in claimed]
        pending: Any = self.client.xpending_range(
            stream,
            GROUP,
            min(ids, key=_id_key),
            max(ids, key=_id_key),
            len(ids) * 2,
            consumername=self.consumer,
        )
        for row in pending:
            counts[s(row["message_id"])] = int(row["times_delivered"])
        return [
            Delivery(d.stream, d.entry_id, d.attempts + counts.get(d.entry_id, 1), d.payload)
            for d in claimed
        ]


def _unless_no_group(claim: Callable[[], list[Delivery]]) -> list[Delivery]:
    """``claim()``, or nothing where the stream or its group does not exist (NOGROUP).

    Raises:
        TransportError: Redis failed otherwise.
    """
    try:
        return claim()
    except TransportError as exc:
        if "NOGROUP" in str(exc):
            return []
        raise


def _id_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def delivery_of(stream: str, entry_id: Any, fields: Any, attempts: int) -> Delivery:
    """A Delivery from a raw entry; ``attempts`` is added to any count the entry carries."""
    payload = fields.get(JOB_FIELD) if isinstance(fields, dict) else None
    before = fields.get(ATTEMPTS_FIELD) if isinstance(fields, dict) else None
    with contextlib.suppress(ValueError, TypeError):
        attempts += int(before) if before is not None else 0
    return Delivery(stream, s(entry_id), attempts, payload)


def s(value: bytes | str) -> str:
    """A reply's bytes as text."""
    return value.decode() if isinstance(value, bytes) else value
