"""The ingest service's application: the hot path, no framework.

    POST /v1/payloads ──decode──▶ with --sink: the sink writes the lines (sink.py)
                                        │ --ack durable: 202 once its group is written
                                        │   and fsynced (group_commit.py)
                                        │ --ack buffered: 202 once written
                                        │ 503 + Retry-After if either failed
                                 ──▶ with --handler: offer (all payloads or none, never waits)
                                        │ 202, or 503 + Retry-After when full
                                        ▼
                  asyncio workers on this loop, or worker threads ──▶ the handler
                                 ──▶ with --redis: a Redis stream ──▶ remote workers
                                        (redis_queue.py); 202 once Redis holds them

One application, two server interfaces: RSGI (``__rsgi__``), granian's own,
which ``dispatchkit serve`` runs because it measured about a third faster here
(README), and ASGI (``__call__``), for any ASGI server. Both hand the request
to the same decisions (:meth:`IngestApp._ingest`, :meth:`IngestApp._other`) and
only read bodies and write responses their own way. A framework layer costs a
measurable share of the throughput on a small machine, so routing,
body reading (interfaces.py) and responses are written out here.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Awaitable, Callable
from time import perf_counter
from typing import TYPE_CHECKING, Final

import msgspec
from granian.rsgi import Scope as RSGIScope

from dispatchkit.async_dispatcher import AsyncDispatcher
from dispatchkit.dispatcher import Dispatcher
from dispatchkit.errors import ClosedError, TransportError

from .board import REJECT_REASONS, Slot
from .config import DEFAULT_MAX_DEPTH
from .group_commit import GroupCommit
from .interfaces import (
    HTTPProtocol,
    Receive,
    Response,
    Scope,
    Send,
    read_asgi_body,
    read_rsgi_chunks,
)
from .metrics import CONTENT_TYPE, ServiceMetrics
from .payloads import BadRequest, Batch, decode_batch
from .sink import SegmentSink, SinkClosed, SinkFailure

if TYPE_CHECKING:
    from .redis_queue import RedisPayloadQueue as RemoteQueue

__all__ = ["INGEST_PATH", "IngestApp", "Response"]

logger = logging.getLogger(__name__)
access_logger = logging.getLogger("dispatchkit.service.access")

#: Where payloads are posted.
INGEST_PATH: Final = "/v1/payloads"

#: Most seconds a payload job waits before a sleeping worker thread is woken
#: for it. Offers wake threads lazily (once a burst waits), and a timer on the
#: event loop, armed by the first offer after a wake-up, wakes them for what is
#: left: a thread switch per request would cost more than the request itself
#: on a small machine. (asyncio workers need no such thing.)
WAKE_INTERVAL: Final = 0.002

#: Seconds a client is told to wait before retrying a 503.
RETRY_AFTER_SECONDS: Final = 1

#: Seconds ``/healthz`` waits for Redis to answer (with ``--redis``).
HEALTH_TIMEOUT: Final = 2.0

_JSON: Final = ("content-type", "application/json")
#: The headers of every 202, one list shared by all (the servers only read it).
_ACCEPTED_HEADERS: Final = [_JSON]
_new_tuple = tuple.__new__
_RETRY_AFTER: Final = ("retry-after", str(RETRY_AFTER_SECONDS))
_encode = msgspec.json.encode

#: Where each reason's count of refused requests sits in a row of counters.
_REJECTED_SLOT: Final = {
    reason: Slot.REJECTED + index for index, reason in enumerate(REJECT_REASONS)
}


class IngestApp:
    """``POST /v1/payloads``, ``GET /healthz`` and ``GET /metrics``, on RSGI or ASGI.

    Args:
        dispatcher: runs one job per payload: an :class:`AsyncDispatcher`
            entered on the server's event loop, or a thread :class:`Dispatcher`.
        job: called by a worker with each payload's JSON text (one line).
        metrics: where requests are counted.
        sink: where payloads are stored instead, written by the request itself
            before it is answered (None: each payload is a ``job``).
        commit: with a sink: the group commit a request waits for after its
            write, before its 202 (None: the 202 follows the write).
        token: bearer token required on ingest (None: none required).
        metrics_token: bearer token required on ``/metrics`` (None: open).
        max_body: largest body in bytes; larger ones get 413.
        max_depth: deepest nesting of arrays and objects in a body; deeper get 400.
        access_log: log one structured line per request.
    """

    def __init__(
        self,
        dispatcher: AsyncDispatcher | Dispatcher | RemoteQueue,
        job: Callable[[bytes], object],
        metrics: ServiceMetrics,
        *,
        sink: SegmentSink | None = None,
        commit: GroupCommit | None = None,
        token: str | None = None,
        metrics_token: str | None = None,
        max_body: int,
        max_depth: int = DEFAULT_MAX_DEPTH,
        access_log: bool = False,
    ) -> None:
        self._remote = None if isinstance(dispatcher, AsyncDispatcher | Dispatcher) else dispatcher
        self._dispatcher = dispatcher
        # Thread workers are woken lazily (WAKE_INTERVAL).
        self._threads = dispatcher if isinstance(dispatcher, Dispatcher) else None
        self._job = job
        self._sink = sink
        self._commit = commit
        #: How a request that must wait before its answer is ingested (None: none must).
        self._ingest_async: Callable[[bytes | None], Awaitable[Response]] | None = (
            self._send_on
            if self._remote is not None
            else self._ingest_durably
            if commit is not None
            else None
        )
        self._metrics = metrics
        self._expected_auth = _bearer(token)
        self._metrics_auth = _bearer(metrics_token)
        self._max_body = max_body
        #: A content-length written with fewer digits is within max_body (the HTTP
        #: parser has rejected one that is not a number).
        self._max_body_digits = len(str(max_body))
        self._max_depth = max_depth
        if isinstance(dispatcher, AsyncDispatcher | Dispatcher):
            # A request with more payloads than one inbox holds could never be accepted
            # (all of one request may go to one inbox; pull's shared one holds more).
            settings = dispatcher.settings
            self._max_payloads = settings.queue_size * (
                settings.workers if dispatcher.strategy.shared else 1
            )
            self._by_key = dispatcher.strategy.needs_key
        else:
            self._max_payloads = dispatcher.max_backlog
            self._by_key = False
        self._access_log = access_log
        self._observe = metrics.observe_latency
        self._counts = metrics.row
        self._wake_armed = False

    # -- RSGI ---------------------------------------------------------------

    async def __rsgi__(self, scope: RSGIScope, protocol: HTTPProtocol) -> None:
        if scope.proto != "http":
            return  # websockets are off (server.py)
        start = perf_counter()
        method = scope.method
        path = scope.path
        if path == INGEST_PATH and method == "POST":
            headers = scope.headers
            content_length = headers.get("content-length")
            if (
                self._expected_auth is None
                and content_length is not None
                and len(content_length) < self._max_body_digits
            ):
                response = None  # no token to check, and fewer digits than max_body has
            else:
                response = self._refuse_early(headers.get("authorization"), content_length)
            if response is None:
                if content_length is not None:
                    # Checked against max_body above, and the server reads no more.
                    body: bytes | None = await protocol()
                else:  # chunked: count as it comes
                    body = await read_rsgi_chunks(protocol, self._max_body)
                ingest_async = self._ingest_async
                response = self._ingest(body) if ingest_async is None else await ingest_async(body)
        else:
            response = await self._other(method, path, scope.headers.get("authorization"))
        protocol.response_bytes(*response)
        self._observe(perf_counter() - start)
        if self._access_log:
            client = scope.client.rpartition(":")[0]  # "host:port", as ASGI gives the host
            self._log_access(start, method, path, response.status, client)

    # -- ASGI ---------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return  # the lifespan is the server's (server.py); no websockets
        start = perf_counter()
        method = scope["method"]
        path = scope["path"]
        if path == INGEST_PATH and method == "POST":
            authorization = content_length = None
            for name, value in scope["headers"]:
                if name == b"authorization":
                    authorization = value.decode("latin-1")
                elif name == b"content-length":
                    content_length = value.decode("latin-1")
            response = self._refuse_early(authorization, content_length)
            if response is None:
                body = await read_asgi_body(receive, self._max_body)
                ingest_async = self._ingest_async
                response = self._ingest(body) if ingest_async is None else await ingest_async(body)
        else:
            authorization = next(
                (v.decode("latin-1") for k, v in scope["headers"] if k == b"authorization"), None
            )
            response = await self._other(method, path, authorization)
        status, headers, payload = response
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    *((name.encode(), value.encode()) for name, value in headers),
                    (b"content-length", str(len(payload)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})
        self._observe(perf_counter() - start)
        if self._access_log:
            self._log_access(start, method, path, status, (scope.get("client") or ("",))[0])

    # -- the decisions both interfaces share --------------------------------

    def _refuse_early(
        self, authorization: str | None, content_length: str | None
    ) -> Response | None:
        """Refuse an ingest request on its headers alone, before reading its body."""
        if not _authorized(authorization, self._expected_auth):
            return self._unauthorized()
        if content_length is not None:
            try:
                too_large = int(content_length) > self._max_body
            except ValueError:
                too_large = False  # the HTTP parser has rejected a bad length already
            if too_large:
                return self._refuse_request(self._too_large())
        return None

    def _ingest(self, body: bytes | None) -> Response:
        """Decode a body (None: over ``max_body``), store or queue its payloads: 202, 4xx or 503."""
        try:
            batch = self._decode(body)
            if self._sink is None:
                self._offer(batch.lines(), batch.request_id)
            else:
                self._store(batch)
        except BadRequest as exc:
            return self._refuse_request(exc)
        return self._accepted(batch.payload_count, batch.request_id)

    async def _ingest_durably(self, body: bytes | None) -> Response:
        """:meth:`_ingest` for a durable sink: 202 once written and flushed by the group commit."""
        assert self._commit is not None
        try:
            batch = self._decode(body)
            if self._dispatcher.closed:
                raise BadRequest(503, "closing", "shutting down", _RETRY_AFTER)
            try:
                await self._commit.synced(batch.data, batch.payload_count)
            except SinkFailure as exc:  # the group's write: none of its lines is kept
                raise _sink_refused(exc) from None
            except OSError as exc:  # logged by the sink when it starts failing
                raise BadRequest(
                    503,
                    "sink_failed",
                    f"payloads not stored: cannot fsync the sink: {exc}; retry later",
                    _RETRY_AFTER,
                ) from None
        except BadRequest as exc:
            return self._refuse_request(exc)
        return self._accepted(batch.payload_count, batch.request_id)

    def _store(self, batch: Batch) -> None:
        """Write the payloads' lines to the sink before the answer, all or none.

        Raises:
            BadRequest: 503, the sink cannot write them now (nothing of them is
                kept: the client may send them again), or the service is closing.
        """
        assert self._sink is not None
        if self._dispatcher.closed:
            raise BadRequest(503, "closing", "shutting down", _RETRY_AFTER)
        try:
            self._sink.write_lines(batch.data, batch.payload_count)
        except SinkFailure as exc:
            raise _sink_refused(exc) from None

    async def _send_on(self, body: bytes | None) -> Response:
        """:meth:`_ingest` for a remote queue: 202 once Redis holds the payloads."""
        assert self._remote is not None
        try:
            batch = self._decode(body)
            try:
                accepted = await self._remote.offer(batch.lines())
            except ValueError as exc:  # a payload the workers' encoding cannot carry
                raise BadRequest(422, "invalid", f"invalid request: {exc}") from None
            except ClosedError:
                raise BadRequest(503, "closing", "shutting down", _RETRY_AFTER) from None
            except TransportError as exc:
                logger.error("remote queue failed", extra={"error": str(exc)})
                raise BadRequest(
                    503, "unavailable", "queue unavailable, retry later", _RETRY_AFTER
                ) from None
            if not accepted:
                raise BadRequest(503, "queue_full", "queue full, retry later", _RETRY_AFTER)
        except BadRequest as exc:
            return self._refuse_request(exc)
        return self._accepted(batch.payload_count, batch.request_id)

    def _decode(self, body: bytes | None) -> Batch:
        """The request id and the payloads of a body (None: over ``max_body``).

        Raises:
            BadRequest: 400, 413 or 422.
        """
        if body is None:
            raise self._too_large()
        batch = decode_batch(body, self._max_depth)
        if batch.payload_count > self._max_payloads:
            raise BadRequest(
                413,
                "too_large",
                f"{batch.payload_count} payloads in one request; the queue holds at most "
                f"{self._max_payloads}",
            )
        return batch

    def _accepted(self, count: int, request_id: str) -> Response:
        counts = self._counts
        counts[Slot.PAYLOADS] += count
        counts[Slot.REQUESTS] += 1
        body = _encode({"accepted": count, "request_id": request_id})
        return _new_tuple(Response, (202, _ACCEPTED_HEADERS, body))  # Response() costs a call more

    def _refuse_request(self, exc: BadRequest) -> Response:
        extra = () if exc.header is None else (exc.header,)
        return self._refuse(exc.status, exc.reason, exc.message, *extra)

    def _offer(self, lines: list[bytes], request_id: str) -> None:
        """Queue one job per line, all or none, without waiting.

        Raises:
            BadRequest: 503, the queue is full or closing.
        """
        key = (lambda _: request_id) if self._by_key else None
        threads = self._threads
        dispatcher = self._dispatcher
        assert isinstance(dispatcher, AsyncDispatcher | Dispatcher)
        try:
            if threads is None:
                accepted = dispatcher.offer(self._job, lines, key=key, on_error=_log_job_error)
            else:
                accepted = threads.offer(
                    self._job, lines, key=key, on_error=_log_job_error, wake=False
                )
                if accepted and not self._wake_armed:
                    self._wake_armed = True
                    asyncio.get_running_loop().call_later(WAKE_INTERVAL, self._wake_workers)
        except ClosedError:
            raise BadRequest(503, "closing", "shutting down", _RETRY_AFTER) from None
        if not accepted:
            raise BadRequest(503, "queue_full", "queue full, retry later", _RETRY_AFTER)

    def _wake_workers(self) -> None:
        # Armed by the first lazy offer after the last wake-up: an idle server
        # runs no timer at all.
        self._wake_armed = False
        if self._threads is not None and not self._threads.closed:
            self._threads.offer(_no_job, [], wake=True)

    async def _other(self, method: str, path: str, authorization: str | None) -> Response:
        """Every request but a POST of payloads."""
        if path == INGEST_PATH:
            return self._refuse(405, "method_not_allowed", "use POST", ("allow", "POST"))
        if path not in ("/healthz", "/metrics"):
            return self._refuse(404, "not_found", f"no such path: {path}")
        if method != "GET":
            return self._refuse(405, "method_not_allowed", "use GET", ("allow", "GET"))
        if path == "/metrics":
            if not _authorized(authorization, self._metrics_auth):
                return self._unauthorized()
            return Response(200, [("content-type", CONTENT_TYPE)], self._metrics.render())
        return await self._health()

    async def _health(self) -> Response:
        """200 while the service can accept work; 503 with the reason when it cannot."""
        if self._dispatcher.closed:
            return Response(503, [_JSON], b'{"status":"closing"}')
        reason: str | None = None
        if self._sink is not None:
            reason = self._sink.failure()
        elif self._remote is not None:
            try:
                await asyncio.wait_for(self._remote.ping(), HEALTH_TIMEOUT)
            except TransportError as exc:
                reason = str(exc)
            except TimeoutError:
                reason = f"Redis did not answer within {HEALTH_TIMEOUT:g} s"
        if reason is not None:
            return Response(503, [_JSON], _encode({"status": "failing", "reason": reason}))
        return Response(200, [_JSON], b'{"status":"ok"}')

    def _unauthorized(self) -> Response:
        return self._refuse(
            401, "unauthorized", "missing or wrong bearer token", ("www-authenticate", "Bearer")
        )

    def _too_large(self) -> BadRequest:
        return BadRequest(413, "too_large", f"body larger than {self._max_body} bytes")

    def _refuse(self, status: int, reason: str, message: str, *extra: tuple[str, str]) -> Response:
        self._counts[_REJECTED_SLOT[reason]] += 1
        if status >= 500 and reason not in ("queue_full", "sink_failed"):
            logger.warning("request refused", extra={"status": status, "reason": reason})
        return Response(status, [_JSON, *extra], _encode({"error": message}))

    def _log_access(self, start: float, method: str, path: str, status: int, client: str) -> None:
        access_logger.info(
            "request",
            extra={
                "method": method,
                "path": path,
                "status": status,
                "duration_ms": round((perf_counter() - start) * 1000, 3),
                "client": client,
            },
        )


def _sink_refused(exc: SinkFailure) -> BadRequest:
    """The 503 of a request whose lines the sink did not take."""
    if isinstance(exc, SinkClosed):
        return BadRequest(503, "closing", "shutting down", _RETRY_AFTER)
    # Logged by the sink when it starts failing, not once per request.
    return BadRequest(503, "sink_failed", f"payloads not stored: {exc}; retry later", _RETRY_AFTER)


def _bearer(token: str | None) -> bytes | None:
    """The Authorization header that carries ``token`` (None: no token required)."""
    return None if token is None else b"Bearer " + token.encode()


def _authorized(authorization: str | None, expected: bytes | None) -> bool:
    # Constant time, so that a token cannot be guessed byte by byte from timings.
    return expected is None or (
        authorization is not None and hmac.compare_digest(authorization.encode("latin-1"), expected)
    )


def _no_job(_: object) -> None:
    """Never called: the function of an empty offer, which only wakes workers."""


def _log_job_error(line: bytes, exc: BaseException) -> None:
    # Runs in a worker (a thread, or a task on the event loop). The payload
    # itself is not logged: it may be large or private.
    logger.error(
        "payload job failed",
        extra={"error": f"{type(exc).__name__}: {exc}", "payload_bytes": len(line)},
    )
