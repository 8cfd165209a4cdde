"""The benchmark's jobs, registered for dispatchkit workers and defined for Dramatiq."""

from __future__ import annotations

import asyncio
import os
import time

from dispatchkit.registry import job


@job("bench.noop")
def noop(i: int) -> int:
    return i


@job("bench.io")
def io(i: int) -> int:
    """An I/O-bound job: 5 ms of waiting."""
    time.sleep(0.005)
    return i


@job("bench.aio")
async def aio(i: int) -> int:
    """The coroutine twin of :func:`io`, for workers run with ``--executor async``."""
    await asyncio.sleep(0.005)
    return i


@job("bench.cpu")
def cpu(n: int) -> int:
    """A CPU-bound job: pure-Python arithmetic, ``n`` steps (it holds the GIL)."""
    total = 0
    for i in range(n):
        total += i * i % 7
    return total


@job("bench.where")
def where(i: int) -> list[float]:
    """A no-op that says which process ran it, and when (wall clock): the fleet shape's job."""
    return [os.getpid(), time.time()]


@job("bench.where_io")
def where_io(i: int) -> list[float]:
    """:func:`where` after 5 ms of waiting."""
    time.sleep(0.005)
    return [os.getpid(), time.time()]


@job("bench.where_aio")
async def where_aio(i: int) -> list[float]:
    """The coroutine twin of :func:`where_io`, for workers run with ``--executor async``."""
    await asyncio.sleep(0.005)
    return [os.getpid(), time.time()]
