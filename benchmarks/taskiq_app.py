"""The fleet shape's 5-ms job as a taskiq task on its Redis stream broker, for the peer comparison.

Imported by ``taskiq worker benchmarks.taskiq_app:broker`` (the worker processes)
and by the benchmark (which sends). Server and namespace come from ``DK_BENCH_REDIS``
and ``DK_BENCH_NS``. Each task records which process ran it, and when, with one
RPUSH (taskiq keeps no results without a result backend, which would cost more).
"""

from __future__ import annotations

import asyncio
import os
import time

from redis.asyncio import Redis
from taskiq_redis import RedisStreamBroker

URL = os.environ.get("DK_BENCH_REDIS", "redis://127.0.0.1:6379/0")
NAMESPACE = os.environ.get("DK_BENCH_NS", "dkbench-taskiq")
#: The list each task appends ``pid time`` to.
DONE = f"{NAMESPACE}:done"

# consumer_id "0": the group reads the stream from its start, so tasks sent before
# the workers start are run (the default "$" would skip them).
broker = RedisStreamBroker(URL, queue_name=f"{NAMESPACE}:bench", consumer_id="0")

_client: Redis | None = None


@broker.task
async def where_aio(i: int) -> int:
    """5 ms of waiting, then a record of which process ran it and when (wall clock)."""
    global _client
    await asyncio.sleep(0.005)
    if _client is None:
        _client = Redis.from_url(URL)
    await _client.rpush(DONE, f"{os.getpid()} {time.time()}")
    return i


async def send(count: int) -> None:
    """Queue ``count`` tasks (the consumer group is created first, as the workers would)."""
    await broker.startup()
    try:
        for start in range(0, count, 500):
            await asyncio.gather(*(where_aio.kiq(i) for i in range(start, min(count, start + 500))))
    finally:
        await broker.shutdown()
