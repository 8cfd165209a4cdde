"""The transport of a remote worker or dispatcher: Redis from a URL, or one given."""

from __future__ import annotations

from dispatchkit.transports.base import Transport

__all__ = ["default_name", "redis_transport", "transport_consumer"]


def default_name() -> str:
    """A worker name unique across hosts: ``host-pid-random``."""
    import os
    import secrets
    import socket

    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


def redis_transport(
    url: str | None, queue: str | None, namespace: str, consumer: str, socket_timeout: float
) -> Transport:
    """The Redis transport given a URL (redis-py is loaded here, not before).

    Raises:
        ValueError: no URL or no queue, or a malformed URL.
        TransportUnavailable: redis-py is not installed.
    """
    if url is None or queue is None:
        raise ValueError("give the Redis URL and the queue, or a transport")
    from dispatchkit.transports.redis import RedisTransport

    return RedisTransport(
        url, queue=queue, namespace=namespace, consumer=consumer, socket_timeout=socket_timeout
    )


def transport_consumer(
    transport: Transport, url: str | None, queue: str | None, name: str | None
) -> str:
    """A worker's name given its transport: the transport's consumer name.

    Raises:
        ValueError: a URL as well, another queue or name, or no consumer name.
    """
    if url is not None:
        raise ValueError("give either a Redis URL or a transport, not both")
    if queue is not None and queue != transport.keys.queue:
        raise ValueError(f"queue {queue!r} is not the transport's ({transport.keys.queue!r})")
    if not transport.consumer:
        raise ValueError("a worker's transport needs a consumer name (the worker's)")
    if name is not None and name != transport.consumer:
        raise ValueError(f"name {name!r} is not the transport's consumer ({transport.consumer!r})")
    return transport.consumer
