"""Fixtures of the Redis tests: a server, a private namespace, real worker processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from redis import Redis

TESTS = Path(__file__).resolve().parent
URL = os.environ.get("DISPATCHKIT_TEST_REDIS", "redis://127.0.0.1:6379/0")
QUEUE = "q"


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The test server's URL; skips without a server, but fails in CI, which must have one."""
    try:
        Redis.from_url(URL, socket_connect_timeout=1).ping()
    except redis.RedisError as exc:
        reason = f"no Redis server at {URL} ({exc}); start one or set DISPATCHKIT_TEST_REDIS"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return URL


@pytest.fixture
def client(redis_url: str) -> Iterator[Any]:
    connection = Redis.from_url(redis_url)
    yield connection
    connection.close()


@pytest.fixture
def namespace(client: Any) -> Iterator[str]:
    """A key prefix of this test alone; its keys are deleted afterwards."""
    name = f"dktest-{uuid.uuid4().hex[:10]}"
    yield name
    keys = list(client.scan_iter(match=f"{name}:*", count=1000))
    if keys:
        client.delete(*keys)


class Workers:
    """Worker processes started with ``dispatchkit worker``, as if on other hosts."""

    def __init__(self, url: str, namespace: str, client: Any) -> None:
        self.url = url
        self.namespace = namespace
        self.client = client
        self.procs: list[subprocess.Popen[str]] = []

    def start(self, *extra: str, concurrency: int = 2, wait: bool = True) -> subprocess.Popen[str]:
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
            "DK_TEST_REDIS": self.url,
        }
        before = self.registered()
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dispatchkit",
                "worker",
                "--redis",
                self.url,
                "--queue",
                QUEUE,
                "--namespace",
                self.namespace,
                "--concurrency",
                str(concurrency),
                "--import",
                "redis_test_jobs",
                "--heartbeat",
                "0.2",
                *extra,
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.procs.append(proc)
        if wait:
            wait_for(lambda: self.registered() > before or proc.poll() is not None, 20)
            assert proc.poll() is None, proc.communicate()[0]
        return proc

    def start_many(
        self, count: int, *extra: str, concurrency: int = 2
    ) -> list[subprocess.Popen[str]]:
        """Start ``count`` workers at once (their start-up overlaps) and wait for all."""
        before = self.registered()
        procs = [self.start(*extra, concurrency=concurrency, wait=False) for _ in range(count)]
        wait_for(
            lambda: self.registered() >= before + count or any(p.poll() is not None for p in procs),
            20,
        )
        assert all(p.poll() is None for p in procs)
        return procs

    def registered(self) -> int:
        return int(self.client.zcard(f"{self.namespace}:{QUEUE}:workers"))

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.communicate(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()


@pytest.fixture
def workers(redis_url: str, namespace: str, client: Any) -> Iterator[Workers]:
    pool = Workers(redis_url, namespace, client)
    yield pool
    pool.stop_all()


def wait_for(condition: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(0.02)


def dead_letters(client: Any, namespace: str) -> list[dict[bytes, bytes]]:
    """The fields of every entry of the queue's dead-letter stream."""
    return [fields for _, fields in client.xrange(f"{namespace}:{QUEUE}:dead")]


def runs(client: Any, log: str) -> list[tuple[int, int]]:
    """``(value, pid)`` for every start of a ``t.record`` job logged under ``log``."""
    out = []
    for raw in client.lrange(log, 0, -1):
        value, pid = raw.decode().split(":")
        out.append((int(value), int(pid)))
    return out
