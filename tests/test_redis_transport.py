"""The Redis transport alone: put, fetch, ack, nack, requeue against a real server."""

from __future__ import annotations

from typing import Any

import pytest

from dispatchkit import JobHandle
from dispatchkit.errors import TransportUnavailable
from dispatchkit.remote import RedisDispatcher
from dispatchkit.transports.redis import RedisTransport
from tests.redis_support import client, namespace, redis_url

__all__ = ["client", "namespace", "redis_url"]  # fixtures, imported for pytest

pytestmark = [pytest.mark.redis, pytest.mark.timeout(30)]


def test_put_fetch_ack_nack_requeue_keep_every_entry_accounted_for(
    redis_url: str, namespace: str, client: Any
) -> None:
    t = RedisTransport(redis_url, queue="q", namespace=namespace, consumer="c1")
    stream = t.keys.pull
    t.ensure_group(stream)
    t.put([(stream, f"job{i}".encode()) for i in range(5)])
    got = t.fetch([stream], count=10, block=0.1)
    assert [d.payload for d in got] == [f"job{i}".encode() for i in range(5)]
    assert all(d.attempts == 1 for d in got)
    assert t.fetch([stream], count=10, block=0.01) == []  # nothing new

    t.ack(got[:2], [(f"{namespace}:out", b"outcome")])
    t.nack(got[2], "broken")
    assert t.requeue([(d, stream, "", 0) for d in got[3:]]) == [True, True]
    assert client.xlen(f"{namespace}:out") == 1
    dead = client.xrange(t.keys.dead_letter)
    assert [(f[b"payload"], f[b"error"]) for _, f in dead] == [(b"job2", b"broken")]
    again = t.fetch([stream], count=10, block=0.1)
    # Entries given back unstarted come back once more: no attempt was made.
    assert [(d.payload, d.attempts) for d in again] == [(b"job3", 1), (b"job4", 1)]
    assert t.consumers(stream) == {"c1": 2}
    assert not t.delete_consumer(stream, "c1")  # it holds entries: never deleted

    other = RedisTransport(redis_url, queue="q", namespace=namespace, consumer="c2")
    claimed = other.claim_from(stream, "c1", 0)
    assert [(d.payload, d.attempts) for d in claimed] == [(b"job3", 2), (b"job4", 2)]
    other.ack(claimed, [])
    assert t.delete_consumer(stream, "c1")
    assert client.xlen(stream) == 0  # acknowledged entries are gone
    t.close()
    other.close()


def test_an_unreachable_server_is_one_clear_error() -> None:
    with pytest.raises(TransportUnavailable, match="unreachable"):
        RedisDispatcher("redis://127.0.0.1:1/0", "q")


def test_round_robin_without_any_worker_fails_the_jobs_after_worker_wait(
    redis_url: str, namespace: str
) -> None:
    d = RedisDispatcher(
        redis_url, "q", namespace=namespace, strategy="round_robin", worker_wait=0.3
    )
    handle: JobHandle[int] = d.submit("t.echo", 1)
    with pytest.raises(LookupError, match="no worker registered"):
        handle.result(timeout=10)
    assert d.stats().failed == 1
    d.shutdown()


def test_a_batch_of_outcomes_for_one_dispatcher_is_one_entry_read_back_in_order(
    redis_url: str, namespace: str, client: Any
) -> None:
    t = RedisTransport(redis_url, queue="q", namespace=namespace, consumer="c1")
    stream = t.keys.pull
    t.ensure_group(stream)
    t.put([(stream, f"job{i}".encode()) for i in range(5)])
    got = t.fetch([stream], count=10, block=0.1)
    mine, theirs = f"{namespace}:out1", f"{namespace}:out2"
    done = [(d, mine if i != 2 else theirs, f"outcome{i}".encode()) for i, d in enumerate(got)]
    assert t.ack_outcomes(done) == []
    # One XADD per results stream, not per job; every entry acknowledged and deleted.
    assert (client.xlen(mine), client.xlen(theirs), client.xlen(stream)) == (1, 1, 0)
    read = t.read_outcomes(mine, "0-0", 10, None)
    assert [payload for _, payload in read] == [b"outcome0", b"outcome1", b"outcome3", b"outcome4"]
    assert len({entry_id for entry_id, _ in read}) == 1
    assert [p for _, p in t.read_outcomes(theirs, "0-0", 10, None)] == [b"outcome2"]
    t.close()
