"""The Redis transport's membership, partition leases and outcomes (a part of RedisTransport).

<prefix>:workers   sorted set: worker -> last heartbeat (unix seconds)
<prefix>:draining  set of workers shutting down
<prefix>:streams   set of worker streams that may hold entries
<prefix>:lease:N   string: the worker reading partition N, with a time to live
<prefix>:r:<id>    stream of one dispatcher's outcomes
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Final

from ._redis_errors import translate_errors
from ._redis_keys import Keys
from .base import Peers

if TYPE_CHECKING:
    import redis

__all__ = ["OUTCOME_FIELD", "RedisMembership", "outcome_field"]

#: Field of an outcome entry: its first outcome. A worker stores all the outcomes of
#: one batch for one dispatcher in one entry, the others in fields ``r1``, ``r2``, ...
OUTCOME_FIELD: Final = b"r"


def outcome_field(index: int) -> bytes:
    """The field of an entry's ``index``-th outcome."""
    return OUTCOME_FIELD if index == 0 else OUTCOME_FIELD + str(index).encode()


class RedisMembership:
    """Registration, heartbeats, leases and outcomes over Redis keys (mixed into RedisTransport)."""

    client: redis.Redis
    keys: Keys
    _renew: Any
    _release: Any

    # -- membership ------------------------------------------------------------

    def register(self, worker: str, stream: str) -> None:
        """Record ``worker`` (heartbeat now) and its stream, in one transaction.

        Raises:
            TransportError: Redis failed.
        """
        pipe = self.client.pipeline(transaction=True)
        pipe.sadd(self.keys.worker_streams, stream)
        pipe.zadd(self.keys.workers, {worker: time.time()})
        with translate_errors("registering the worker"):
            pipe.execute()

    def heartbeat(self, worker: str, *, draining: bool, dead_after: float) -> Peers:
        """Score ``worker`` now (and mark it draining), and read the others, in one round trip.

        Raises:
            TransportError: Redis failed.
        """
        now = time.time()
        pipe = self.client.pipeline(transaction=False)
        pipe.zadd(self.keys.workers, {worker: now})
        if draining:
            pipe.sadd(self.keys.draining, worker)
        pipe.zrangebyscore(self.keys.workers, now - dead_after, "+inf")
        pipe.zrangebyscore(self.keys.workers, "-inf", f"({now - dead_after}")
        pipe.smembers(self.keys.draining)
        pipe.smembers(self.keys.worker_streams)
        with translate_errors("sending a heartbeat"):
            replies: list[Any] = pipe.execute()
        live, dead, draining_now, streams = replies[2 if draining else 1 :]
        return Peers(_names(live), _names(dead), _names(draining_now), _names(streams))

    def unregister(self, worker: str, *, forget: bool = True) -> None:
        """Take ``worker`` out of the draining set, and out of the workers with ``forget``.

        Raises:
            TransportError: Redis failed.
        """
        pipe = self.client.pipeline(transaction=True)
        if forget:
            pipe.zrem(self.keys.workers, worker)
        pipe.srem(self.keys.draining, worker)
        with translate_errors("unregistering the worker"):
            pipe.execute()

    def forget_worker(self, worker: str) -> None:
        """Remove a dead worker from the registry.

        Raises:
            TransportError: Redis failed.
        """
        with translate_errors("forgetting a dead worker"):
            self.client.zrem(self.keys.workers, worker)

    def worker_streams(self) -> set[str]:
        """Every worker stream recorded (those of departed workers too).

        Raises:
            TransportError: Redis failed.
        """
        with translate_errors("listing worker streams"):
            return set(_names(self.client.smembers(self.keys.worker_streams)))

    def live_workers(self, within: float) -> list[str]:
        """Workers heard from in the last ``within`` seconds and not draining, sorted.

        Raises:
            TransportError: Redis failed.
        """
        pipe = self.client.pipeline(transaction=False)
        pipe.zrangebyscore(self.keys.workers, time.time() - within, "+inf")
        pipe.smembers(self.keys.draining)
        with translate_errors("listing workers"):
            live, draining = pipe.execute()
        return sorted(_names(live) - _names(draining))

    # -- partition leases (strings with a time to live) -------------------------

    def take_lease(self, partition: int, owner: str, ttl: float) -> bool:
        """Lease ``partition`` to ``owner`` unless someone holds it (SET NX PX).

        Raises:
            TransportError: Redis failed.
        """
        with translate_errors("taking a partition lease"):
            return bool(self.client.set(self.keys.lease(partition), owner, nx=True, px=_ms(ttl)))

    def renew_lease(self, partition: int, owner: str, ttl: float) -> bool:
        """Extend ``owner``'s lease of ``partition``; False if it holds it no more.

        Raises:
            TransportError: Redis failed.
        """
        with translate_errors("renewing a partition lease"):
            return bool(self._renew(keys=[self.keys.lease(partition)], args=[owner, _ms(ttl)]))

    def release_lease(self, partition: int, owner: str) -> None:
        """Delete ``owner``'s lease of ``partition``, if it still holds it.

        Raises:
            TransportError: Redis failed.
        """
        with translate_errors("releasing a partition lease"):
            self._release(keys=[self.keys.lease(partition)], args=[owner])

    # -- outcomes ------------------------------------------------------------------

    def read_outcomes(
        self, stream: str, after: str, count: int, block: float | None
    ) -> list[tuple[str, bytes | None]]:
        """Read the outcomes of up to ``count`` entries of ``stream`` after id ``after``
        (XREAD): every outcome of an entry, in order, each with the entry's id.

        Raises:
            TransportError: Redis failed.
        """
        block_ms = None if block is None else max(1, int(block * 1000))
        with translate_errors("reading outcomes"):
            reply: Any = self.client.xread({stream: after}, count=count, block=block_ms)
        if not reply:
            return []
        return [
            (_s(entry_id), payload)
            for entry_id, fields in reply[0][1]
            for payload in (fields.values() if fields else [None])
        ]

    def trim_outcomes(self, stream: str, through: str) -> None:
        """Drop the outcomes of ``stream`` before id ``through`` (XTRIM MINID).

        Raises:
            TransportError: Redis failed.
        """
        with translate_errors("trimming outcomes"):
            self.client.xtrim(stream, minid=through, approximate=False)

    def drop_outcomes(self, stream: str) -> None:
        """Delete a results stream.

        Raises:
            TransportError: Redis failed.
        """
        with translate_errors("deleting the results stream"):
            self.client.delete(stream)


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _names(values: Any) -> frozenset[str]:
    return frozenset(_s(value) for value in values)


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))
