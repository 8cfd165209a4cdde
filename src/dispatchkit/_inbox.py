"""A bounded multi-producer, multi-consumer queue, built for threads under the GIL.

``queue.Queue`` takes a lock and signals a condition on every ``put`` and
``get``. Waking a sleeping thread costs far more than moving a job (on a small
virtual machine, a fraction of a millisecond), so this queue is built to wake
threads as seldom as possible:

* the fast paths are a bare ``deque.append`` / ``deque.popleft`` (atomic in
  CPython) and a read of a counter; the lock is taken only to sleep or to wake;
* a producer may put *lazily* (``wake=False``): a sleeping consumer is woken
  only once ``wake_at`` messages wait for it, or by :meth:`wake`, so it wakes to
  drain a burst instead of one message;
* a producer that finds the queue full first *yields* the GIL for a moment
  (``time.sleep(0)``) so the consumers can drain it, and only then sleeps on the
  condition; a consumer wakes a sleeping producer once the queue is half empty.

Why no wake-up is lost: a sleeper counts itself in ``_sleepers`` and re-checks
the deque, both under the lock, and holds the lock until ``wait`` releases it.
The other side changes the deque *before* reading the count, and takes the lock
to notify (and to uncount the sleeper it wakes). So either the re-check sees the
change, or the count is seen and the notify comes after ``wait`` started.

The bound is checked without the lock, so producers racing for the last free
place can overshoot it by one message each.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Final, Generic, TypeVar

from .errors import ClosedError, QueueFull

__all__ = ["Inbox"]

T = TypeVar("T")

#: Seconds a producer facing a full queue yields the GIL before it sleeps.
SPIN_SECONDS: Final = 0.002

#: Most messages a lazy put lets wait before it wakes a sleeping consumer.
MAX_WAKE_AT: Final = 64


class Inbox(Generic[T]):
    """A bounded FIFO of messages between the dispatcher and its workers."""

    __slots__ = (
        "_capacity",
        "_closed",
        "_consumers",
        "_items",
        "_left",
        "_lock",
        "_low_water",
        "_not_empty",
        "_not_full",
        "_putters",
        "_sleepers",
        "_wake_at",
        "cancelled",
    )

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self._capacity = capacity
        self._low_water = capacity // 2
        self._wake_at = max(1, min(MAX_WAKE_AT, capacity // 4))
        self._items: deque[T] = deque()
        self._lock = threading.Lock()
        self._not_empty = threading.Condition(self._lock)
        self._not_full = threading.Condition(self._lock)
        self._sleepers = 0  # consumers asleep on _not_empty and not yet woken
        self._putters = 0  # producers asleep on _not_full
        self._closed = False
        #: Consumers expected (0: unknown), and how many have gone (see give_back).
        self._consumers = 0
        self._left = 0
        #: Messages withdrawn by :meth:`cancel`.
        self.cancelled = 0

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def closed(self) -> bool:
        return self._closed

    def __len__(self) -> int:
        return len(self._items)

    # -- producing -----------------------------------------------------------

    def try_put(self, message: T, wake: bool = True) -> bool:
        """Append a message if there is room; False if the inbox is full.

        With ``wake=False`` a sleeping consumer is woken only once ``wake_at``
        messages wait; call :meth:`wake` when the burst ends.

        Raises:
            ClosedError: the inbox was closed.
        """
        items = self._items
        if len(items) >= self._capacity:
            return False
        items.append(message)
        if self._closed:
            self._withdraw(message)
        if self._sleepers and (wake or len(items) >= self._wake_at):
            self._wake_one()
        return True

    def put(self, message: T, timeout: float | None = None, wake: bool = True) -> None:
        """Append a message, waiting while the inbox is full.

        Raises:
            QueueFull: the inbox stayed full for ``timeout`` seconds.
            ClosedError: the inbox was closed.
        """
        # try_put, inlined: this is every submit's path.
        items = self._items
        if len(items) >= self._capacity:
            self._put_slow(message, timeout, wake)
            return
        items.append(message)
        if self._closed:
            self._withdraw(message)
        if self._sleepers and (wake or len(items) >= self._wake_at):
            self._wake_one()

    def put_many(self, messages: list[T], timeout: float | None = None, wake: bool = True) -> None:
        """Append several messages at once, waiting while the inbox is full.

        Waits only for one free place, so the inbox may exceed its capacity by
        ``len(messages) - 1``: callers keep such batches small.

        Raises:
            QueueFull: the inbox stayed full for ``timeout`` seconds.
            ClosedError: the inbox was closed.
        """
        if len(self._items) >= self._capacity:
            self._put_slow(messages[0], timeout, wake)
            messages = messages[1:]
        self.put_nowait_many(messages, wake)

    def put_nowait_many(self, messages: list[T], wake: bool = True) -> None:
        """Append several messages at once without waiting or checking for room.

        For a caller that has checked the room itself (``Dispatcher.offer``).
        ``wake=False`` wakes a sleeping consumer only once ``wake_at`` messages
        wait, as in :meth:`try_put`.

        Raises:
            ClosedError: the inbox was closed.
        """
        items = self._items
        items.extend(messages)
        if self._closed:
            for message in messages:
                self._withdraw(message)
        if self._sleepers and (wake or len(items) >= self._wake_at):
            self._wake_one()

    def give_back(self, messages: list[T]) -> bool:
        """Put messages a consumer took but cannot run back at the head of the queue,
        in their order, beyond the capacity (they had their places).

        Once the inbox is closed they go back only while another of the
        :meth:`expect_consumers` still takes from it (has neither been told it is
        drained nor :meth:`leave` it); False when none does: the caller keeps them.
        """
        with self._lock:
            if self._closed and self._consumers - self._left < 2:
                return False
            self._items.extendleft(reversed(messages))
            for _ in range(min(self._sleepers, len(messages))):
                self._sleepers -= 1
                self._not_empty.notify()
        return True

    def expect_consumers(self, count: int) -> None:
        """``count`` consumers take from this inbox, each until it gets ``None`` (the
        inbox closed and drained) or calls :meth:`leave`: what :meth:`give_back` needs to
        know once the inbox is closed."""
        self._consumers = count

    def leave(self) -> None:
        """A consumer takes no more from this inbox (before it was drained)."""
        with self._lock:
            self._left += 1

    def _withdraw(self, message: T) -> None:
        # Closed while we appended: take the message back if no consumer got it.
        # A consumer that did runs it: close() lets consumers drain.
        if self.remove(message):
            raise ClosedError("the dispatcher is closed: it takes no more jobs")

    def _put_slow(self, message: T, timeout: float | None, wake: bool) -> None:
        start = time.monotonic()
        deadline = None if timeout is None else start + timeout
        self.wake()
        # Yield the GIL so the consumers drain the queue: far cheaper than
        # sleeping on the condition and being woken.
        spin_until = start + SPIN_SECONDS
        while True:
            if self._closed:
                raise ClosedError("the dispatcher is closed: it takes no more jobs")
            if self.try_put(message, wake):
                return
            now = time.monotonic()
            if now >= spin_until or (deadline is not None and now >= deadline):
                break
            time.sleep(0)
        with self._lock:
            self._putters += 1
            try:
                while True:
                    if self._closed:
                        raise ClosedError("the dispatcher is closed: it takes no more jobs")
                    if len(self._items) < self._capacity:
                        self._items.append(message)
                        if self._sleepers:
                            self._sleepers -= 1
                            self._not_empty.notify()
                        return
                    if deadline is None:
                        self._not_full.wait()
                    else:
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            raise QueueFull(
                                f"inbox full ({self._capacity} messages) for {timeout} s"
                            )
                        self._not_full.wait(remaining)
            finally:
                self._putters -= 1

    def wake(self) -> None:
        """Wake every sleeping consumer if messages are waiting (ends a lazy burst)."""
        if self._sleepers and self._items:
            with self._lock:
                for _ in range(min(self._sleepers, len(self._items))):
                    self._sleepers -= 1
                    self._not_empty.notify()

    def _wake_one(self) -> None:
        with self._lock:
            if self._sleepers:
                self._sleepers -= 1
                self._not_empty.notify()

    # -- consuming -----------------------------------------------------------

    def get(self) -> T | None:
        """Take the oldest message, waiting while the inbox is empty.

        Returns ``None`` once the inbox is closed and empty.
        """
        try:
            message = self._items.popleft()
        except IndexError:
            return self._get_slow()
        if self._putters and len(self._items) <= self._low_water:
            self._wake_putter()
        return message

    def get_nowait(self) -> T | None:
        """Take the oldest message, or return ``None`` if there is none."""
        try:
            message = self._items.popleft()
        except IndexError:
            return None
        if self._putters and len(self._items) <= self._low_water:
            self._wake_putter()
        return message

    def get_within(self, timeout: float) -> T | None:
        """Take the oldest message, waiting at most ``timeout`` seconds for one.

        Returns ``None`` when none came (or the inbox is closed and empty). Only
        for an inbox with one consumer (a worker that steals): its sleep is then
        the only one counted, so it uncounts itself after a timeout.
        """
        message = self.get_nowait()
        if message is not None:
            return message
        with self._lock:
            if not self._items and not self._closed:
                self._sleepers += 1
                self._not_empty.wait(timeout)
                self._sleepers = 0  # woken (already uncounted) or timed out
        return self.get_nowait()

    def _wake_putter(self) -> None:
        with self._lock:
            self._not_full.notify()

    def _get_slow(self) -> T | None:
        with self._lock:
            while True:
                try:
                    message = self._items.popleft()
                except IndexError:
                    if self._closed:
                        self._left += 1  # drained: this consumer is done with it
                        return None
                    self._sleepers += 1
                    if self._items:  # appended before the producer could see us
                        self._sleepers -= 1
                        continue
                    # Whoever wakes us uncounts us from _sleepers.
                    self._not_empty.wait()
                    continue
                if self._putters and len(self._items) <= self._low_water:
                    self._not_full.notify()
                return message

    # -- cancelling and closing ----------------------------------------------

    def take_all(self) -> list[T]:
        """Remove and return every queued message (for cancellation)."""
        taken = []
        while True:
            try:
                taken.append(self._items.popleft())
            except IndexError:
                break
        if taken and self._putters:
            with self._lock:
                self._not_full.notify_all()
        return taken

    def remove(self, message: T) -> bool:
        """Remove one queued message; False when a consumer already took it.

        ``deque.remove`` is atomic under the GIL, so exactly one of ``remove``
        and ``get`` wins a message.
        """
        while True:
            try:
                self._items.remove(message)
                break
            except ValueError:
                return False
            except RuntimeError:
                # An element's __eq__ ran Python code and the deque changed
                # meanwhile: look again.
                continue
        if self._putters:
            self._wake_putter()
        return True

    def cancel(self, message: T) -> bool:
        """Withdraw a queued message as cancelled (counted in ``cancelled``)."""
        if not self.remove(message):
            return False
        with self._lock:
            self.cancelled += 1
        return True

    def close(self) -> None:
        """Take no more messages; consumers drain what is queued, then get ``None``."""
        with self._lock:
            self._closed = True
            self._sleepers = 0
            self._not_empty.notify_all()
            self._not_full.notify_all()
