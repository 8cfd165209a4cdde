"""A bounded FIFO between asyncio tasks: the asyncio twin of :class:`~dispatchkit._inbox.Inbox`.

Leaner than ``asyncio.Queue`` (no task accounting, no ``join``), and it can be
closed: consumers drain what is queued, then get ``None``. Only ever used from
the one event loop that runs the dispatcher.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING, Generic, TypeVar

from .errors import ClosedError, QueueFull

if TYPE_CHECKING:
    from ._steal import StealBoard
    from .core import WorkerState

__all__ = ["AsyncInbox"]

T = TypeVar("T")


class AsyncInbox(Generic[T]):
    __slots__ = (
        "_board", "_capacity", "_closed", "_getters", "_items", "_owner", "_putters", "cancelled",
    )  # fmt: skip

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self._capacity = capacity
        self._items: deque[T] = deque()
        self._getters: deque[asyncio.Future[None]] = deque()
        self._putters: deque[asyncio.Future[None]] = deque()
        self._closed = False
        #: Messages withdrawn by :meth:`cancel`.
        self.cancelled = 0
        # Where the dispatcher steals: the idle workers, and this inbox's worker.
        self._board: StealBoard | None = None
        self._owner: WorkerState | None = None

    def watch(self, board: StealBoard, owner: WorkerState) -> None:
        """Wake an idle worker of ``board`` when a message is queued while ``owner``
        (the worker reading this inbox) runs a job."""
        self._board, self._owner = board, owner

    def _behind_busy(self) -> None:
        # A message waits behind a running job: an idle worker may take it.
        board, owner = self._board, self._owner
        if board is not None and board.idle and owner is not None and owner.active:
            board.wake_one(self)

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def closed(self) -> bool:
        return self._closed

    def __len__(self) -> int:
        return len(self._items)

    @staticmethod
    def _wake(waiters: deque[asyncio.Future[None]]) -> None:
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def put_nowait(self, message: T) -> bool:
        """Append if there is room; False if the inbox is full.

        Raises:
            ClosedError: the inbox was closed.
        """
        if self._closed:
            raise ClosedError("the dispatcher is closed: it takes no more jobs")
        if len(self._items) >= self._capacity:
            return False
        self._items.append(message)
        if self._getters:
            self._wake(self._getters)
        elif self._board is not None:
            self._behind_busy()
        return True

    def full(self) -> bool:
        """Whether :meth:`room` would wait now."""
        return len(self._items) >= self._capacity

    def put_many_nowait(self, messages: list[T]) -> None:
        """Append several messages at once (the caller made room: see :meth:`room`)."""
        if self._closed:
            raise ClosedError("the dispatcher is closed: it takes no more jobs")
        self._items.extend(messages)
        for _ in range(min(len(messages), len(self._getters))):
            self._wake(self._getters)
        if self._board is not None:
            self._behind_busy()

    async def room(self, timeout: float | None = None) -> None:
        """Wait until the inbox has a free place.

        Raises:
            QueueFull: still full after ``timeout`` seconds.
            ClosedError: the inbox was closed.
        """
        while len(self._items) >= self._capacity:
            if self._closed:
                raise ClosedError("the dispatcher is closed: it takes no more jobs")
            waiter = asyncio.get_running_loop().create_future()
            self._putters.append(waiter)
            try:
                if timeout is None:
                    await waiter
                else:
                    await asyncio.wait_for(waiter, timeout)
            except TimeoutError:
                raise QueueFull(f"inbox full ({self._capacity} messages) for {timeout} s") from None
        if self._closed:
            raise ClosedError("the dispatcher is closed: it takes no more jobs")

    async def put(self, message: T, timeout: float | None = None) -> None:
        """Append a message, waiting while the inbox is full.

        Raises:
            QueueFull: still full after ``timeout`` seconds.
            ClosedError: the inbox was closed.
        """
        if not self.put_nowait(message):
            await self.room(timeout)
            self.put_nowait(message)

    def get_nowait(self) -> T | None:
        try:
            message = self._items.popleft()
        except IndexError:
            return None
        if self._putters:
            self._wake(self._putters)
        return message

    async def get(self) -> T | None:
        """Take the oldest message; ``None`` once closed and empty."""
        while not self._items:
            if self._closed:
                return None
            waiter = asyncio.get_running_loop().create_future()
            self._getters.append(waiter)
            await waiter
        return self.get_nowait()

    def take_all(self) -> list[T]:
        taken = list(self._items)
        self._items.clear()
        while self._putters:
            self._wake(self._putters)
        return taken

    def cancel(self, message: T) -> bool:
        """Withdraw a queued message as cancelled; False if a worker took it."""
        try:
            self._items.remove(message)
        except ValueError:
            return False
        self.cancelled += 1
        if self._putters:
            self._wake(self._putters)
        return True

    def close(self) -> None:
        self._closed = True
        for waiters in (self._getters, self._putters):
            while waiters:
                waiter = waiters.popleft()
                if not waiter.done():
                    waiter.set_result(None)
