"""Redis faults: poisoned entries, vanished entries, an unreachable server, bad durations."""

from __future__ import annotations

import contextlib
import math
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest
from redis import Redis

from dispatchkit.errors import JobVanished, RemoteJobError
from dispatchkit.remote import RedisDispatcher, RedisWorker
from dispatchkit.transports.redis import RedisTransport
from tests import redis_test_jobs as jobs
from tests.redis_support import (
    QUEUE,
    TESTS,
    Workers,
    client,
    dead_letters,
    namespace,
    redis_url,
    runs,
    wait_for,
    workers,
)

__all__ = ["client", "namespace", "redis_url", "workers"]  # fixtures, imported for pytest

pytestmark = [pytest.mark.redis, pytest.mark.timeout(60)]

#: Seconds within which jobs queued behind a poisoned entry must be done: far below the
#: 30 s a worker spent retrying such an entry, far above what five tiny jobs need (on a
#: loaded machine too).
PROMPTLY = 10.0


def dispatcher(url: str, namespace: str, **kw: Any) -> RedisDispatcher:
    return RedisDispatcher(url, QUEUE, namespace=namespace, **kw)


def poisoned_entry(client: Any, namespace: str) -> str:
    """Queue a job entry whose fields decode but whose reply stream is a plain string key."""
    not_a_stream = f"{namespace}:not-a-stream"
    client.set(not_a_stream, "a string, not a stream")
    # The wire format of a job entry: [job_id, name, args, kwargs, reply_to, key].
    payload = msgpack.packb([7, "t.echo", ["poison"], {}, not_a_stream, None])
    return str(client.xadd(f"{namespace}:{QUEUE}:pull", {b"j": payload}).decode())


# -- item: a poisoned entry is dead-lettered at once ------------------------------------


def test_a_poisoned_entry_is_dead_lettered_at_once_and_the_jobs_behind_it_go_on(
    workers: Workers, redis_url: str, namespace: str, client: Any
) -> None:
    # One entry at a time: the good jobs can only be read once the poisoned one is done.
    proc = workers.start("--prefetch", "1", concurrency=1)
    with dispatcher(redis_url, namespace) as d:
        entry_id = poisoned_entry(client, namespace)
        started = time.monotonic()
        handles = [d.submit(jobs.echo, i) for i in range(5)]
        assert [h.result(timeout=PROMPTLY) for h in handles] == list(range(5))
        assert time.monotonic() - started < PROMPTLY
        wait_for(lambda: bool(dead_letters(client, namespace)), PROMPTLY)
    (dead,) = dead_letters(client, namespace)
    assert dead[b"id"].decode() == entry_id
    assert b"WRONGTYPE" in dead[b"error"]
    assert f"storing its outcome in {namespace}:not-a-stream".encode() in dead[b"error"]
    assert proc.poll() is None


def test_a_poisoned_entry_does_not_fail_the_good_entries_acknowledged_with_it(
    workers: Workers, redis_url: str, namespace: str, client: Any
) -> None:
    with dispatcher(redis_url, namespace) as d:
        poisoned_entry(client, namespace)
        handles = [d.submit(jobs.echo, i) for i in range(5)]
        stream = f"{namespace}:{QUEUE}:pull"
        wait_for(lambda: client.xlen(stream) == 6, 10)
        # Six read at once and done together: their outcomes mostly share a transaction
        # (the transport test below makes sure of it).
        workers.start(concurrency=6)
        assert [h.result(timeout=PROMPTLY) for h in handles] == list(range(5))
        wait_for(lambda: bool(dead_letters(client, namespace)), PROMPTLY)
        assert d.stats().duplicates == 0  # no good outcome was stored twice
        wait_for(lambda: client.xlen(stream) == 0, PROMPTLY)
    (dead,) = dead_letters(client, namespace)
    assert b"WRONGTYPE" in dead[b"error"]
    assert client.xpending(stream, "workers")["pending"] == 0  # every entry acknowledged


def test_ack_stores_every_good_outcome_once_and_refuses_only_the_poisoned_entry(
    redis_url: str, namespace: str, client: Any
) -> None:
    t = RedisTransport(redis_url, queue=QUEUE, namespace=namespace, consumer="c1")
    stream = t.keys.pull
    t.ensure_group(stream)
    t.put([(stream, f"job{i}".encode()) for i in range(4)])
    got = t.fetch([stream], count=10, block=0.1)
    not_a_stream = f"{namespace}:not-a-stream"
    client.set(not_a_stream, "x")
    out = f"{namespace}:out"
    done = [
        (got[0], out, b"a"),
        (got[1], not_a_stream, b"b"),
        (got[2], "", b""),  # nobody waits for this one's outcome
        (got[3], out, b"d"),
    ]
    refused = t.ack_outcomes(done)
    assert [(d.entry_id, "WRONGTYPE" in error) for d, error in refused] == [(got[1].entry_id, True)]
    assert [payload for _, payload in t.read_outcomes(out, "0-0", 10, None)] == [b"a", b"d"]
    assert client.xpending(stream, "workers")["pending"] == 0
    # A batch refused before any of it ran (an outcome that cannot be encoded) is
    # tried again entry by entry: the good one is stored, the bad one left to nack.
    t.put([(stream, b"job4"), (stream, b"job5")])
    late, bad = t.fetch([stream], count=10, block=0.1)
    not_bytes: Any = None
    refused = t.ack_outcomes([(late, out, b"e"), (bad, out, not_bytes)])
    assert [(d, "must be str, int, float or bytes" in error) for d, error in refused] == [
        (bad, True)
    ]
    assert [p for _, p in t.read_outcomes(out, "0-0", 10, None)] == [b"a", b"d", b"e"]
    assert [
        p["message_id"].decode() for p in client.xpending_range(stream, "workers", "-", "+", 9)
    ] == [bad.entry_id]
    t.close()


@pytest.mark.parametrize("executor", ["thread", "process", "async"])
def test_a_job_whose_outcome_cannot_be_encoded_is_dead_lettered_and_reported(
    workers: Workers, redis_url: str, namespace: str, client: Any, executor: str
) -> None:
    proc = workers.start("--executor", executor, "--prefetch", "1", concurrency=1)
    with dispatcher(redis_url, namespace) as d:
        with pytest.raises(RemoteJobError, match="cannot be turned into text"):
            d.submit(jobs.unprintable).result(timeout=PROMPTLY)
        assert d.submit(jobs.echo, "after").result(timeout=PROMPTLY) == "after"
    (dead,) = dead_letters(client, namespace)
    assert b"cannot be turned into text" in dead[b"error"]
    assert proc.poll() is None


# -- item: a handle whose entry vanished fails --------------------------------------------


def _delete_keys(client: Any, namespace: str) -> None:
    """What a restart without persistence does to this test's keys: they vanish."""
    keys = list(client.scan_iter(match=f"{namespace}:*", count=1000))
    if keys:
        client.delete(*keys)


def test_handles_whose_entries_vanished_fail_with_job_vanished(
    workers: Workers, redis_url: str, namespace: str, client: Any
) -> None:
    workers.start("--prefetch", "1", concurrency=1)
    log = f"{namespace}:log"
    with dispatcher(redis_url, namespace, visibility_timeout=0.5) as d:
        running = d.submit(jobs.record, log, 1, 4.0)  # held by the worker
        queued = d.submit(jobs.echo, 2)  # in the stream, behind it
        wait_for(lambda: bool(runs(client, log)), 10)
        _delete_keys(client, namespace)
        for handle in (running, queued):
            with pytest.raises(JobVanished, match="vanished"):
                handle.result(timeout=PROMPTLY)
        assert d.stats().pending == 0
        assert d.submit(jobs.echo, 3).result(timeout=10) == 3  # new jobs run


def test_live_entries_are_never_taken_for_vanished(
    workers: Workers, redis_url: str, namespace: str, client: Any
) -> None:
    workers.start("--prefetch", "1", concurrency=1)
    log = f"{namespace}:log"
    with dispatcher(redis_url, namespace, visibility_timeout=0.3) as d:
        running = d.submit(jobs.record, log, 1, 2.0)  # pending in the group meanwhile
        queued = [d.submit(jobs.echo, i) for i in range(3)]  # waiting in the stream
        # Many visibility timeouts pass while one job runs and three wait.
        assert running.result(timeout=10) == 1
        assert [h.result(timeout=10) for h in queued] == [0, 1, 2]
        # Entries acknowledged while their handles are looked for: each outcome counts.
        assert list(d.map(jobs.echo, range(3000), window=500)) == list(range(3000))
        assert d.stats().duplicates == 0


# -- item: a worker that cannot reach Redis exits, whatever it holds ----------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def own_redis() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A Redis server of this test alone, without persistence, that the test may kill."""
    port = _free_port()
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    probe = Redis.from_url(url, socket_connect_timeout=0.2)

    def answers() -> bool:
        with contextlib.suppress(Exception):
            return bool(probe.ping())
        return False

    try:
        wait_for(answers, 10)
        yield url, server
    finally:
        probe.close()
        if server.poll() is None:
            server.kill()
        server.wait(10)


_WORKER_SCRIPT = """
import logging, sys
from dispatchkit.errors import TransportError
from dispatchkit.remote import run_worker
logging.basicConfig(level=logging.INFO)
try:
    run_worker(sys.argv[1], "q", imports=["redis_test_jobs"], concurrency=1, prefetch=1,
               heartbeat=0.2, unreachable_timeout=float(sys.argv[2]), executor=sys.argv[3])
except TransportError as exc:
    print(f"worker: {exc}", file=sys.stderr)
    sys.exit(1)
"""


def _script_worker(url: str, unreachable_timeout: float, executor: str) -> subprocess.Popen[str]:
    """A worker process (``run_worker``, as the CLI runs it) on the server at ``url``."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
        "DK_TEST_REDIS": url,
    }
    return subprocess.Popen(
        [sys.executable, "-c", _WORKER_SCRIPT, url, str(unreachable_timeout), executor],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.mark.parametrize(
    ("executor", "outage"), [("thread", "killed"), ("process", "killed"), ("thread", "hung")]
)
def test_a_worker_exits_1_when_redis_stays_unreachable_whether_it_holds_entries_or_not(
    own_redis: tuple[str, subprocess.Popen[bytes]], executor: str, outage: str
) -> None:
    url, server = own_redis
    client = Redis.from_url(url)
    busy = _script_worker(url, 1.0, executor)
    wait_for(lambda: client.zcard(f"dispatchkit:{QUEUE}:workers") == 1, 20)
    idle = _script_worker(url, 1.0, executor)
    wait_for(lambda: client.zcard(f"dispatchkit:{QUEUE}:workers") == 2, 20)
    with RedisDispatcher(url, QUEUE) as d:
        d.submit(jobs.record, "log", 1, 30.0)  # the busy one holds it, unacknowledged
        wait_for(lambda: client.llen("log") == 1, 10)
        d.shutdown(wait=False)
    client.close()
    if outage == "killed":
        server.kill()
        server.wait(10)
    else:  # it keeps its connections but never answers again, as behind a partition
        server.send_signal(signal.SIGSTOP)
    try:
        outputs = [proc.communicate(timeout=15)[0] for proc in (busy, idle)]
    finally:
        for proc in (busy, idle):
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert (busy.returncode, idle.returncode) == (1, 1), outputs
    for out in outputs:
        assert "unreachable for 1 s" in out, out
    assert "1 entries it held stay pending" in "".join(outputs)


_BUSY_SCRIPT = """
local start = redis.call('TIME')
while true do
  local now = redis.call('TIME')
  if (now[1] - start[1]) * 1000000 + (now[2] - start[2]) > tonumber(ARGV[1]) then
    return 1
  end
end
"""


def test_a_busy_server_is_retried_not_taken_for_a_poisoned_entry(
    own_redis: tuple[str, subprocess.Popen[bytes]],
) -> None:
    url, _ = own_redis
    client = Redis.from_url(url)
    client.config_set("busy-reply-threshold", 50)  # other clients get BUSY after 50 ms
    worker = _script_worker(url, 30.0, "thread")
    try:
        wait_for(lambda: client.zcard(f"dispatchkit:{QUEUE}:workers") == 1, 20)
        with RedisDispatcher(url, QUEUE) as d:
            handle = d.submit(jobs.record, "log", 1, 1.0)
            wait_for(lambda: client.llen("log") == 1, 10)
            # The job ends, and its outcome is stored, while a script keeps Redis busy.
            client.eval(_BUSY_SCRIPT, 0, 2_500_000)
            assert handle.result(timeout=10) == 1
        assert client.xlen(f"dispatchkit:{QUEUE}:dead") == 0
        assert worker.poll() is None
    finally:
        worker.terminate()
        out = worker.communicate(timeout=15)[0]
        client.close()
    assert worker.returncode == 0, out
    assert "acknowledging failed; retrying" in out  # refused for a while (BUSY), retried


# -- item: durations given to the API are checked -------------------------------------------


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, 0.0, -1.0])
@pytest.mark.parametrize(
    "setting", ["heartbeat", "dead_after", "visibility_timeout", "unreachable_timeout"]
)
def test_a_worker_refuses_a_duration_that_is_not_a_finite_positive_number(
    redis_url: str, namespace: str, setting: str, value: float
) -> None:
    kwargs: dict[str, Any] = {setting: value}
    with pytest.raises(ValueError, match=f"^{setting} must be"):
        RedisWorker(redis_url, QUEUE, namespace=namespace, **kwargs)


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("visibility_timeout", math.nan),
        ("visibility_timeout", 0.0),
        ("visibility_timeout", math.inf),
        ("put_timeout", math.nan),
        ("put_timeout", -1.0),
        ("put_timeout", math.inf),
        ("worker_wait", math.nan),
        ("worker_wait", -0.5),
        ("worker_wait", math.inf),
    ],
)
def test_a_dispatcher_refuses_a_duration_that_is_not_a_finite_number(
    redis_url: str, namespace: str, setting: str, value: float
) -> None:
    kwargs: dict[str, Any] = {setting: value}
    with pytest.raises(ValueError, match=f"^{setting} must be"):
        RedisDispatcher(redis_url, QUEUE, namespace=namespace, **kwargs)


@pytest.mark.parametrize("flag", ["--heartbeat", "--visibility-timeout"])
@pytest.mark.parametrize("value", ["nan", "inf", "-1"])
def test_worker_cli_refuses_a_non_finite_duration_in_one_line(
    redis_url: str, flag: str, value: str
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "dispatchkit", "worker", "--redis", redis_url, f"{flag}={value}"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert flag.lstrip("-").replace("-", "_") in result.stderr.replace("-", "_")
