"""Group commit: the requests written while one fsync runs share the next one.

    event loop                                 the fsync thread
    request A: write ─▶ synced() ─ launch ───▶ sink.flush()  (A's lines)
    request B: write ─▶ synced() ─┐ waits          │
    request C: write ─▶ synced() ─┤ for the next   │
                                  │     ◀── done ──┘ A answered 202
                                  └─ launch ──────▶ sink.flush()  (B's and C's)
                                        ◀── done ──  B, C answered 202

A write that succeeded on the loop is covered only by a flush that *began*
after it, so a request that arrives while a flush runs waits for the next one,
which starts the moment the running one ends. Under load each fsync covers every
request of the previous fsync's duration: durability costs latency (about two
fsyncs at worst), not throughput. The flushes run in one thread of their own,
so the event loop never blocks on the disk.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial

__all__ = ["GroupCommit"]


class GroupCommit:
    """Runs ``flush`` in a thread for every group of waiters; used from one event loop.

    Args:
        flush: makes every write done before it began durable; raises on failure.
    """

    def __init__(self, flush: Callable[[], None]) -> None:
        self._flush = flush
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="sink-fsync")
        #: Futures of the requests waiting for the next flush (None: no one waits).
        self._waiting: list[asyncio.Future[None]] | None = None
        self._running = False

    def synced(self) -> asyncio.Future[None]:
        """A future done once a flush that began now or later ended (its error, if it failed).

        Each caller gets a future of its own, so a cancelled request cancels
        only its own wait, never the flush the others share.
        """
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        if self._waiting is None:
            self._waiting = [waiter]
        else:
            self._waiting.append(waiter)
        if not self._running:
            self._launch(loop)
        return waiter

    def close(self) -> None:
        """Wait for the flush in flight, if any, and stop the thread."""
        self._thread.shutdown(wait=True)

    def _launch(self, loop: asyncio.AbstractEventLoop) -> None:
        group, self._waiting = self._waiting, None
        assert group is not None
        self._running = True
        done = loop.run_in_executor(self._thread, self._flush)
        done.add_done_callback(partial(self._landed, loop, group))

    def _landed(
        self,
        loop: asyncio.AbstractEventLoop,
        group: list[asyncio.Future[None]],
        done: asyncio.Future[None],
    ) -> None:
        self._running = False
        # The next flush first: the disk works while this group's answers go out.
        if self._waiting is not None:
            self._launch(loop)
        failure = None if done.cancelled() else done.exception()
        for waiter in group:
            if waiter.done():  # its request was cancelled
                continue
            if failure is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(failure)
