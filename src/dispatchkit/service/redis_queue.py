"""Payloads handed to remote workers: one job per payload on a Redis stream.

    POST /v1/payloads ──decode──▶ RedisPayloadQueue.offer ──put_if_room──▶ <ns>:<queue>:pull
                                     │ all payloads or none,                  │
                                     │ bounded by the stream's length         ▼
                                     └ 202 once Redis has them       dispatchkit worker(s)

With ``dispatchkit serve --redis URL``, each payload becomes the fire-and-forget
job ``job_name(payload)`` on the queue's pull stream, read by ``dispatchkit
worker`` processes on any host (the job registered with ``@job(job_name)``).
One call of the transport (a Lua script) checks the room and adds every payload of a request, so a
request is queued whole or refused (503), and the answer 202 comes only once
Redis holds the payloads. The requests that arrive while one call is on its
way go together in the next (a group commit: one round trip for many
requests). The stream's length counts the entries not yet acknowledged by a
worker: the backlog, which ``max_backlog`` bounds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Final

import msgspec

from dispatchkit.errors import ClosedError, PayloadNotSendable, TransportError
from dispatchkit.transports._codec import encode_job

try:
    from dispatchkit.transports.redis import RedisTransport
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        f"dispatchkit serve --redis needs the redis extra: pip install 'dispatchkit[redis]' ({exc})"
    ) from exc

__all__ = ["PayloadNotSendable", "RedisPayloadQueue"]

logger = logging.getLogger(__name__)

#: The most bytes of jobs, and the most requests, one call to Redis carries.
_CALL_BYTES: Final = 8 << 20
_CALL_REQUESTS: Final = 1000


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
        # The calls run on a thread of the loop's executor, one at a time (the
        # group commit), so that the loop never waits on Redis.
        self._transport = RedisTransport(url, queue=queue, namespace=namespace)
        self.keys = self._transport.keys
        self.job_name = job_name
        self.max_backlog = max_backlog
        self._decode = msgspec.json.Decoder().decode
        # Requests waiting for the next call to Redis: (encoded jobs, their answer).
        self._waiting: list[tuple[list[bytes], asyncio.Future[bool]]] = []
        self._sender: asyncio.Task[None] | None = None
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
            await asyncio.to_thread(self._transport.ping)
        except TransportError as exc:
            reason = exc.__cause__ if exc.__cause__ is not None else exc
            raise TransportError(f"Redis is unreachable: {reason}") from exc

    async def offer(self, lines: list[bytes]) -> bool:
        """Queue one job per payload line, all or none; False if the backlog has no room.

        Raises:
            PayloadNotSendable: a payload msgpack cannot encode (nothing queued).
            ClosedError: the queue was closed (the service is stopping).
            TransportError: Redis failed (nothing, or everything, was queued:
                the script runs whole or not at all).
        """
        if self.closed:
            raise ClosedError("the service is shutting down")
        jobs: list[bytes] = []
        for index, line in enumerate(lines):
            try:
                jobs.append(encode_job(0, self.job_name, (self._decode(line),), {}, ""))
            except TypeError as exc:
                reason = str(exc).rpartition(": ")[2]  # e.g. "Integer value out of range"
                raise PayloadNotSendable(
                    f"`$.payloads[{index}]` cannot be sent to the workers: {reason}"
                ) from None
        answer: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiting.append((jobs, answer))
        if self._sender is None:
            self._sender = asyncio.get_running_loop().create_task(self._send())
        return await answer

    async def _send(self) -> None:
        """Send the waiting requests, a call at a time, until none waits (group commit).

        While one call is on its way, the requests that arrive meanwhile wait
        for the next: under load, a call carries many requests (up to
        ``_CALL_REQUESTS``, or ``_CALL_BYTES`` of jobs).
        """
        batch: list[tuple[list[bytes], asyncio.Future[bool]]] = []
        try:
            while self._waiting:
                batch = self._take_batch()
                requests = [jobs for jobs, _ in batch]
                try:
                    length, fitted = await asyncio.to_thread(
                        self._transport.put_if_room, self.keys.pull, self.max_backlog, requests
                    )
                except TransportError as exc:
                    _fail(batch, TransportError(f"cannot queue payloads in Redis: {exc}"))
                    continue
                self.backlog = length
                for (_, answer), fit in zip(batch, fitted, strict=True):
                    if not answer.done():  # its request may have been cancelled
                        answer.set_result(fit)
        except BaseException as exc:
            # Never leave a request without an answer: a 503, and the error goes on.
            error = TransportError(f"cannot queue payloads in Redis: {exc!r}")
            _fail(batch, error)
            _fail(self._waiting, error)
            self._waiting = []
            raise
        finally:
            self._sender = None

    def _take_batch(self) -> list[tuple[list[bytes], asyncio.Future[bool]]]:
        """The waiting requests from the front, as many as one call may carry."""
        size = count = 0
        for jobs, _ in self._waiting:
            if count and (count >= _CALL_REQUESTS or size + sum(map(len, jobs)) > _CALL_BYTES):
                break
            size += sum(map(len, jobs))
            count += 1
        batch, self._waiting = self._waiting[:count], self._waiting[count:]
        return batch

    async def close(self) -> None:
        """Refuse further offers and close the connections. Idempotent."""
        if not self.closed:
            self.closed = True
            if self._sender is not None:
                # The requests on their way get their answer first; a cancelled
                # close does not cancel the call they wait on.
                with contextlib.suppress(Exception):
                    await asyncio.shield(self._sender)
            await asyncio.to_thread(self._transport.close)


def _fail(batch: list[tuple[list[bytes], asyncio.Future[bool]]], error: Exception) -> None:
    for _, answer in batch:
        if not answer.done():
            answer.set_exception(error)
