"""Per-key order over one shared queue: the ``auto`` strategy with a ``key``.

    map(..., key=k) ──block──▶ one chunk per lane, numbered (lane, ticket) ──▶ shared inbox
    worker takes (lane, t): its lane's turn? run it, then the lane's deferred t+1, t+2, ...
                            not yet?        leave it with the lane and take the next message

A stable hash of the key picks one of ``lanes`` lanes; a lane's chunks carry
consecutive tickets and run one after another, in ticket order, so one key's
jobs run in submission order. A worker never waits for a lane: a chunk that
comes before its turn is left with its lane, and the worker that ends the
lane's current chunk runs it next. The shared queue is first in, first out, so
the chunk before a deferred one has been taken already: someone always runs,
or (on a stop) cancels, what waits.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Hashable, Sequence
from contextlib import AbstractContextManager
from typing import Any, Final

from .core import WorkerState
from .strategies import stable_hash

__all__ = ["LANES_PER_WORKER", "LanedMessage", "Lanes", "lane_count"]

#: Lanes per worker: enough that unrelated keys seldom share one (and wait on
#: each other), few enough that a block's jobs still make chunks of some size.
LANES_PER_WORKER: Final = 4


class Lanes:
    """The lanes of one bulk call: tickets handed out, and the turn of each lane.

    ``lock`` guards the turns: a ``threading.Lock`` where workers are threads,
    any context manager (a no-op) on an event loop, which never preempts.
    """

    __slots__ = ("_deferred", "_issued", "_lock", "_tags", "_turn", "count")

    def __init__(self, count: int, lock: AbstractContextManager[Any] | None = None) -> None:
        self.count = count
        self._lock = threading.Lock() if lock is None else lock
        self._issued = [0] * count  # the next ticket to hand out, per lane
        self._turn = [0] * count  # the ticket whose turn it is, per lane
        self._deferred: list[dict[int, LanedMessage]] = [{} for _ in range(count)]
        self._tags: dict[int, tuple[int, int]] = {}  # first seq of a piece -> (lane, ticket)

    def pieces(self, seqs: Sequence[int], keys: Sequence[Hashable], size: int) -> list[list[int]]:
        """A numbered block's seqs (``keys`` theirs) in chunks of at most ``size``, each
        one lane's jobs in order; each chunk gets its lane's next ticket, to be
        given to :meth:`wrap` (the caller places them in the order returned)."""
        per_lane: dict[int, list[int]] = {}
        count = self.count
        for seq, key in zip(seqs, keys, strict=True):
            per_lane.setdefault(stable_hash(key) % count, []).append(seq)
        chunks = []
        issued, tags = self._issued, self._tags
        for lane, lane_seqs in per_lane.items():
            for low in range(0, len(lane_seqs), size):
                piece = lane_seqs[low : low + size]
                tags[piece[0]] = (lane, issued[lane])
                issued[lane] += 1
                chunks.append(piece)
        return chunks

    def wrap(self, piece: Sequence[int], inner: Any) -> LanedMessage:
        """The message of a chunk made from one of :meth:`pieces`' seqs."""
        lane, ticket = self._tags.pop(piece[0])
        return LanedMessage(self, lane, ticket, inner)

    def claim(self, message: LanedMessage) -> bool:
        """Whether it is this chunk's turn; if not, it waits with its lane."""
        with self._lock:
            if self._turn[message.lane] == message.ticket:
                return True
            self._deferred[message.lane][message.ticket] = message
            return False

    def finish(self, lane: int) -> LanedMessage | None:
        """The lane's current chunk has ended: the next one, if it waits already."""
        with self._lock:
            self._turn[lane] += 1
            return self._deferred[lane].pop(self._turn[lane], None)

    def drop(self, lane: int) -> list[LanedMessage]:
        """Everything waiting in a lane (a stop: it is cancelled, not run)."""
        with self._lock:
            waiting = list(self._deferred[lane].values())
            self._deferred[lane].clear()
            return waiting


class LanedMessage:
    """A chunk (``inner``) that runs in its lane's turn. Any worker kind runs it through
    :meth:`drive` (threads through ``_run``, asyncio tasks through ``_arun``)."""

    __slots__ = ("inner", "lane", "lanes", "ticket")

    inline = False  # for the asyncio worker loop: awaited through _arun

    def __init__(self, lanes: Lanes, lane: int, ticket: int, inner: Any) -> None:
        self.lanes, self.lane, self.ticket, self.inner = lanes, lane, ticket, inner

    def _job_count(self) -> int:
        count: int = self.inner._job_count()
        return count

    def _cancel_taken(self) -> Any:
        return self.inner._cancel_taken()

    def _moved_to(self, queue: object) -> None:
        self.inner._moved_to(queue)

    def claim(self) -> bool:
        """Whether it is this chunk's turn; if not, it waits with its lane."""
        return self.lanes.claim(self)

    def next_in_lane(self, worker: WorkerState) -> LanedMessage | None:
        """This chunk has ended: the lane's next one, if it waits already. On a
        stop what waits is cancelled (counted on ``worker``) and None returned."""
        lanes = self.lanes
        message = lanes.finish(self.lane)
        if message is not None and worker.control.stopping:
            _cancel(worker, [message, *lanes.drop(self.lane)])
            return None
        return message

    def cancel_waiting(self) -> int:
        """This chunk was cancelled off a queue (a stop): cancel what waits in its lane
        too, and return how many jobs that was. Only a chunk that holds its lane's
        turn can have chunks waiting behind it there (one that a worker that could not
        start gave back to the queue): none would be run, or cancelled, by anyone else."""
        waiting = self.lanes.drop(self.lane)
        count = 0
        for message in waiting:
            count += message._job_count()
            message._cancel_taken()
        return count

    def drive(self, run: Callable[[Any], None], worker: WorkerState) -> None:
        """Run this chunk if it is its lane's turn, then the lane's chunks waiting after it."""
        if not self.claim():
            return
        message: LanedMessage | None = self
        while message is not None:
            run(message.inner)
            message = message.next_in_lane(worker)

    def _run(self, worker: WorkerState) -> None:
        self.drive(lambda inner: inner._run(worker), worker)

    async def _arun(self, state: WorkerState) -> None:
        lanes = self.lanes
        if not lanes.claim(self):
            return
        message: LanedMessage | None = self
        try:
            while message is not None:
                await message.inner._arun(state)
                message = lanes.finish(self.lane)
                if message is not None and state.control():
                    _cancel(state, [message, *lanes.drop(self.lane)])
                    return
        except asyncio.CancelledError:
            # A stop cancels the worker's task: what waits in the lane is counted
            # here, as nobody else will take it.
            _cancel(state, lanes.drop(self.lane))
            raise


def _cancel(worker: WorkerState, messages: list[LanedMessage]) -> None:
    """Messages a stop leaves unrun: cancelled and counted by the worker that holds them."""
    for message in messages:
        worker.cancelled += message._job_count()
        message._cancel_taken()


def lane_count(workers: int) -> int:
    """How many lanes a call over ``workers`` workers gets."""
    return max(1, LANES_PER_WORKER * workers)
