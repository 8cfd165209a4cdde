"""redis-py's errors as :class:`~dispatchkit.errors.TransportError` subclasses (STYLE 1.5)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Final
from urllib.parse import urlsplit, urlunsplit

from dispatchkit.errors import (
    TransportError,
    TransportRejected,
    TransportUnavailable,
)

from ._redis_py import redis

__all__ = ["is_rejection", "redacted_url", "reply_text", "translate_errors"]


#: Error replies saying that the server cannot serve for now, not that the request is
#: wrong: a request refused with one of these is retried, never dead-lettered.
_BUSY_REPLIES: Final = frozenset(
    {"BUSY", "CLUSTERDOWN", "LOADING", "MASTERDOWN", "MISCONF", "NOREPLICAS", "OOM"}
    | {"READONLY", "TRYAGAIN"}
)
_BUSY_ERRORS: Final = (
    redis.exceptions.ReadOnlyError,
    redis.exceptions.OutOfMemoryError,
    redis.exceptions.TryAgainError,
    redis.exceptions.ClusterDownError,
)


def is_rejection(exc: BaseException) -> bool:
    """Whether Redis refused the request itself, so that sending it again cannot help.

    An error reply (``WRONGTYPE``, ``ERR``, ``NOGROUP``, ...) other than those saying
    the server is busy for now, or a value redis-py cannot encode.
    """
    if isinstance(exc, redis.DataError):
        return True
    if not isinstance(exc, redis.ResponseError) or isinstance(exc, _BUSY_ERRORS):
        return False
    return reply_text(exc).split(" ", 1)[0] not in _BUSY_REPLIES


def reply_text(exc: BaseException) -> str:
    """The server's error reply, without the command a pipeline puts before it.

    A pipeline's error reads "Command # 2 (XADD key field value) of pipeline caused
    error: CODE message"; the command may carry a whole outcome.
    """
    return str(exc).rpartition("caused error: ")[2]


@contextlib.contextmanager
def translate_errors(what: str) -> Iterator[None]:
    """Raise redis-py's errors as :class:`TransportError` subclasses.

    Raises:
        TransportUnavailable: the server cannot be reached.
        TransportRejected: the server refused the request itself (:func:`is_rejection`).
        TransportError: any other Redis error (the server busy for now, say).
    """
    try:
        yield
    except redis.AuthenticationError as exc:
        raise TransportUnavailable(f"Redis refused the credentials while {what}: {exc}") from exc
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise TransportUnavailable(f"Redis unreachable while {what}: {exc}") from exc
    except redis.RedisError as exc:
        kind = TransportRejected if is_rejection(exc) else TransportError
        raise kind(f"Redis error while {what}: {exc}") from exc


def redacted_url(url: str) -> str:
    """``url`` without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))
