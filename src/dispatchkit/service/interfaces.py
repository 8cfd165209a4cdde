"""Where the ingest app meets its server interfaces: their types, and reading a body whole.

The ingest app (app.py) speaks RSGI, granian's own interface, and ASGI. What
it needs of each is here: the RSGI protocol object's methods, the ASGI scope,
receive and send, the :class:`Response` either interface writes, and a reader
per interface that gathers a request's body up to a limit, so that a body too
large is refused without being kept.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any, NamedTuple, Protocol

__all__ = [
    "HTTPProtocol",
    "Headers",
    "Message",
    "Receive",
    "Response",
    "Scope",
    "Send",
    "read_asgi_body",
    "read_rsgi_chunks",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Headers = list[tuple[str, str]]


class Response(NamedTuple):
    """What the application answers, before a server interface writes it."""

    status: int
    headers: Headers
    body: bytes


class HTTPProtocol(Protocol):
    """What the app uses of granian's RSGI HTTP protocol object."""

    def __call__(self) -> Awaitable[bytes]: ...
    def __aiter__(self) -> AsyncIterator[bytes]: ...
    def response_bytes(self, status: int, headers: Headers, body: bytes) -> None: ...


async def read_rsgi_chunks(protocol: HTTPProtocol, limit: int) -> bytes | None:
    """The whole chunked body, or None once it grows past ``limit`` bytes."""
    parts: list[bytes] = []
    size = 0
    async for chunk in protocol:
        size += len(chunk)
        if size > limit:
            return None
        parts.append(chunk)
    return b"".join(parts)


async def read_asgi_body(receive: Receive, limit: int) -> bytes | None:
    """The whole body, or None once it grows past ``limit`` bytes."""
    parts: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        parts.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(parts)
