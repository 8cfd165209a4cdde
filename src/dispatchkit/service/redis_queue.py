"""Payloads handed to remote workers: one job per payload on a Redis stream.

    POST /v1/payloads ──decode──▶ RedisPayloadQueue.offer ──EVALSHA──▶ <ns>:<queue>:pull
                                     │ all payloads or none,                  │
                                     │ bounded by the stream's length         ▼
                                     └ 202 once Redis has them       dispatchkit worker(s)

With ``dispatchkit serve --redis URL``, each payload becomes the fire-and-forget
job ``job_name(payload)`` on the queue's pull stream, read by ``dispatchkit
worker`` processes on any host (the job registered with ``@job(job_name)``).
One Lua script checks the room and adds every payload of a request, so a
request is queued whole or refused (503), and the answer 202 comes only once
Redis holds the payloads. The stream's length counts the entries not yet
acknowledged by a worker: the backlog, which ``max_backlog`` bounds.
"""

from __future__ import annotations

import logging
from typing import Any, Final

import msgspec

from dispatchkit.errors import ClosedError, TransportError
from dispatchkit.transports._codec import encode_job
from dispatchkit.transports._redis_keys import Keys
from dispatchkit.transports.redis import JOB_FIELD

try:
    import redis.asyncio as aioredis
    from redis.exceptions import RedisError
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        f"dispatchkit serve --redis needs the redis extra: pip install 'dispatchkit[redis]' ({exc})"
    ) from exc

__all__ = ["RedisPayloadQueue"]

logger = logging.getLogger(__name__)

#: KEYS[1]: the stream; ARGV[1]: the most entries it may hold; ARGV[2]: the
#: field of a job entry; ARGV[3..]: the jobs. Returns the stream's new length,
#: or -1 (and adds nothing) if they do not fit.
_ADD_IF_ROOM: Final = """
local length = redis.call('XLEN', KEYS[1])
if length + #ARGV - 2 > tonumber(ARGV[1]) then
  return -1
end
for i = 3, #ARGV do
  redis.call('XADD', KEYS[1], '*', ARGV[2], ARGV[i])
end
return length + #ARGV - 2
"""


class RedisPayloadQueue:
    """The remote queue of an ingest service; used on its event loop only.

    Args:
        url: the Redis server (``redis://host:port/db``).
        queue: the queue's name, as given to ``dispatchkit worker --queue``.
        namespace: the first part of every key, as given to the workers.
        job_name: the registered job the workers run with each payload.
        max_backlog: most payloads waiting or running; past it, requests get 503.
    """

    def __init__(
        self, url: str, queue: str, namespace: str, job_name: str, max_backlog: int
    ) -> None:
        self.keys = Keys(namespace, queue)
        self.job_name = job_name
        self.max_backlog = max_backlog
        self._client: Any = aioredis.Redis.from_url(url)
        self._script: Any = self._client.register_script(_ADD_IF_ROOM)
        self._decode = msgspec.json.Decoder().decode
        #: The backlog seen by the last offer (the queue-depth metric).
        self.backlog = 0
        #: Set by :meth:`close`: offers are refused from then on.
        self.closed = False

    async def ping(self) -> None:
        """Check that Redis answers.

        Raises:
            TransportError: it does not.
        """
        try:
            await self._client.ping()
        except (RedisError, OSError) as exc:
            raise TransportError(f"Redis is unreachable: {exc}") from exc

    async def offer(self, lines: list[bytes]) -> bool:
        """Queue one job per payload line, all or none; False if the backlog has no room.

        Raises:
            ClosedError: the queue was closed (the service is stopping).
            TransportError: Redis failed (nothing, or everything, was queued:
                the script runs whole or not at all).
        """
        if self.closed:
            raise ClosedError("the service is shutting down")
        jobs = [encode_job(0, self.job_name, (self._decode(line),), {}, "") for line in lines]
        try:
            length: int = await self._script(
                keys=[self.keys.pull], args=[self.max_backlog, JOB_FIELD, *jobs]
            )
        except (RedisError, OSError) as exc:
            raise TransportError(f"cannot queue payloads in Redis: {exc}") from exc
        if length < 0:
            return False
        self.backlog = length
        return True

    async def close(self) -> None:
        """Refuse further offers and close the connections. Idempotent."""
        if not self.closed:
            self.closed = True
            await self._client.aclose()
