"""The ``map`` window: how many jobs are out, and which results may be yielded now.

Sans-I/O: :class:`MapWindow` only counts and orders. A front end's ``map``
loop admits numbered blocks while :meth:`MapWindow.room` allows, waits its own
way for a :class:`MapRun` delivery, and yields ``map_result`` of each row
:meth:`MapWindow.release` gives back.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from .rows import ResultRow, RowBlock

__all__ = ["MapRun", "MapWindow", "check_window"]


def check_window(window: int | None, default: int) -> int:
    """The window of a ``map`` call: ``default`` for None.

    Raises:
        ValueError: not a whole number of at least 1.
    """
    if window is None:
        return default
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ValueError(f"window must be a whole number of at least 1, got {window!r}")
    return window


class MapWindow:
    """At most ``size`` jobs admitted and not yet released; in input order if ``ordered``."""

    __slots__ = ("blocks", "in_flight", "order", "ordered", "ready", "size")

    def __init__(self, size: int, ordered: bool) -> None:
        self.size = size
        self.ordered = ordered
        #: Jobs admitted and not released.
        self.in_flight = 0
        #: Seqs not yet released, in input order (ordered only).
        self.order: deque[int] = deque()
        #: Rows that arrived ahead of their turn (ordered only).
        self.ready: dict[int, Any] = {}  # ResultRow, or RowBlock
        #: Whether a :class:`RowBlock` was admitted (then :meth:`release` counts by row).
        self.blocks = False

    def room(self) -> int:
        """How many more jobs may be admitted now."""
        return self.size - self.in_flight

    def admit(self, first: int, count: int) -> None:
        """Jobs ``first`` to ``first + count - 1`` are out."""
        self.in_flight += count
        if self.ordered:
            self.order.extend(range(first, first + count))

    def admit_block(self, seqs: Sequence[int]) -> None:
        """The jobs ``seqs`` (consecutive if ordered) are out, and come back as one
        :class:`RowBlock`."""
        self.blocks = True
        self.in_flight += len(seqs)
        if self.ordered:
            self.order.append(seqs[0])  # the block's place: its first job's

    def release(self, rows: list[ResultRow]) -> list[ResultRow]:
        """The rows to yield now, given the newly delivered ``rows`` (each may be a
        :class:`RowBlock` if blocks were admitted)."""
        if self.blocks:
            return self._release_blocks(rows)
        if not self.ordered:
            self.in_flight -= len(rows)
            return rows
        ready = self.ready
        for row in rows:
            ready[row[0]] = row
        out = self._in_order()
        self.in_flight -= len(out)
        return out

    def release_spread(self, blocks: list[Any]) -> list[Any]:
        """:meth:`release` for :class:`RowBlock` s whose jobs were admitted one by one
        (:meth:`admit`; ordered, their seqs need not be consecutive): the block of
        each job to yield now, once per job, in order. The caller takes the job's
        result from its block in turn (a block's jobs are released in seq order)."""
        ready = self.ready
        for block in blocks:
            for seq in block.seqs:
                ready[seq] = block
        out = self._in_order()
        self.in_flight -= len(out)
        return out

    def _release_blocks(self, rows: list[Any]) -> list[Any]:
        """:meth:`release` when blocks may be among the rows: each counts its jobs."""
        if self.ordered:
            ready, order = self.ready, self.order
            if len(rows) == 1 and not ready and order:
                # The common case, once per chunk: the one block awaited next.
                row = rows[0]
                if (row.seqs[0] if isinstance(row, RowBlock) else row[0]) == order[0]:
                    order.popleft()
                    self.in_flight -= len(row.seqs) if isinstance(row, RowBlock) else 1
                    return rows
            for row in rows:
                ready[row.seqs[0] if isinstance(row, RowBlock) else row[0]] = row
            rows = self._in_order()
        released = 0
        for row in rows:  # a loop, not sum() of a generator: this runs once per chunk
            released += len(row.seqs) if isinstance(row, RowBlock) else 1
        self.in_flight -= released
        return rows

    def _in_order(self) -> list[Any]:
        """Take from ``ready`` what comes next in ``order``, as far as it goes unbroken."""
        ready, order = self.ready, self.order
        out = []
        while order and order[0] in ready:
            out.append(ready.pop(order.popleft()))
        return out


class MapRun:
    """Where the workers leave the finished rows of one ``map`` call, a list per chunk.

    The waiting side belongs to the front end: it sets ``waiting`` before it
    sleeps, and a delivery that sees it set calls ``notify`` (for threads, the
    same no-lost-wake-up handshake as the inbox).
    """

    __slots__ = ("finished", "notify", "outcomes", "waiting")

    def __init__(self, outcomes: bool, notify: Callable[[], None]) -> None:
        self.outcomes = outcomes
        self.finished: deque[list[ResultRow]] = deque()
        self.waiting = False
        self.notify = notify

    def deliver(self, rows: list[ResultRow]) -> None:
        self.finished.append(rows)
        if self.waiting:
            self.notify()

    def deliver_measured(
        self,
        rows: list[Any],
        worker: Any,
        jobs: int,
        started: float | None,
        finished: float | None,
    ) -> None:
        """Deliver the rows (or a :class:`RowBlock`) of a chunk of ``jobs`` jobs that
        ``worker`` ran from ``started`` to ``finished`` (None: not measured), the
        measurement given apart from the rows, which need carry no timestamps."""
        self.deliver(rows)
