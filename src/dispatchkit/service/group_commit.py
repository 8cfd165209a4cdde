"""Group commit: the requests that arrive while one fsync runs share the next write and fsync.

    event loop                            the fsync thread (always the same one)
    request A: synced(A's lines) ─ wakes ─▶ takes [A]: sink.write(A's), sink.flush()
    request B: synced(B's lines) ─┐ join the     │
    request C: synced(C's lines) ─┘ next group   │
               ◀── one callback: A's answer ─────┤ takes [B, C]: one write of both, flush()
               ◀── one callback: B's and C's ────┘ nothing waits: sleeps

With a ``write``, the thread writes a group's lines in one call (the event
loop makes no system call for them), all of them or none: if the write fails
(a full disk), every request of the group is refused and none of its lines
is kept. A write is covered only by a flush that *began* after it, so a
request that arrives while a flush runs waits for the next one.
The thread starts that one the moment the running one ends, without waiting
for the event loop (which, on a busy server, may be minutes of microseconds
away), and posts each group's answers to the loop in one callback. A request
is answered as stored only if no flush failed between its write and the end of
the one it waited for: another flush (the flusher thread's) may have taken a
segment holding its lines, and a later success does not undo that failure.
Under load each fsync covers every request of the previous fsync's duration:
durability costs latency (about two fsyncs at worst), not throughput. The
event loop never blocks on the disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable

__all__ = ["GroupCommit"]

#: A request waiting for the next flush, with the count of failed flushes as it joined.
_Waiter = tuple[asyncio.Future[None], int]


class GroupCommit:
    """Writes and flushes in a thread of its own, back to back while requests wait; one loop.

    Args:
        flush: makes every write done before it began durable; raises on failure.
        failures: how many flushes (any caller's) have failed so far.
        write: writes ``count`` lines joined in ``data``, all or none; raises
            on failure (None: the callers write before they wait).
    """

    def __init__(
        self,
        flush: Callable[[], None],
        failures: Callable[[], int],
        write: Callable[[bytes, int], None] | None = None,
    ) -> None:
        self._flush = flush
        self._failures = failures
        self._write = write
        #: Guards the fields below, shared by the event loop and the thread.
        self._lock = threading.Lock()
        #: The requests waiting for the next flush.
        self._waiting: list[_Waiter] = []
        #: Their lines, for ``write``: the data of each, and how many lines in all.
        self._data: list[bytes] = []
        self._lines = 0
        #: The thread sleeps on this (held) lock; releasing it wakes the thread.
        self._wake = threading.Lock()
        self._wake.acquire()
        self._asleep = False
        self._closing = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def synced(self, data: bytes = b"", lines: int = 0) -> asyncio.Future[None]:
        """A future done once a flush that began now or later ended (its error, if it failed).

        ``data`` holds ``lines`` lines for ``write``, written by the next group
        before its flush (the write's error, if it fails). Each caller gets a
        future of its own, so a cancelled request cancels only its own wait,
        never the flush the others share.
        """
        loop = self._loop
        if loop is None:
            loop = self._start()
        waiter: asyncio.Future[None] = loop.create_future()
        entry = (waiter, self._failures())
        with self._lock:
            closing = self._closing
            if not closing:
                self._waiting.append(entry)
                if lines:
                    self._data.append(data)
                    self._lines += lines
            wake, self._asleep = self._asleep, False
        if closing:  # no flush will come: not stored, as far as this request knows
            waiter.set_exception(OSError("the sink is closing"))
        elif wake:
            self._wake.release()
        return waiter

    def close(self) -> None:
        """Let the thread take the last group, wait for its flush, and stop the thread."""
        with self._lock:
            self._closing = True
            wake, self._asleep = self._asleep, False
        if wake:
            self._wake.release()
        if self._thread is not None:
            self._thread.join()

    def _start(self) -> asyncio.AbstractEventLoop:
        self._loop = loop = asyncio.get_running_loop()
        self._thread = threading.Thread(
            target=self._run, args=(loop,), name="sink-fsync", daemon=True
        )
        self._thread.start()
        return loop

    def _run(self, loop: asyncio.AbstractEventLoop) -> None:
        while True:
            with self._lock:
                group, self._waiting = self._waiting, []
                data, self._data = self._data, []
                lines, self._lines = self._lines, 0
                if not group:
                    if self._closing:
                        return
                    self._asleep = True
            if not group:
                self._wake.acquire()  # released by the next synced() (or close())
                continue
            # Every write of the group was done before it joined, or is done
            # here: before this flush began.
            failure: Exception | None = None
            try:
                if lines and self._write is not None:
                    self._write(b"".join(data), lines)
                self._flush()
            except Exception as exc:  # each waiter gets it; the thread goes on
                failure = exc
            with contextlib.suppress(RuntimeError):  # the loop closed: no one is left to answer
                loop.call_soon_threadsafe(self._answer, group, failure)

    def _answer(self, group: list[_Waiter], failure: Exception | None) -> None:
        """On the loop: settle one flush's waiters."""
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
