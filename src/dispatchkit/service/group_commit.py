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
which starts the moment the running one ends. A request is answered as stored
only if no flush failed between its write and the end of the one it waited
for: another flush (the flusher thread's) may have taken a segment holding its
lines, and a later success does not undo that failure. Under load each fsync covers every
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
        failures: how many flushes (any caller's) have failed so far.
    """

    def __init__(self, flush: Callable[[], None], failures: Callable[[], int]) -> None:
        self._flush = flush
        self._failures = failures
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="sink-fsync")
        #: The requests waiting for the next flush, each with the count of
        #: failed flushes as it joined (None: no one waits).
        self._waiting: list[tuple[asyncio.Future[None], int]] | None = None
        self._running = False

    def synced(self) -> asyncio.Future[None]:
        """A future done once a flush that began now or later ended (its error, if it failed).

        Each caller gets a future of its own, so a cancelled request cancels
        only its own wait, never the flush the others share.
        """
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        entry = (waiter, self._failures())
        if self._waiting is None:
            self._waiting = [entry]
        else:
            self._waiting.append(entry)
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
        group: list[tuple[asyncio.Future[None], int]],
        done: asyncio.Future[None],
    ) -> None:
        self._running = False
        # The next flush first: the disk works while this group's answers go out.
        if self._waiting is not None:
            self._launch(loop)
        failure = None if done.cancelled() else done.exception()
        failures = self._failures()
        for waiter, failures_before in group:
            if waiter.done():  # its request was cancelled
                continue
            if failure is not None:
                waiter.set_exception(failure)
            elif failures > failures_before:
                waiter.set_exception(OSError("a flush failed after the write"))
            else:
                waiter.set_result(None)
