"""Jobs the Redis tests' worker processes import (``--import redis_test_jobs``)."""

from __future__ import annotations

import os
import time

import redis

from dispatchkit.registry import job

_client: redis.Redis | None = None


def _redis() -> redis.Redis:
    global _client
    if _client is None:
        _client = redis.Redis.from_url(os.environ["DK_TEST_REDIS"])
    return _client


@job("t.echo")
def echo(value: object) -> object:
    return value


@job("t.fail")
def fail(message: str) -> None:
    raise ValueError(message)


@job("t.record")
def record(log: str, value: int, seconds: float = 0.0) -> int:
    """Note that ``value`` started (on this pid), sleep, return it: runs are counted in Redis."""
    _redis().rpush(log, f"{value}:{os.getpid()}")
    time.sleep(seconds)
    return value


@job("t.span")
def span(log: str, value: int, seconds: float) -> int:
    """Like :func:`record`, and note the end too: ``s:value:pid`` ... ``e:value:pid``."""
    client = _redis()
    client.rpush(log, f"s:{value}:{os.getpid()}")
    time.sleep(seconds)
    client.rpush(log, f"e:{value}:{os.getpid()}")
    return value
