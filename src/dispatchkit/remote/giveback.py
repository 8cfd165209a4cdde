"""Which fetched entries a worker gives back unstarted, and where each goes.

A worker holds entries beyond its running ones only while its slots would
start them soon (fair prefetch, datapath.py). When running jobs turn out slow
that no longer holds: :func:`overdue` finds the held entries its slots would
now start only past ``after`` seconds, so that the data path gives them back
(``Transport.requeue``) for idle workers to take. A draining worker gives back
every unstarted entry at once (:func:`destinations` decides where each goes).

Partition entries are never given back: a partition is read by its lease
holder alone, in order.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Iterable, Sequence

from dispatchkit.transports._codec import decode_job
from dispatchkit.transports.base import Delivery

__all__ = ["Unstarted", "destinations", "overdue"]


def overdue(
    unstarted: Sequence[Delivery],
    running_for: Iterable[float],
    slots: int,
    entry_seconds: float,
    after: float,
) -> list[Delivery]:
    """The tail of ``unstarted`` (in starting order) whose start is predicted past ``after``.

    Args:
        unstarted: the held entries not started yet, in the order slots take them.
        running_for: seconds each running entry has run.
        slots: the runner's slots.
        entry_seconds: the measured time of an entry.
        after: seconds from now past which an entry counts as overdue.

    A running entry is predicted to end when the measured time says; one that
    ran past it, after running as long again (the longer it has run, the longer
    it is likely to run on).
    """
    if not unstarted:
        return []
    free = [entry_seconds - ran if ran < entry_seconds else ran for ran in running_for]
    free += [0.0] * max(0, slots - len(free))
    heapq.heapify(free)
    for index in range(len(unstarted)):
        start = heapq.heappop(free)
        if start > after:
            return list(unstarted[index:])
        heapq.heappush(free, start + entry_seconds)
    return []


def destinations(
    deliveries: Iterable[Delivery],
    own: str,
    shared: str,
    partition_prefix: str,
    *,
    draining: bool,
) -> list[tuple[Delivery, str, str, int]]:
    """What ``Transport.requeue`` takes for the entries that may be given back.

    An entry goes back to its stream if other workers read it (the shared one,
    or a departed worker's); one of the worker's own stream only when it drains,
    to the shared stream (no one else reads its own). An entry that is no job
    stays: running it dead-letters it.
    """
    back: list[tuple[Delivery, str, str, int]] = []
    for delivery in deliveries:
        if delivery.payload is None or delivery.stream.startswith(partition_prefix):
            continue
        stream = delivery.stream
        if stream == own:
            if not draining:
                continue
            stream = shared
        try:
            job = decode_job(delivery.payload)
        except ValueError:
            continue
        back.append((delivery, stream, job.reply_to, job.job_id))
    return back


class Unstarted:
    """The entries handed to a runner and not started yet, and when running ones started.

    Each is owned by whoever pops it first: a slot starting it (:meth:`begin`),
    or a give-back (:meth:`take`). A single ``dict.pop`` decides, so an entry is
    started or given back, never both, and no lock is taken per entry.
    """

    def __init__(self) -> None:
        # By (stream, id), in the order they were handed to the runner.
        self.entries: dict[tuple[str, str], Delivery] = {}
        self._running: dict[tuple[str, str], float] = {}  # perf_counter of each start

    def add(self, delivery: Delivery) -> None:
        self.entries[(delivery.stream, delivery.entry_id)] = delivery

    def begin(self, delivery: Delivery) -> float | None:
        """Take ``delivery`` to run it: when it started, or None if it was given back."""
        key = (delivery.stream, delivery.entry_id)
        if self.entries.pop(key, None) is None:
            return None
        started = self._running[key] = time.perf_counter()
        return started

    def end(self, delivery: Delivery) -> None:
        self._running.pop((delivery.stream, delivery.entry_id), None)

    def take(
        self, items: list[tuple[Delivery, str, str, int]]
    ) -> list[tuple[Delivery, str, str, int]]:
        """Those of ``items`` still unstarted, taken (no slot will start them now)."""
        return [i for i in items if self.entries.pop((i[0].stream, i[0].entry_id), None)]

    def overdue(self, slots: int, entry_seconds: float, after: float) -> list[Delivery]:
        """:func:`overdue` of the unstarted entries, now."""
        now = time.perf_counter()
        running = [now - since for since in list(self._running.values())]
        return overdue(list(self.entries.values()), running, slots, entry_seconds, after)
