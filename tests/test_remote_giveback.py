"""Giving back unstarted entries, over the in-memory transport: the rule, and the dispatcher's
view of an entry that moved."""

from __future__ import annotations

import time

import pytest

from dispatchkit.remote.giveback import overdue
from dispatchkit.transports.base import Delivery
from dispatchkit.transports.memory import MemoryBroker
from tests.test_remote_memory import dispatcher, gate, gated, keys, square, wait_for, workers

pytestmark = pytest.mark.timeout(30)


def _entries(count: int) -> list[Delivery]:
    return [Delivery("s", f"{i}-0", 1, b"") for i in range(count)]


def test_held_entries_are_overdue_only_once_every_slot_would_start_them_late() -> None:
    held = _entries(6)
    # Entries of 10 ms, two slots free: all start within 30 ms.
    assert overdue(held, [], 2, 0.01, 0.1) == []
    # One slot stuck for 0.2 s (past its 10 ms: taken to run as long again), the other
    # starts the entries one after another.
    assert overdue(held, [0.2], 2, 0.01, 0.1) == []
    # Both stuck: every held entry would start late.
    assert overdue(held, [0.2, 0.3], 2, 0.01, 0.1) == held
    # Both just started long entries: the tail past the limit is overdue.
    assert overdue(held, [0.0, 0.0], 2, 0.04, 0.1) == held[4:]


def test_an_entry_given_back_is_followed_by_its_dispatcher_not_taken_for_vanished() -> None:
    # A worker with one slot holds entries behind a job that blocks; it gives them back,
    # each under a new id. The dispatcher, looking for its entries after 0.2 s, follows
    # the moves instead of failing the jobs with JobVanished; a second worker runs them.
    broker = MemoryBroker()
    pull = keys().pull
    gate.clear()
    try:
        with dispatcher(broker, visibility_timeout=0.2) as d:
            with workers(broker, "w1", concurrency=1, prefetch=8):
                assert list(d.map(square, range(12))) == [x * x for x in range(12)]
                blocked = d.submit(gated, 0)
                behind = [d.submit(square, x) for x in range(1, 7)]
                wait_for(lambda: broker.undelivered(pull) == 6)  # given back, not started
                # The dispatcher looks for them (every 0.1 s) meanwhile.
                time.sleep(1.0)
                with workers(broker, "w2", concurrency=1):
                    assert [h.result(timeout=10) for h in behind] == [x * x for x in range(1, 7)]
                    gate.set()
                    assert blocked.result(timeout=10) == 0
            assert d.join(10)
            stats = d.stats()
        assert (stats.succeeded, stats.failed) == (19, 0)
    finally:
        gate.set()
