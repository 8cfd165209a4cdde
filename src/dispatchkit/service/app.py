"""The ingest service as a raw ASGI application: the hot path, no framework.

    POST /v1/payloads ──decode──▶ Dispatcher.offer (all payloads or none, never waits)
                                        │ 202, or 503 + Retry-After when the queue is full
                                        ▼
                              worker threads ──▶ job (sink or user handler)

A framework layer costs a measurable share of the throughput on a small
machine (issue 5), so routing, body reading and responses are written out here.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from time import perf_counter
from typing import Any, Final

import msgspec

from dispatchkit.dispatcher import Dispatcher
from dispatchkit.errors import ClosedError

from .metrics import CONTENT_TYPE, ServiceMetrics
from .payloads import BadRequest, decode_request

__all__ = ["IngestApp"]

logger = logging.getLogger(__name__)
access_logger = logging.getLogger("dispatchkit.service.access")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

#: Most seconds a payload job waits before a sleeping worker is woken for it.
#: Offers wake workers lazily (once a burst waits), and a timer on the event loop,
#: armed by the first offer after a wake-up, wakes them for what is left: a
#: thread switch per request would cost more than the request itself on a small
#: machine.
WAKE_INTERVAL: Final = 0.002

#: Seconds a client is told to wait before retrying a 503.
RETRY_AFTER_SECONDS: Final = 1

_JSON: Final = (b"content-type", b"application/json")
_RETRY_AFTER: Final = (b"retry-after", str(RETRY_AFTER_SECONDS).encode())
_encode = msgspec.json.encode


class IngestApp:
    """``POST /v1/payloads``, ``GET /healthz`` and ``GET /metrics``.

    Args:
        dispatcher: runs one job per payload.
        job: called by a worker with each payload's JSON text (one line).
        metrics: where requests are counted.
        token: bearer token required on ingest (None: none required).
        max_body: largest body in bytes; larger ones get 413.
        access_log: log one structured line per request.
    """

    def __init__(
        self,
        dispatcher: Dispatcher,
        job: Callable[[bytes], object],
        metrics: ServiceMetrics,
        *,
        token: str | None = None,
        max_body: int,
        access_log: bool = False,
    ) -> None:
        self._dispatcher = dispatcher
        self._job = job
        self._metrics = metrics
        self._expected_auth = None if token is None else b"Bearer " + token.encode()
        self._max_body = max_body
        # A request with more payloads than one inbox holds could never be accepted.
        self._max_payloads = dispatcher.settings.queue_size
        self._by_key = dispatcher.strategy.needs_key
        self._access_log = access_log
        self._observe = metrics.latency.observe
        self._wake_armed = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return  # the lifespan is the server's (server.py); no websockets
        start = perf_counter()
        path = scope["path"]
        method = scope["method"]
        if path == "/v1/payloads":
            if method == "POST":
                status = await self._ingest(scope, receive, send)
            else:
                status = await self._refuse(send, 405, "method_not_allowed", "use POST", b"POST")
        elif path in ("/healthz", "/metrics"):
            if method != "GET":
                status = await self._refuse(send, 405, "method_not_allowed", "use GET", b"GET")
            elif path == "/healthz":
                status = await self._health(send)
            else:
                body = self._metrics.render()
                await _respond(send, 200, body, (b"content-type", CONTENT_TYPE.encode()))
                status = 200
        else:
            status = await self._refuse(send, 404, "not_found", f"no such path: {path}")
        elapsed = perf_counter() - start
        self._observe(elapsed)
        if self._access_log:
            access_logger.info(
                "request",
                extra={
                    "method": method,
                    "path": path,
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 3),
                    "client": (scope.get("client") or ("", 0))[0],
                },
            )

    async def _ingest(self, scope: Scope, receive: Receive, send: Send) -> int:
        try:
            count, request_id = await self._take(scope, receive)
        except BadRequest as exc:
            return await self._refuse(send, exc.status, exc.reason, exc.message, extra=exc.header)
        metrics = self._metrics
        metrics.payloads_accepted += count
        metrics.requests_accepted += 1
        await _respond(send, 202, _encode({"accepted": count, "request_id": request_id}), _JSON)
        return 202

    async def _take(self, scope: Scope, receive: Receive) -> tuple[int, str]:
        """Check, decode and queue a request's payloads: ``(count, request_id)``.

        Raises:
            BadRequest: the request is refused (4xx), or the queue is full or
                closing (503).
        """
        if self._expected_auth is not None and not self._authorized(scope):
            raise BadRequest(
                401,
                "unauthorized",
                "missing or wrong bearer token",
                (b"www-authenticate", b"Bearer"),
            )
        body = await self._read_body(scope, receive)
        if body is None:
            raise BadRequest(413, "too_large", f"body larger than {self._max_body} bytes")
        request_id, lines = decode_request(body)
        count = len(lines)
        if count > self._max_payloads:
            raise BadRequest(
                413,
                "too_large",
                f"{count} payloads in one request; the queue holds at most {self._max_payloads}",
            )
        try:
            accepted = self._dispatcher.offer(
                self._job,
                lines,
                key=(lambda _: request_id) if self._by_key else None,
                on_error=_log_job_error,
                wake=False,
            )
        except ClosedError:
            raise BadRequest(503, "closing", "shutting down", _RETRY_AFTER) from None
        if not accepted:
            raise BadRequest(503, "queue_full", "queue full, retry later", _RETRY_AFTER)
        if not self._wake_armed:
            self._wake_armed = True
            asyncio.get_running_loop().call_later(WAKE_INTERVAL, self._wake_workers)
        return count, request_id

    def _wake_workers(self) -> None:
        # Armed by the first lazy offer after the last wake-up: an idle server
        # runs no timer at all.
        self._wake_armed = False
        if not self._dispatcher.closed:
            self._dispatcher.offer(_no_job, [], wake=True)

    def _authorized(self, scope: Scope) -> bool:
        assert self._expected_auth is not None
        for name, value in scope["headers"]:
            if name == b"authorization":
                # Constant time, so the token cannot be guessed byte by byte from timings.
                return hmac.compare_digest(value, self._expected_auth)
        return False

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes | None:
        """The whole body, or None if it is larger than ``max_body``."""
        limit = self._max_body
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    if int(value) > limit:
                        return None  # refused before reading a byte
                except ValueError:
                    pass  # the HTTP parser has rejected a bad length already
                break
        message = await receive()
        body: bytes = message.get("body", b"")
        if not message.get("more_body", False):
            return body if len(body) <= limit else None
        parts = [body]
        size = len(body)
        while message.get("more_body", False):
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return None
            parts.append(chunk)
        return b"".join(parts) if size <= limit else None

    async def _health(self, send: Send) -> int:
        if self._dispatcher.closed:
            await _respond(send, 503, b'{"status":"closing"}', _JSON)
            return 503
        await _respond(send, 200, b'{"status":"ok"}', _JSON)
        return 200

    async def _refuse(
        self,
        send: Send,
        status: int,
        reason: str,
        message: str,
        allow: bytes | None = None,
        extra: tuple[bytes, bytes] | None = None,
    ) -> int:
        self._metrics.rejected[reason] += 1
        headers = [_JSON]
        if allow is not None:
            headers.append((b"allow", allow))
        if extra is not None:
            headers.append(extra)
        await _respond(send, status, _encode({"error": message}), *headers)
        if status >= 500 and reason != "queue_full":
            logger.warning("request refused", extra={"status": status, "reason": reason})
        return status


async def _respond(send: Send, status: int, body: bytes, *headers: tuple[bytes, bytes]) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*headers, (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _no_job(_: object) -> None:
    """Never called: the function of an empty offer, which only wakes workers."""


def _log_job_error(line: bytes, exc: BaseException) -> None:
    # Runs in a worker. The payload itself is not logged: it may be large or private.
    logger.error(
        "payload job failed",
        extra={"error": f"{type(exc).__name__}: {exc}", "payload_bytes": len(line)},
    )
