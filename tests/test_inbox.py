"""The bounded inbox: FIFO, bounds, closing, cancelling, no lost wake-ups."""

from __future__ import annotations

import threading
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dispatchkit._inbox import Inbox
from dispatchkit.errors import ClosedError, QueueFull


def test_fifo_and_close_drains_then_ends() -> None:
    inbox: Inbox[int] = Inbox(10)
    for i in range(5):
        inbox.put(i)
    inbox.close()
    assert [inbox.get() for _ in range(5)] == [0, 1, 2, 3, 4]
    assert inbox.get() is None
    with pytest.raises(ClosedError):
        inbox.put(9)


def test_put_times_out_with_queue_full() -> None:
    inbox: Inbox[int] = Inbox(2)
    inbox.put(1)
    inbox.put(2)
    started = time.monotonic()
    with pytest.raises(QueueFull, match="inbox full"):
        inbox.put(3, timeout=0.05)
    assert time.monotonic() - started >= 0.05
    assert len(inbox) == 2


def test_blocked_put_resumes_when_consumer_drains() -> None:
    inbox: Inbox[int] = Inbox(4)
    for i in range(4):
        inbox.put(i)
    done = threading.Event()

    def producer() -> None:
        inbox.put(99)
        done.set()

    thread = threading.Thread(target=producer)
    thread.start()
    assert not done.wait(0.05)  # still full: the producer waits
    for _ in range(3):
        inbox.get()
    assert done.wait(2)
    thread.join()
    assert list(iter(inbox.get_nowait, None)) == [3, 99]


def test_close_wakes_a_blocked_producer_with_closed_error() -> None:
    inbox: Inbox[int] = Inbox(1)
    inbox.put(1)
    errors: list[BaseException] = []

    def producer() -> None:
        try:
            inbox.put(2)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=producer)
    thread.start()
    time.sleep(0.05)
    inbox.close()
    thread.join(2)
    assert not thread.is_alive()
    assert len(errors) == 1
    assert isinstance(errors[0], ClosedError)


def test_remove_and_take_all() -> None:
    inbox: Inbox[str] = Inbox(10)
    for item in "abcd":
        inbox.put(item)
    assert inbox.cancel("b")
    assert not inbox.remove("zz")
    assert inbox.cancelled == 1
    assert inbox.take_all() == ["a", "c", "d"]
    assert len(inbox) == 0


def test_lazy_put_wakes_the_consumer_at_wake_at_or_on_wake() -> None:
    inbox: Inbox[int] = Inbox(1000)
    got: list[int] = []

    def consumer() -> None:
        while (item := inbox.get()) is not None:
            got.append(item)

    thread = threading.Thread(target=consumer)
    thread.start()
    while inbox._sleepers == 0:  # wait for the consumer to fall asleep
        time.sleep(0.001)
    inbox.put(1, wake=False)
    time.sleep(0.05)
    assert got == []  # a lazy put alone does not wake it
    inbox.wake()
    deadline = time.monotonic() + 2
    while not got and time.monotonic() < deadline:
        time.sleep(0.001)
    assert got == [1]
    inbox.close()
    thread.join(2)


@given(
    producers=st.integers(min_value=1, max_value=3),
    consumers=st.integers(min_value=1, max_value=3),
    capacity=st.integers(min_value=1, max_value=8),
    per_producer=st.integers(min_value=0, max_value=300),
    lazy=st.booleans(),
)
def test_no_message_lost_or_duplicated(
    producers: int, consumers: int, capacity: int, per_producer: int, lazy: bool
) -> None:
    inbox: Inbox[tuple[int, int]] = Inbox(capacity)
    received: list[list[tuple[int, int]]] = [[] for _ in range(consumers)]

    def consume(index: int) -> None:
        while (item := inbox.get()) is not None:
            received[index].append(item)

    def produce(index: int) -> None:
        for i in range(per_producer):
            inbox.put((index, i), wake=not lazy)
        inbox.wake()

    threads = [threading.Thread(target=consume, args=(i,)) for i in range(consumers)]
    feeders = [threading.Thread(target=produce, args=(i,)) for i in range(producers)]
    for thread in threads + feeders:
        thread.start()
    for thread in feeders:
        thread.join(10)
    inbox.close()
    for thread in threads:
        thread.join(10)
        assert not thread.is_alive()
    everything = sorted(item for part in received for item in part)
    assert everything == sorted((p, i) for p in range(producers) for i in range(per_producer))
    # Each consumer saw each producer's messages in the order they were put.
    for part in received:
        for p in range(producers):
            mine = [i for q, i in part if q == p]
            assert mine == sorted(mine)


def test_give_back_puts_messages_first_in_their_order_beyond_the_capacity() -> None:
    inbox: Inbox[int] = Inbox(1)
    inbox.put(2)
    assert inbox.give_back([0, 1])  # full, yet they had their places: they go back first
    assert [inbox.get(), inbox.get(), inbox.get()] == [0, 1, 2]


def test_once_closed_give_back_needs_another_consumer_still_taking() -> None:
    inbox: Inbox[int] = Inbox(4)
    inbox.close()
    assert not inbox.give_back([1])  # how many consumers there are is not known
    served: Inbox[int] = Inbox(4)
    served.expect_consumers(3)
    served.close()
    assert served.give_back([1])  # two others still take from it
    assert served.get() == 1
    assert served.get() is None  # drained: that consumer is gone
    assert served.give_back([2])  # the third still takes
    assert served.get() == 2
    served.leave()  # ... and now leaves: only the caller is left
    assert not served.give_back([3])


def test_give_back_wakes_a_sleeping_consumer() -> None:
    inbox: Inbox[str] = Inbox(4)
    taken: list[str | None] = []
    consumer = threading.Thread(target=lambda: taken.append(inbox.get()))
    consumer.start()
    deadline = time.monotonic() + 5
    while inbox._sleepers == 0 and time.monotonic() < deadline:
        time.sleep(0.001)
    assert inbox.give_back(["back"])
    consumer.join(5)
    assert taken == ["back"]
