"""Work stealing: an idle worker takes queued jobs from a busy worker's inbox.

    worker j, own inbox empty ──look at the others──▶ the longest inbox whose worker
    is running a job ──its newer half (the tail)──▶ inbox j ──▶ run by worker j

A static strategy (``round_robin``, ``batch``) places a job before anyone knows
how long the jobs ahead of it take, so one slow job can hold a queue while the
other workers idle. Stealing changes only who runs a job that waits behind a
busy worker, never where the strategy placed it; a strategy allows it with
:attr:`~dispatchkit.strategies.Strategy.steals` (``key`` does not: one worker's
jobs no longer run in their order once some are taken from its tail).

What it costs where nothing is uneven: only a worker whose own inbox is empty
looks at the others (at most :data:`LOOK_AT` of them a look, in turn), and a
worker marks each run (``WorkerState.active``), not each job. A thread worker
looks after idling :data:`POLL_MIN` (no job arrives to wake it when another's
queue grows), then in steps that double up to :data:`POLL_MAX`; while no other
worker runs a job (nothing can wait behind one) it sleeps until a job of its
own comes or a worker starts running (:class:`SleepBoard`), so that an idle
pool costs no CPU; an asyncio
worker looks when its inbox runs dry (and some worker awaits a job), and is
woken when a job is queued behind a busy worker or a worker starts a job with
others waiting behind it.

Why nothing is lost or run twice: the owner takes from the head of its deque,
a thief from the tail, a cancel or a stop removes; each of these is one atomic
deque operation (under the GIL; on an event loop nothing runs between them),
so each message goes to exactly one of them. A stolen handle is told its new
queue (``_moved_to``), where its ``cancel`` finds it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from operator import attrgetter
from typing import TYPE_CHECKING, Any, Final

from ._work import cancel_message, moved

if TYPE_CHECKING:
    from ._async_inbox import AsyncInbox
    from ._inbox import Inbox
    from .core import WorkerState

__all__ = [
    "LOOK_AT", "POLL_MAX", "POLL_MIN", "AsyncThief", "SleepBoard", "StealBoard", "Thief", "share",
]  # fmt: skip

#: Seconds a thread worker idles before it first looks at the others' inboxes.
POLL_MIN: Final = 0.005
#: Longest step, in seconds, between two looks of an idle thread worker.
POLL_MAX: Final = 0.2


def share(queued: int) -> int:
    """How many of a victim's ``queued`` messages a thief takes: the newer half,
    rounded up (one job waiting behind a busy worker is worth taking)."""
    return (queued + 1) // 2


#: Other workers' inboxes one look reads at most (the next ones at the next look), so
#: that a look costs the same with thousands of asyncio workers as with four.
LOOK_AT: Final = 8


class _Victims:
    """The other workers' queues, looked at :data:`LOOK_AT` at a time in turn.

    Held as the shared sequences of every queue and state, not a list of the
    others per worker: with thousands of asyncio workers such lists would hold
    millions of pairs, for the garbage collector to walk again and again.
    """

    __slots__ = ("_cursor", "_index", "_queues", "_states")

    def __init__(self, index: int, queues: Sequence[Any], states: Sequence[WorkerState]):
        self._index = index
        self._queues, self._states = queues, states
        self._cursor = 0

    def pick(self, hint: Any = None) -> tuple[Any, int]:
        """The longest queue whose worker is running a job among ``hint`` (a queue
        said to have jobs behind a busy worker) and the next :data:`LOOK_AT`
        others, with its length; ``(None, 0)`` if there is none."""
        queues, states, index = self._queues, self._states, self._index
        count = len(queues) - 1  # the others
        if count <= LOOK_AT:
            window: Sequence[int] = range(count)
        else:
            start = self._cursor
            self._cursor = (start + LOOK_AT) % count
            window = [(start + step) % count for step in range(LOOK_AT)]
        victim, longest = None, 0
        for other in window:
            worker = other + (other >= index)  # the others' numbering skips this worker
            queue = queues[worker]
            length = len(queue._items)
            if length > longest and states[worker].active:
                victim, longest = queue, length
        if hint is not None and hint._owner.active and len(hint._items) > longest:
            victim, longest = hint, len(hint._items)
        return victim, longest

    def any_queued(self) -> bool:
        """Whether another worker's queue holds a message (this one's is empty when
        asked, so it is looked at too: C-level iteration, as every idle worker of
        thousands asks)."""
        return any(map(_ITEMS, self._queues))

    def any_running(self) -> bool:
        """Whether another worker runs a job (only then can jobs wait behind one); this
        one, idle when it asks, is looked at too, as in :meth:`any_queued`."""
        index = self._index
        if self._states[index].active:  # a liaison holding a retry counts as running
            return any(state.active for i, state in enumerate(self._states) if i != index)
        return any(map(_ACTIVE, self._states))


_ITEMS = attrgetter("_items")
_ACTIVE = attrgetter("active")


def _take_tail(victim: Any, own: Any, count: int) -> int:
    """Move up to ``count`` messages from the tail of ``victim``'s queue to ``own``'s,
    in their queued order, each handle told its new queue; how many moved."""
    taken = []
    pop = victim._items.pop
    for _ in range(count):
        try:
            taken.append(pop())
        except IndexError:  # the owner took the rest meanwhile
            break
    taken.reverse()
    for message in taken:
        moved(message, own)
    own._items.extend(taken)
    return len(taken)


class SleepBoard:
    """The inboxes of one pool's thread workers that sleep until a worker runs a job.

    Why no wake-up is lost: a sleeper joins :attr:`asleep` and then looks at the
    workers' ``active``, holding its inbox's lock until it waits; a worker sets
    ``active`` and then reads :attr:`asleep`, and takes the sleeper's lock to
    wake it. So either the sleeper sees the worker running, or the worker sees
    the sleeper and its notify comes after the wait began.
    """

    __slots__ = ("asleep", "hint")

    def __init__(self) -> None:
        self.asleep: set[Inbox[Any]] = set()
        #: The inbox and state of the worker that woke a sleeper last, for its first look
        #: (one look reads only :data:`LOOK_AT` inboxes, which may not include it).
        self.hint: tuple[Inbox[Any], WorkerState] | None = None

    def wake_one(self, inbox: Inbox[Any], state: WorkerState) -> None:
        """Wake one sleeper, if any, to look at the others' inboxes again, ``inbox``
        (whose worker, ``state``, started running) first."""
        try:
            sleeper = self.asleep.pop()
        except KeyError:
            return
        self.hint = (inbox, state)
        with sleeper._lock:
            sleeper._not_empty.notify()


class Thief:
    """How one thread worker (a worker thread, a worker process's liaison) waits for
    its next message: its own, or one taken from a busy worker."""

    __slots__ = ("_board", "_own", "_state", "_victims")

    def __init__(
        self,
        index: int,
        inboxes: Sequence[Inbox[Any]],
        states: Sequence[WorkerState],
        board: SleepBoard,
    ):
        self._own = inboxes[index]
        self._state = states[index]
        self._victims = _Victims(index, inboxes, states)
        self._board = board

    def started(self) -> None:
        """This worker runs a job now (``active`` is set): jobs may queue behind it, so
        a worker sleeping while none ran looks again (and, once it runs, wakes the next)."""
        if self._board.asleep:
            self._board.wake_one(self._own, self._state)

    def next_message(self) -> Any | None:
        """The next message to run; None once the inboxes are closed and none is left
        that this worker could take."""
        own, delay = self._own, POLL_MIN
        while True:
            message = own.get_within(delay)
            if message is not None:
                return message
            if self._steal():
                continue
            if own.closed:
                # Nothing more is put; help the others drain, or end.
                if not self._victims.any_queued():
                    return own.get_nowait()
                time.sleep(delay)
            elif self._sleep_while_none_runs():
                delay = POLL_MIN  # a worker started running: look often again
                continue
            delay = min(delay * 2, POLL_MAX)

    def _sleep_while_none_runs(self) -> bool:
        """Sleep, without a timeout, while no other worker runs a job (none can have
        jobs waiting behind it); True if it slept (see :class:`SleepBoard`)."""
        own, asleep = self._own, self._board.asleep
        with own._lock:
            if own._items or own._closed:
                return False
            asleep.add(own)  # before the look: a worker starting now finds it
            if self._victims.any_running():
                asleep.discard(own)
                return False
            own._sleepers += 1
            own._not_empty.wait()
            own._sleepers = 0  # woken (a put uncounted it) or by the board
        asleep.discard(own)  # woken by a put: the board still lists it
        return True

    def _steal(self) -> bool:
        """Take part of a busy worker's queue; True if this worker has work now."""
        own, state = self._own, self._state
        if own._items:
            return True  # a job of its own came meanwhile: no need (and no room) to take
        victim, queued = self._victims.pick()
        hint, self._board.hint = self._board.hint, None
        if hint is not None and hint[0] is not own and hint[1].active:
            hinted = len(hint[0]._items)
            if hinted > queued:
                victim, queued = hint[0], hinted
        if victim is None:
            return False
        if not _take_tail(victim, own, share(queued)):
            return False
        if victim._putters:
            victim._wake_putter()  # room was made: a producer may wait on it
        if state.control.stopping:
            # A stop may have emptied both inboxes while these were in hand.
            for message in own.take_all():
                state.cancelled += cancel_message(message)
        return True


class StealBoard:
    """The idle asyncio workers of one dispatcher, and when to wake one of them."""

    __slots__ = ("busy", "hint", "idle")

    def __init__(self) -> None:
        #: The waiter of each idle worker (a worker takes its own out when it wakes).
        self.idle: set[asyncio.Future[None]] = set()
        #: Workers awaiting a job: none, and there is nobody to steal from.
        self.busy = 0
        #: The inbox that had a job queued behind its busy worker, for the next look.
        self.hint: AsyncInbox[Any] | None = None

    def wake_one(self, hint: AsyncInbox[Any]) -> None:
        """Wake an idle worker to look at ``hint``, where a job waits behind a busy one."""
        self.hint = hint
        idle = self.idle
        while idle:
            waiter = idle.pop()
            if not waiter.done():
                waiter.set_result(None)
                return


class AsyncThief:
    """How one asyncio worker waits for its next message: its own, or a busy worker's."""

    __slots__ = ("_own", "_victims", "board")

    def __init__(
        self,
        index: int,
        inboxes: Sequence[AsyncInbox[Any]],
        states: Sequence[WorkerState],
        board: StealBoard,
    ):
        self._own = inboxes[index]
        self.board = board
        self._victims = _Victims(index, inboxes, states)

    async def next_message(self) -> Any | None:
        """The next message to run; None once the inboxes are closed and none is left
        that this worker could take."""
        own, delay = self._own, POLL_MIN
        while True:
            message = own.get_nowait()
            if message is not None:
                return message
            if self._steal():
                continue
            if own.closed:
                # Nothing more is put; help the others drain, or end.
                if not self._victims.any_queued():
                    return None
                await asyncio.sleep(delay)
                delay = min(delay * 2, POLL_MAX)
                continue
            # Woken by a job of its own or by the board, whichever comes first.
            waiter = asyncio.get_running_loop().create_future()
            own._getters.append(waiter)
            idle = self.board.idle
            idle.add(waiter)
            try:
                await waiter
            finally:
                # Whichever side did not wake it still holds it: take it out, so
                # neither grows while this worker idles again and again.
                if waiter in idle:
                    idle.discard(waiter)
                elif waiter in own._getters:
                    own._getters.remove(waiter)

    def _steal(self) -> bool:
        board = self.board
        if not board.busy:
            return False  # nobody runs a job: nothing waits behind one
        hint, board.hint = board.hint, None
        victim, queued = self._victims.pick(hint)
        if victim is None:
            return False
        taken = _take_tail(victim, self._own, share(queued))
        if victim._putters:
            victim._wake(victim._putters)
        return taken > 0
