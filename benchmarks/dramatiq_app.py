"""The benchmark's jobs as Dramatiq actors, for the peer-queue comparison.

Imported by ``dramatiq benchmarks.dramatiq_app`` (the worker processes) and by
the benchmark (which sends). Server and namespace come from ``DK_BENCH_REDIS``
and ``DK_BENCH_NS``. Each job counts itself with one INCR, the cheapest way to
know when all have run.
"""

from __future__ import annotations

import os
import time
from typing import Any

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker


class App:
    """The broker, the actors and the completion counter of one benchmark run."""

    def __init__(self, url: str, namespace: str) -> None:
        self.broker = RedisBroker(url=url, namespace=namespace)  # type: ignore[no-untyped-call]
        dramatiq.set_broker(self.broker)
        self.client = redis.Redis.from_url(url)
        self.counter = f"{namespace}:done"
        client, counter = self.client, self.counter

        def noop(i: int) -> int:
            client.incr(counter)
            return i

        def io(i: int) -> int:
            time.sleep(0.005)
            client.incr(counter)
            return i

        self.actors: dict[str, Any] = {
            fn.__name__: dramatiq.actor(queue_name="bench", max_retries=0, broker=self.broker)(fn)
            for fn in (noop, io)
        }

    def wait_for(self, count: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while int(self.client.get(self.counter) or 0) < count:
            if time.monotonic() > deadline:
                done = int(self.client.get(self.counter) or 0)
                raise TimeoutError(f"dramatiq ran {done} of {count} jobs")
            time.sleep(0.002)


def configure() -> App:
    return App(
        os.environ.get("DK_BENCH_REDIS", "redis://127.0.0.1:6379/0"),
        os.environ.get("DK_BENCH_NS", "dkbench-dramatiq"),
    )


# The dramatiq CLI imports this module and finds the actors through the broker.
if os.environ.get("DK_BENCH_NS"):
    app = configure()
