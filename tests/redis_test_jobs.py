"""Jobs the Redis tests' worker processes import (``--import redis_test_jobs``)."""

from __future__ import annotations

import asyncio
import os
import sys
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


@job("t.modules")
def modules() -> list[str]:
    """The modules the worker process has loaded by now."""
    return sorted(sys.modules)


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


_in_flight = 0
_peak = 0


@job("t.async_record")
async def async_record(log: str, value: int, seconds: float) -> int:
    """A coroutine job: sleep, then log ``value:peak``, the most jobs seen waiting at once."""
    global _in_flight, _peak
    _in_flight += 1
    _peak = max(_peak, _in_flight)
    try:
        await asyncio.sleep(seconds)
    finally:
        _in_flight -= 1
    _redis().rpush(log, f"{value}:{_peak}")
    return value


@job("t.async_echo")
async def async_echo(value: object) -> object:
    await asyncio.sleep(0)
    if value == "fail":
        raise ValueError("async failure")
    return value


@job("t.exit_now")
def exit_now() -> None:
    """Call sys.exit inside a job: the job fails, the worker must not."""
    raise SystemExit(3)


@job("t.pid")
def pid(value: int) -> list[int]:
    """``[value, the pid that ran it]``: where did the job run?"""
    return [value, os.getpid()]


@job("t.die")
def die() -> None:
    """Kill the process running the job, as a crash in native code would."""
    os.kill(os.getpid(), 9)


@job("t.payload")
def payload(body: dict[str, object]) -> None:
    """An ingest service's payload job: note the payload's id in the list it names."""
    _redis().rpush(str(body["log"]), str(body["id"]))


class _Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("this error cannot be turned into text")


@job("t.unprintable")
def unprintable() -> None:
    """Raise an error whose message cannot be formed: its outcome cannot be encoded."""
    raise _Unprintable


@job("t.fail_until")
def fail_until(counter: str, failures: int) -> int:
    """Fail the first ``failures`` calls (counted in Redis), then return the count."""
    calls = int(_redis().incr(counter))
    if calls <= failures:
        raise ConnectionError(f"call {calls} fails")
    return calls


@job("t.hold")
def hold(log: str, value: int, gate: str, seconds: float) -> int:
    """Like :func:`record`, then wait until ``gate`` (a list) gets an item, ``seconds`` at most."""
    client = _redis()
    client.rpush(log, f"{value}:{os.getpid()}")
    deadline = time.monotonic() + seconds
    # One second at a time: redis-py's replies time out after 5 s by default.
    while time.monotonic() < deadline and client.blpop([gate], 1) is None:
        pass
    return value


@job("t.wait_for")
def wait_for_key(key: str) -> None:
    """Wait until ``key`` exists (60 s at most): a job held until the test lets it go."""
    client = _redis()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not client.exists(key):
        time.sleep(0.01)
