"""Dispatchers and workers over a real Redis server, workers in real processes."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from dispatchkit import Job, JobHandle, RetryPolicy, WorkerLost
from dispatchkit.errors import ClosedError, RemoteJobError, TimedOut
from dispatchkit.remote import RedisDispatcher
from tests import redis_test_jobs as jobs
from tests.redis_support import (
    QUEUE,
    Workers,
    client,
    dead_letters,
    namespace,
    redis_url,
    runs,
    wait_for,
    workers,
)
from tests.serve_support import Server, start_server

__all__ = ["client", "namespace", "redis_url", "workers"]  # fixtures, imported for pytest

pytestmark = [pytest.mark.redis, pytest.mark.timeout(60)]


def dispatcher(url: str, namespace: str, strategy: str = "pull", **kw: object) -> RedisDispatcher:
    return RedisDispatcher(url, QUEUE, namespace=namespace, strategy=strategy, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("strategy", ["pull", "round_robin", "batch", "key"])
def test_every_strategy_spreads_jobs_over_worker_processes(
    strategy: str, workers: Workers, redis_url: str, namespace: str, client: Any
) -> None:
    procs = workers.start_many(3)
    log = f"{namespace}:log"
    with dispatcher(redis_url, namespace, strategy, block=10) as d:
        handles = [d.submit_job(Job(jobs.record, (log, i, 0.002), key=i % 5)) for i in range(240)]
        assert [h.result(timeout=30) for h in handles] == list(range(240))
    started = runs(client, log)
    assert sorted(v for v, _ in started) == list(range(240))  # each ran once
    pids = {pid for _, pid in started}
    if strategy == "key":
        for key in range(5):  # one key's jobs ran in submission order
            order = [v for v, _ in started if v % 5 == key]
            assert order == sorted(order)
    else:
        assert pids == {p.pid for p in procs}  # every worker process took a share


def test_a_remote_failure_raises_with_the_remote_traceback(
    workers: Workers, redis_url: str, namespace: str
) -> None:
    workers.start()
    with dispatcher(redis_url, namespace) as d:
        handle = d.submit(jobs.fail, "boom")
        with pytest.raises(RemoteJobError, match="ValueError: boom") as info:
            handle.result(timeout=20)
        assert info.value.type_name == "ValueError"
        assert "raise ValueError(message)" in str(info.value.__cause__)
        assert d.submit(jobs.echo, [1, "two"]).result(timeout=20) == [1, "two"]


def test_a_jobs_retry_policy_and_timeout_reach_the_worker_process(
    workers: Workers, redis_url: str, namespace: str
) -> None:
    workers.start("--executor", "process")
    no_wait = RetryPolicy(max_attempts=3, backoff=0, jitter=0)
    with dispatcher(redis_url, namespace) as d:
        again = d.submit_job(Job(jobs.fail_until, (f"{namespace}:calls", 2), retry=no_wait))
        assert again.result(timeout=30) == 3
        assert again.attempts == 3
        overrun = d.submit_job(Job(jobs.record, (f"{namespace}:log", 1, 10.0), timeout=0.5))
        with pytest.raises(TimedOut):
            overrun.result(timeout=30)


def test_submit_checks_names_and_arguments_before_publishing(
    redis_url: str, namespace: str
) -> None:
    d = dispatcher(redis_url, namespace)
    with pytest.raises(ValueError, match="not a registered job"):
        d.submit(print, 1)
    with pytest.raises(TypeError, match="cannot be sent"):
        d.submit(jobs.echo, object())
    d.shutdown()
    with pytest.raises(ClosedError):
        d.submit(jobs.echo, 1)


def test_kill_9_mid_job_loses_nothing(
    workers: Workers, redis_url: str, namespace: str, client: Any
) -> None:
    victim = workers.start(concurrency=2)
    others = workers.start_many(2)
    log = f"{namespace}:log"
    with dispatcher(redis_url, namespace) as d:
        handles = [d.submit(jobs.record, log, i, 0.05) for i in range(120)]
        wait_for(lambda: any(pid == victim.pid for _, pid in runs(client, log)), 20)
        victim.kill()
        assert victim.wait(10) == -signal.SIGKILL  # an abnormal death is non-zero
        assert sorted(h.result(timeout=40) for h in handles) == list(range(120))
    started = runs(client, log)
    counts = Counter(v for v, _ in started)
    assert set(counts) == set(range(120))  # nothing lost
    twice = {v for v, n in counts.items() if n > 1}
    by_victim = {v for v, pid in started if pid == victim.pid}
    # Only jobs the victim had started (in flight when it died) ran again, by the others.
    assert twice <= by_victim
    assert all(n == 2 for v, n in counts.items() if v in twice)
    assert all(p.poll() is None for p in others)


def test_a_job_whose_workers_keep_dying_is_dead_lettered_with_worker_lost(
    workers: Workers, redis_url: str, namespace: str, client: Any
) -> None:
    victim = workers.start(concurrency=1)
    log = f"{namespace}:log"
    with dispatcher(redis_url, namespace) as d:
        handle = d.submit(jobs.record, log, 7, 30.0)
        wait_for(lambda: bool(runs(client, log)), 20)
        victim.kill()
        victim.wait(10)
        workers.start("--max-attempts", "1")
        with pytest.raises(WorkerLost, match="delivered 2 times"):
            handle.result(timeout=30)
    dead = dead_letters(client, namespace)
    assert len(dead) == 1
    assert b"delivered 2 times" in dead[0][b"error"]


@pytest.mark.parametrize("executor", ["thread", "async"])
def test_garbage_entries_go_to_the_dead_letter_stream_and_the_worker_goes_on(
    workers: Workers, redis_url: str, namespace: str, client: Any, executor: str
) -> None:
    proc = workers.start("--executor", executor)
    stream = f"{namespace}:{QUEUE}:pull"
    client.xadd(stream, {b"x": b"no job field"})
    client.xadd(stream, {b"j": b"\xc1 not msgpack"})
    with dispatcher(redis_url, namespace) as d:
        unknown: JobHandle[int] = d.submit("t.no_such_job", 1)
        with pytest.raises(RemoteJobError, match="no job is registered"):
            unknown.result(timeout=20)
        assert d.submit(jobs.echo, "still working").result(timeout=20) == "still working"
    errors = sorted(fields[b"error"].decode() for fields in dead_letters(client, namespace))
    assert len(errors) == 3
    assert any("no job field" in e for e in errors)
    assert any("not a job entry" in e and "no job field" not in e for e in errors)
    assert any("no job is registered" in e for e in errors)
    assert proc.poll() is None


def test_sigterm_drains_in_flight_jobs_and_hands_over_the_rest(
    workers: Workers, redis_url: str, namespace: str, client: Any
) -> None:
    # --prefetch 1: the leaving worker holds one entry, so most of its stream is handed over.
    leaving = workers.start("--prefetch", "1", concurrency=1)
    staying = workers.start(concurrency=2)
    log = f"{namespace}:log"
    with dispatcher(redis_url, namespace, "round_robin") as d:
        handles = [d.submit(jobs.record, log, i, 0.1) for i in range(20)]
        wait_for(lambda: any(pid == leaving.pid for _, pid in runs(client, log)), 20)
        leaving.send_signal(signal.SIGTERM)
        out, _ = leaving.communicate(timeout=20)
        assert leaving.returncode == 0, out
        assert "stopped" in out
        assert sorted(h.result(timeout=30) for h in handles) == list(range(20))
    counts = Counter(v for v, _ in runs(client, log))
    assert counts == Counter(range(20))  # a clean stop runs nothing twice
    by_pid = Counter(pid for _, pid in runs(client, log))
    assert by_pid[staying.pid] > 10  # it took over the leaving worker's stream
    registered = client.zrange(f"{namespace}:{QUEUE}:workers", 0, -1)
    assert not [w for w in registered if f"-{leaving.pid}-".encode() in w]  # it unregistered


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dispatchkit", "worker", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={**os.environ},
    )


def test_worker_cli_rejects_bad_input_in_one_line(redis_url: str) -> None:
    result = _cli("--redis", redis_url, "--executor", "fiber")
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "invalid choice: 'fiber'" in result.stderr
    result = _cli("--redis", redis_url, "--import", "no_such_module_here")
    assert result.returncode == 2
    assert "no_such_module_here" in result.stderr
    result = _cli("--redis", "redis://user:s3cret@127.0.0.1:1/0")
    assert result.returncode == 1
    assert "unreachable" in result.stderr
    assert "redis://user:***@127.0.0.1:1/0" in result.stderr
    assert "s3cret" not in result.stderr  # a password is never printed
    assert "Traceback" not in result.stderr


def test_async_workers_run_coroutine_jobs_many_at_a_time(
    workers: Workers, redis_url: str, namespace: str, client: Any
) -> None:
    workers.start("--executor", "async", concurrency=20)
    log = f"{namespace}:log"
    with dispatcher(redis_url, namespace) as d:
        handles = [d.submit(jobs.async_record, log, i, 0.2) for i in range(40)]
        assert sorted(h.result(timeout=30) for h in handles) == list(range(40))
        assert list(d.map(jobs.async_echo, range(12), chunk=5)) == list(range(12))
        with pytest.raises(RemoteJobError, match="ValueError: async failure"):
            d.submit(jobs.async_echo, "fail").result(timeout=10)
    peaks = [int(raw.split(b":")[1]) for raw in client.lrange(log, 0, -1)]
    assert max(peaks) >= 10  # many coroutine jobs waited at once, on one event loop


@pytest.mark.parametrize("executor", ["thread", "async"])
def test_a_job_raising_system_exit_fails_alone(
    workers: Workers, redis_url: str, namespace: str, executor: str
) -> None:
    proc = workers.start("--executor", executor, concurrency=2)
    with dispatcher(redis_url, namespace) as d:
        with pytest.raises(RemoteJobError, match="SystemExit"):
            d.submit(jobs.exit_now).result(timeout=10)
        assert d.submit(jobs.echo, 5).result(timeout=10) == 5  # the worker goes on
    assert proc.poll() is None


def test_process_workers_run_jobs_in_child_processes_and_survive_their_death(
    workers: Workers, redis_url: str, namespace: str
) -> None:
    proc = workers.start("--executor", "process", concurrency=2)
    with dispatcher(redis_url, namespace) as d:
        ran = [d.submit(jobs.pid, i) for i in range(6)]
        chunked = list(d.map(jobs.pid, range(10), chunk=5))
        with pytest.raises(WorkerLost, match="died"):  # its process died, not the worker
            d.submit(jobs.die).result(timeout=30)
        with pytest.raises(RemoteJobError, match="ValueError: boom"):
            d.submit(jobs.fail, "boom").result(timeout=30)
        with pytest.raises(RemoteJobError, match="--executor async"):
            d.submit(jobs.async_echo, 1).result(timeout=30)
        after = d.submit(jobs.pid, 99).result(timeout=30)
        results = [h.result(timeout=30) for h in ran]
    assert [v for v, _ in results] == list(range(6))
    assert [v for v, _ in chunked] == list(range(10))
    pids = {p for _, p in [*results, *chunked, after]}
    assert proc.pid not in pids  # the jobs ran in the worker's child processes
    assert after[0] == 99  # a replacement process took the dead one's place
    assert proc.poll() is None


def test_a_thread_worker_fails_a_coroutine_job_with_a_clear_error(
    workers: Workers, redis_url: str, namespace: str
) -> None:
    workers.start(concurrency=1)
    with dispatcher(redis_url, namespace) as d:
        with pytest.raises(RemoteJobError, match="--executor async"):
            d.submit(jobs.async_echo, 1).result(timeout=10)
        assert d.submit(jobs.echo, 2).result(timeout=10) == 2  # the worker goes on


def test_chunked_map_returns_every_result_in_order_and_raises_the_first_error(
    workers: Workers, redis_url: str, namespace: str
) -> None:
    workers.start_many(2)
    with dispatcher(redis_url, namespace) as d:
        assert list(d.map(jobs.echo, range(5000), chunk=100)) == list(range(5000))
        results = d.map(jobs.fail, ["first", "second"], chunk=2)
        with pytest.raises(RemoteJobError, match="ValueError: first"):
            next(results)
    with dispatcher(redis_url, namespace, "key") as d, pytest.raises(ValueError, match="chunk"):
        next(d.map(jobs.echo, range(10), chunk=5))


def test_key_order_holds_while_a_worker_leaves_and_its_partitions_move(
    workers: Workers, redis_url: str, namespace: str, client: Any
) -> None:
    procs = {proc.pid: proc for proc in workers.start_many(2)}
    log = f"{namespace}:log"
    with dispatcher(redis_url, namespace, "key") as d:
        handles = [d.submit_job(Job(jobs.record, (log, i, 0.01), key=i % 8)) for i in range(200)]
        # Which worker holds which partitions is theirs to settle: the one that
        # started first leaves, so it surely holds some.
        wait_for(lambda: bool(runs(client, log)), 20)
        leaving = procs[runs(client, log)[0][1]]
        leaving.send_signal(signal.SIGTERM)
        assert leaving.wait(20) == 0
        assert sorted(h.result(timeout=40) for h in handles) == list(range(200))
    started = runs(client, log)
    assert sorted(v for v, _ in started) == list(range(200))  # each ran once
    for key in range(8):
        order = [v for v, _ in started if v % 8 == key]
        assert order == sorted(order), f"key {key} ran out of order"


def test_key_order_holds_when_a_worker_is_killed_and_its_partitions_move(
    workers: Workers, redis_url: str, namespace: str, client: Any
) -> None:
    procs = {proc.pid: proc for proc in workers.start_many(3)}
    log = f"{namespace}:log"
    keys = 8
    with dispatcher(redis_url, namespace, "key") as d:
        handles = [
            d.submit_job(Job(jobs.span, (log, i, 0.1), key=i % keys)) for i in range(keys * 6)
        ]
        # The leases are the workers' to share out (one may hold none of these
        # keys' partitions yet): the first to start a job is the one killed.
        wait_for(lambda: bool(_events(client, log)), 20)
        victim = procs[int(_events(client, log)[0].split(":")[2])]
        victim.kill()
        victim.wait(10)
        assert sorted(h.result(timeout=40) for h in handles) == list(range(keys * 6))
    events = [e.split(":") for e in _events(client, log)]
    started_by_victim = {
        int(v) for kind, v, pid in events if kind == "s" and int(pid) == victim.pid
    }
    starts = Counter(int(v) for kind, v, _ in events if kind == "s")
    # Only a job the victim had started runs twice (it died holding it), and only twice.
    assert all(n == 1 or (n == 2 and v in started_by_victim) for v, n in starts.items())
    for key in range(keys):
        # The survivors ran this key's jobs one after another, in order, never side by side.
        running: int | None = None
        done: list[int] = []
        for kind, value, pid in events:
            if int(value) % keys != key or int(pid) == victim.pid:
                continue
            if kind == "s":
                assert running is None, f"key {key}: {value} started while {running} ran"
                running = int(value)
            else:
                done.append(int(value))
                running = None
        assert done == sorted(done), f"key {key} ran out of order: {done}"


def _events(client: Any, log: str) -> list[str]:
    return [raw.decode() for raw in client.lrange(log, 0, -1)]


def test_a_draining_worker_keeps_its_heartbeat_until_its_last_job_is_done(
    workers: Workers, redis_url: str, namespace: str, client: Any
) -> None:
    proc = workers.start(concurrency=1)
    log = f"{namespace}:log"
    registry = f"{namespace}:{QUEUE}:workers"
    with dispatcher(redis_url, namespace) as d:
        handle = d.submit(jobs.record, log, 1, 2.0)
        wait_for(lambda: bool(runs(client, log)), 20)
        proc.send_signal(signal.SIGTERM)
        wait_for(lambda: bool(client.smembers(f"{namespace}:{QUEUE}:draining")), 10)
        (name, first), *_ = client.zrange(registry, 0, -1, withscores=True)
        wait_for(lambda: (client.zscore(registry, name) or 0) > first, 10)  # still beating
        assert proc.poll() is None  # still running its job
        assert handle.result(timeout=20) == 1
    assert proc.wait(20) == 0
    assert client.zscore(registry, name) is None  # unregistered once done


def _serve_remote(tmp_path: Path, redis_url: str, namespace: str, *extra: str) -> Server:
    return start_server(
        tmp_path,
        *("--redis", redis_url, "--queue", QUEUE, "--namespace", namespace),
        *("--job", "t.payload", *extra),
    )


def _payloads(ids: range | list[int], log: str) -> bytes:
    return json.dumps(
        {
            "version": "1",
            "token": "t",
            "request_id": "r",
            "payloads": [{"id": i, "log": log} for i in ids],
        }
    ).encode()


def test_serve_hands_payloads_to_remote_workers(
    workers: Workers, redis_url: str, namespace: str, client: Any, tmp_path: Path
) -> None:
    log = f"{namespace}:log"
    workers.start(concurrency=2)
    server = _serve_remote(tmp_path, redis_url, namespace)
    try:
        for first in (0, 2, 4):
            status, _, body = server.request(
                "POST", "/v1/payloads", _payloads(range(first, first + 2), log)
            )
            assert (status, body["accepted"]) == (202, 2)
        wait_for(lambda: client.llen(log) == 6, 20)
        status, _, text = server.request("GET", "/metrics")
        assert status == 200
        counted = re.search(r"^dispatchkit_request_duration_seconds_count (\S+)$", text, re.M)
        assert counted is not None
        assert float(counted[1]) >= 3  # the three posts (and the health checks)
        assert "dispatchkit_queue_depth" in text
    finally:
        assert server.stop() == 0
    assert sorted(int(v) for v in client.lrange(log, 0, -1)) == list(range(6))
    assert [e["accepted"] for e in server.log_entries() if e["message"] == "stopped"] == [6]
    assert not client.exists("")  # no outcome written for jobs nobody waits on


def test_serve_refuses_payloads_the_remote_backlog_cannot_hold(
    workers: Workers, redis_url: str, namespace: str, client: Any, tmp_path: Path
) -> None:
    log = f"{namespace}:log"
    server = _serve_remote(tmp_path, redis_url, namespace, "--queue-size", "4")
    try:
        statuses = [
            server.request("POST", "/v1/payloads", _payloads([2 * n, 2 * n + 1], log))[0]
            for n in range(3)
        ]
        assert statuses == [202, 202, 503]  # no worker yet: the stream holds 4
        status, _, body = server.request("POST", "/v1/payloads", _payloads(range(5), log))
        assert status == 413
        assert "at most 4" in body["error"]
        big = b'{"version":"1","token":"t","request_id":"r","payloads":[{"n":%d}]}' % (10**30)
        status, _, body = server.request("POST", "/v1/payloads", big)
        assert status == 422  # valid JSON that msgpack cannot carry: refused, not a crash
        assert "`$.payloads[0]` cannot be sent to the workers" in body["error"]
        workers.start()  # a worker comes and drains the backlog
        wait_for(lambda: client.llen(log) == 4, 20)
        assert server.request("POST", "/v1/payloads", _payloads([8, 9], log))[0] == 202
        wait_for(lambda: client.llen(log) == 6, 20)
    finally:
        assert server.stop() == 0
    assert sorted(int(v) for v in client.lrange(log, 0, -1)) == [0, 1, 2, 3, 8, 9]


def test_serve_with_redis_checks_its_settings(redis_url: str, tmp_path: Path) -> None:
    def serve(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "dispatchkit", "serve", "--port", "0", *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )

    result = serve("--redis", "redis://user:s3cret@127.0.0.1:1/0")
    assert result.returncode == 1
    assert "cannot reach Redis at redis://user:***@127.0.0.1:1/0" in result.stderr
    assert "s3cret" not in result.stderr
    result = serve("--redis", redis_url, "--sink", str(tmp_path))
    assert result.returncode == 2
    assert "choose one of --sink, --redis" in result.stderr
    result = serve("--redis", "localhost:6379")
    assert result.returncode == 2
    assert "redis must be a redis://, rediss:// or unix:// URL" in result.stderr


def test_the_remote_queue_commits_concurrent_requests_together_each_whole_or_not(
    redis_url: str, namespace: str, client: Any
) -> None:
    from dispatchkit.service.redis_queue import RedisPayloadQueue

    async def main() -> list[bool]:
        queue = RedisPayloadQueue(redis_url, QUEUE, namespace, "t.payload", max_backlog=61)
        try:
            return await asyncio.gather(
                *(
                    queue.offer([b'{"id":%d}' % (2 * i), b'{"id":%d}' % (2 * i + 1)])
                    for i in range(50)
                )
            )
        finally:
            await queue.close()

    # 30 requests fit in 61 places; the 31st would need 62 and is refused whole, as
    # are the others: none is split, whatever call to Redis carried it.
    assert asyncio.run(main()) == [True] * 30 + [False] * 20
    assert client.xlen(f"{namespace}:{QUEUE}:pull") == 60


def test_requests_arriving_during_a_call_go_together_in_the_next(
    redis_url: str, namespace: str, client: Any
) -> None:
    from dispatchkit.service.redis_queue import RedisPayloadQueue

    requests_per_call: list[int] = []

    async def main() -> list[bool]:
        queue = RedisPayloadQueue(redis_url, QUEUE, namespace, "t.payload", max_backlog=100)
        transport = queue._transport
        put_if_room = transport.put_if_room

        def counted(
            stream: str, limit: int, requests: Sequence[Sequence[bytes]]
        ) -> tuple[int, list[bool]]:
            requests_per_call.append(len(requests))
            return put_if_room(stream, limit, requests)

        transport.put_if_room = counted  # type: ignore[method-assign]
        try:
            first = asyncio.ensure_future(queue.offer([b'{"id":0}']))
            await asyncio.sleep(0)  # the first call leaves...
            rest = [queue.offer([b'{"id":%d}' % i]) for i in range(1, 6)]  # ...these wait
            return await asyncio.gather(first, *rest)
        finally:
            await queue.close()

    assert asyncio.run(main()) == [True] * 6
    assert requests_per_call == [1, 5]
    assert client.xlen(f"{namespace}:{QUEUE}:pull") == 6
