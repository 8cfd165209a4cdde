"""One contract, every transport: the in-memory one behaves as the Redis one does."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from dispatchkit.transports._codec import Moved, decode_reply
from dispatchkit.transports.base import Transport
from dispatchkit.transports.memory import MemoryBroker, MemoryTransport
from tests.redis_support import client, namespace, redis_url

__all__ = ["client", "namespace", "redis_url"]  # fixtures, imported for pytest

pytestmark = pytest.mark.timeout(30)


@dataclass
class Backend:
    make: Callable[[str], Transport]
    #: ``(payload, error)`` of every dead-lettered entry.
    dead_letters: Callable[[], list[tuple[bytes, str]]]


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    if request.param == "memory":
        broker = MemoryBroker()

        def make_memory(consumer: str) -> Transport:
            return MemoryTransport(broker, queue="q", consumer=consumer)

        keys = make_memory("").keys
        yield Backend(
            make_memory,
            lambda: [(d.payload, d.error) for d in broker.dead_letters(keys)],
        )
        return
    from dispatchkit.transports.redis import RedisTransport

    url: str = request.getfixturevalue("redis_url")
    ns: str = request.getfixturevalue("namespace")
    raw: Any = request.getfixturevalue("client")
    made: list[Transport] = []

    def make_redis(consumer: str) -> Transport:
        made.append(RedisTransport(url, queue="q", namespace=ns, consumer=consumer))
        return made[-1]

    def dead() -> list[tuple[bytes, str]]:
        return [(f[b"payload"], f[b"error"].decode()) for _, f in raw.xrange(f"{ns}:q:dead")]

    yield Backend(make_redis, dead)
    for transport in made:
        transport.close()


def test_entries_are_fetched_once_acknowledged_dead_lettered_given_back_and_claimed(
    backend: Backend,
) -> None:
    t = backend.make("c1")
    stream = t.keys.pull
    t.open_stream(stream)
    assert len(t.put([(stream, f"job{i}".encode()) for i in range(5)])) == 5
    got = t.fetch([stream], count=10, block=0.1)
    assert [(d.payload, d.attempts) for d in got] == [(f"job{i}".encode(), 1) for i in range(5)]
    assert t.fetch([stream], count=10, block=0.01) == []
    assert t.vanished([(stream, got[0].entry_id)]) == [False]  # held, so not gone

    results = f"{t.keys.prefix}:r:test"
    refused = t.ack_outcomes([(got[0], results, b"one"), (got[1], "", b"")])
    assert refused == []
    assert t.vanished([(stream, got[0].entry_id), (f"{stream}-none", "1-0")]) == [True, True]
    t.nack(got[2], "broken")
    assert backend.dead_letters() == [(b"job2", "broken")]
    # Given back unstarted: added again (a new id, the same attempt count) and the move
    # told to the reply stream; one no longer held is left alone.
    given = t.requeue(
        [(got[3], stream, results, 3), (got[4], stream, "", 4), (got[0], stream, "", 0)]
    )
    assert given == [True, True, False]
    again = t.fetch([stream], count=10, block=0.1)
    assert [(d.payload, d.attempts) for d in again] == [(b"job3", 1), (b"job4", 1)]
    assert t.vanished([(stream, got[3].entry_id)]) == [True]
    assert not t.delete_consumer(stream, "c1")  # it holds entries

    other = backend.make("c2")
    t.touch({stream: [again[0].entry_id]})
    assert other.claim_idle(stream, 5.0) == []  # touched just now: not idle
    claimed = other.claim_from(stream, "c1", 0)
    assert [(d.payload, d.attempts) for d in claimed] == [(b"job3", 2), (b"job4", 2)]
    other.ack(claimed, [])
    assert t.delete_consumer(stream, "c1")
    assert other.claim_idle(stream, 0, everything=True) == []

    outcomes = t.read_outcomes(results, "0-0", 10, None)
    assert outcomes[0][1] == b"one"
    assert [decode_reply(payload or b"") for _, payload in outcomes[1:]] == [
        Moved(3, stream, again[0].entry_id)
    ]
    t.trim_outcomes(results, outcomes[-1][0])
    assert t.read_outcomes(results, outcomes[-1][0], 10, 0.05) == []
    t.drop_outcomes(results)
    assert t.read_outcomes(results, "0-0", 10, None) == []


def test_a_stream_that_was_never_opened_cannot_be_fetched_from(backend: Backend) -> None:
    from dispatchkit.errors import TransportError

    t = backend.make("c1")
    with pytest.raises(TransportError, match="NOGROUP"):
        t.fetch([t.keys.worker_stream("nobody")], count=1, block=0.01)
    assert t.claim_idle(t.keys.worker_stream("nobody"), 0) == []


def test_put_if_room_adds_each_request_whole_or_not_at_all(backend: Backend) -> None:
    t = backend.make("")
    length, fitted = t.put_if_room(t.keys.pull, 3, [[b"a", b"b"], [b"c", b"d"], [b"e"]])
    assert (length, fitted) == (3, [True, False, True])


def test_workers_register_beat_drain_and_leave(backend: Backend) -> None:
    t = backend.make("w1")
    own = t.keys.worker_stream("w1")
    t.open_stream(own)
    t.register("w1", own)
    t.register("w2", t.keys.worker_stream("w2"))
    assert t.worker_streams() == {own, t.keys.worker_stream("w2")}
    assert t.live_workers(10) == ["w1", "w2"]
    time.sleep(0.05)
    peers = t.heartbeat("w1", draining=False, dead_after=0.02)
    assert (peers.live, peers.dead) == (frozenset({"w1"}), frozenset({"w2"}))
    t.heartbeat("w2", draining=True, dead_after=10)
    assert t.live_workers(10) == ["w1"]  # a draining worker gets no new jobs
    t.forget_worker("w2")
    t.unregister("w1", forget=False)
    assert t.live_workers(10) == ["w1"]
    t.unregister("w1")
    assert t.live_workers(10) == []

    t.put([(own, b"x")])
    assert not t.delete_stream_if_empty(own)
    t.ack(t.fetch([own], 1, 0.1), [])
    assert t.delete_stream_if_empty(own)
    assert own not in t.worker_streams()


def test_a_partition_lease_has_one_holder_at_a_time(backend: Backend) -> None:
    t = backend.make("w1")
    assert t.take_lease(3, "w1", 10)
    assert not t.take_lease(3, "w2", 10)
    assert t.renew_lease(3, "w1", 10)
    assert not t.renew_lease(3, "w2", 10)
    t.release_lease(3, "w2")  # not its lease: nothing happens
    assert not t.take_lease(3, "w2", 10)
    t.release_lease(3, "w1")
    assert t.take_lease(3, "w2", 0.05)
    time.sleep(0.1)  # expired
    assert not t.renew_lease(3, "w2", 10)
    assert t.take_lease(3, "w1", 10)
