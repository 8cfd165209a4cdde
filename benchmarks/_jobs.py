"""Job functions for the benchmarks: module-level, so worker processes can import them."""

from __future__ import annotations

import asyncio
import json
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


def parse_record(line: str) -> int:
    """A user's job on a line of JSON: decode it, give its size."""
    return len(json.loads(line))


def json_records(count: int, huge_every: int = 100) -> list[str]:
    """``count`` lines of JSON: records of about 800 bytes (some 6 µs to decode here),
    every ``huge_every``-th one a list of 200 of them (about 0.9 ms)."""
    record = json.dumps({f"field{i}": (f"value {i}" if i % 3 else i * 1.5) for i in range(40)})
    huge = "[" + ",".join([record] * 200) + "]"
    return [huge if i % huge_every == huge_every - 1 else record for i in range(count)]
