"""A job the drain tests' worker processes import (``--import drain_jobs``)."""

from __future__ import annotations

import asyncio
import os

import redis

from dispatchkit.registry import job


@job("t.async_started")
async def async_started(log: str, value: int, seconds: float) -> int:
    """A coroutine job: note that ``value`` started (on this pid), as t.record does; sleep."""
    client = redis.Redis.from_url(os.environ["DK_TEST_REDIS"])
    try:
        client.rpush(log, f"{value}:{os.getpid()}")
    finally:
        client.close()
    await asyncio.sleep(seconds)
    return value
