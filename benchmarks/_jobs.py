"""Job functions for the benchmarks: module-level, so worker processes can import them."""

from __future__ import annotations

import asyncio
import time

#: Loop count of ``spin`` that takes about 1 ms here; set by ``calibrate``.
SPIN_FOR_1MS = 20_000


def spin(n: int) -> int:
    """Pure-Python arithmetic: CPU-bound, holds the GIL."""
    total = 0
    for i in range(n):
        total += i * i % 7
    return total


def calibrate() -> int:
    """The ``spin`` argument that takes about 1 ms on this machine (median of 15)."""
    samples = []
    for _ in range(15):
        started = time.perf_counter()
        spin(20_000)
        samples.append(time.perf_counter() - started)
    samples.sort()
    return max(1, round(20_000 * 0.001 / samples[len(samples) // 2]))


def sleep_io(seconds: float) -> None:
    time.sleep(seconds)


async def async_io(seconds: float) -> None:
    await asyncio.sleep(seconds)
