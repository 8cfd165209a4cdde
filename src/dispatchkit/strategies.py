"""Strategies decide which worker's inbox gets which job. Pure: no I/O, no threads.

Every job gets a sequence number ``seq`` (0, 1, 2, ...) in the order it was
submitted. A strategy maps ``(seq, key)`` to a worker index, or to ``SHARED``
for the pull strategy, whose workers all read one queue.

``split`` does the same for a block of consecutive jobs at once, with slicing
instead of a Python call per job; the bulk paths (``map``, ``dispatch``) use it.
"""

from __future__ import annotations

import zlib
from abc import ABC, abstractmethod
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import ClassVar, Final, TypeAlias, TypeVar, cast

__all__ = [
    "SHARED",
    "Auto",
    "Batch",
    "ByKey",
    "Pull",
    "RoundRobin",
    "Strategy",
    "parse_strategy",
    "stable_hash",
]

T = TypeVar("T")

#: The keys of a block's jobs, when the strategy needs them.
Keys: TypeAlias = Sequence[Hashable] | None
#: ``(worker, jobs)`` pairs: a block split over the workers.
Parts: TypeAlias = list[tuple[int, Sequence[T]]]

#: Returned by :meth:`Strategy.assign` when the job goes to the shared queue.
SHARED: Final = -1

#: The seed's block size for the batch strategy: 100 messages to one receiver.
DEFAULT_BLOCK: Final = 100


class Strategy(ABC):
    """How jobs are spread over workers."""

    #: The name used on the command line and in results.
    name: str = ""
    #: Whether every worker reads one shared queue (``assign`` gives ``SHARED``):
    #: front ends build one queue instead of one per worker, and never probe
    #: ``assign`` to find out.
    shared: ClassVar[bool] = False
    #: Whether every job must carry a key (``assign`` reads it).
    needs_key: ClassVar[bool] = False
    #: Whether the hand-off size adapts to measured job times when no chunk is
    #: given (``chunk="auto"``); the others take ``"auto"`` as one job a hand-off.
    adaptive: ClassVar[bool] = False
    #: Whether an idle worker whose own inbox is empty may take queued (not yet
    #: started) jobs from a busy worker's inbox (``Dispatcher(steal=False)``
    #: turns it off). Placement stays the strategy's: stealing changes only who
    #: runs a job that waits behind a busy worker. False for a strategy that
    #: promises an order of running (``key``) and for a shared queue.
    steals: ClassVar[bool] = False

    @abstractmethod
    def assign(self, seq: int, key: Hashable, workers: int) -> int:
        """Return the index of the worker that runs job ``seq``, or ``SHARED``."""

    def targets(
        self, first_seq: int, count: int, workers: int, keys: Sequence[Hashable] | None = None
    ) -> list[int]:
        """The worker of each of ``count`` consecutive jobs, the first being ``first_seq``."""
        assign = self.assign
        if keys is None:
            return [assign(seq, None, workers) for seq in range(first_seq, first_seq + count)]
        return [assign(first_seq + i, key, workers) for i, key in enumerate(keys)]

    def split(
        self, items: Sequence[T], first_seq: int, workers: int, keys: Keys = None
    ) -> Parts[T]:
        """Assign a block of consecutive jobs, ``first_seq`` being the first one's seq.

        Returns ``(worker, jobs)`` pairs, at most one per worker, the jobs of each
        worker in their original order. ``keys`` is given when ``needs_key``.
        """
        per_worker: dict[int, list[T]] = {}
        for offset, item in enumerate(items):
            key = keys[offset] if keys is not None else None
            per_worker.setdefault(self.assign(first_seq + offset, key, workers), []).append(item)
        return list(per_worker.items())


def _slices_are_parts(items: Sequence[T]) -> bool:
    """Whether a slice of ``items`` is a part as it is: a range's is a range, a
    list's a new list (the caller's own is never kept); other sequences' are copied."""
    return type(items) is range or type(items) is list


def _as_part(jobs: Sequence[T]) -> Sequence[T]:
    """A worker's part: a range as it is (a range of seqs stays a range: its chunks
    are cut by slicing, with no list of numbers made), anything else as a new list
    (never the caller's own, which ``offer`` lets it reuse once it returns)."""
    if type(jobs) is range:
        return cast("Sequence[T]", jobs)  # a range of seqs: T is int
    return list(jobs)


@dataclass(frozen=True, slots=True)
class RoundRobin(Strategy):
    """One job to each worker in turn: job ``seq`` goes to worker ``seq % workers``."""

    name = "round_robin"
    steals = True

    def assign(self, seq: int, key: Hashable, workers: int) -> int:
        return seq % workers

    def split(
        self, items: Sequence[T], first_seq: int, workers: int, keys: Keys = None
    ) -> Parts[T]:
        fresh = _slices_are_parts(items)
        return [
            (
                (first_seq + offset) % workers,
                items[offset::workers] if fresh else list(items[offset::workers]),
            )
            for offset in range(min(workers, len(items)))
        ]


@dataclass(frozen=True, slots=True)
class Batch(Strategy):
    """Blocks of ``block`` consecutive jobs to one worker, the next block to the next."""

    block: int = DEFAULT_BLOCK
    name = "batch"
    steals = True

    def __post_init__(self) -> None:
        _check_positive("block", self.block)

    def assign(self, seq: int, key: Hashable, workers: int) -> int:
        return (seq // self.block) % workers

    def split(
        self, items: Sequence[T], first_seq: int, workers: int, keys: Keys = None
    ) -> Parts[T]:
        runs: dict[int, list[Sequence[T]]] = {}
        pos, total = 0, len(items)
        while pos < total:
            seq = first_seq + pos
            run_end = min(total, pos + self.block - seq % self.block)
            worker = (seq // self.block) % workers
            runs.setdefault(worker, []).append(items[pos:run_end])
            pos = run_end
        fresh = _slices_are_parts(items)
        return [
            (worker, parts[0] if fresh and len(parts) == 1 else _joined(parts))
            for worker, parts in runs.items()
        ]


def _joined(runs: list[Sequence[T]]) -> list[T]:
    """One list of the runs, in order (``extend`` copies a list's slice whole; a
    chain would go item by item)."""
    joined: list[T] = []
    for run in runs:
        joined.extend(run)
    return joined


@dataclass(frozen=True, slots=True)
class Pull(Strategy):
    """One shared queue; whichever worker is idle takes the next job (the Go design)."""

    name = "pull"
    shared = True

    def assign(self, seq: int, key: Hashable, workers: int) -> int:
        return SHARED

    def split(
        self, items: Sequence[T], first_seq: int, workers: int, keys: Keys = None
    ) -> Parts[T]:
        return [(SHARED, _as_part(items))] if items else []


@dataclass(frozen=True, slots=True)
class Auto(Pull):
    """The default: pull's one shared queue, chunks sized from measured job times.

    The placement is pull's, word for word (no job waits behind a slow one while
    another worker is idle); what ``adaptive`` adds is the hand-off size, which
    :mod:`dispatchkit.core.adaptive` decides while a ``map`` runs (``chunk="auto"``)
    instead of it being fixed in advance.
    """

    name = "auto"
    adaptive = True


@dataclass(frozen=True, slots=True)
class ByKey(Strategy):
    """A stable hash of the job's key picks the worker, so one key's jobs run in order."""

    name = "key"
    needs_key = True

    def assign(self, seq: int, key: Hashable, workers: int) -> int:
        return stable_hash(key) % workers


def stable_hash(key: Hashable) -> int:
    """A hash that is the same in every process and on every machine.

    ``hash()`` of a string changes from one interpreter to the next
    (``PYTHONHASHSEED``), so it cannot place keys consistently across
    processes. Integers hash to themselves; strings and bytes by CRC-32.

    Raises:
        TypeError: for a key that is not an int, str or bytes.
    """
    if isinstance(key, bool) or not isinstance(key, int | str | bytes):
        raise TypeError(
            f"a job key must be an int, str or bytes, not {type(key).__name__} ({key!r})"
        )
    if isinstance(key, int):
        return key & 0xFFFF_FFFF_FFFF_FFFF
    if isinstance(key, str):
        key = key.encode("utf-8", "surrogatepass")
    return zlib.crc32(key)


_NAMES: Final = ("auto", "round_robin", "batch", "pull", "key")


def parse_strategy(value: str | Strategy, *, block: int = DEFAULT_BLOCK) -> Strategy:
    """Turn a strategy name (``auto``, ``round_robin``, ``batch``, ``pull``, ``key``)
    into a Strategy.

    Raises:
        ValueError: for an unknown name.
        TypeError: for something that is neither a name nor a Strategy.
    """
    if isinstance(value, Strategy):
        return value
    if not isinstance(value, str):
        raise TypeError(f"strategy must be a name or a Strategy, not {type(value).__name__}")
    name = value.strip().lower().replace("-", "_")
    if name == "auto":
        return Auto()
    if name in ("round_robin", "roundrobin", "rr"):
        return RoundRobin()
    if name == "batch":
        return Batch(block)
    if name == "pull":
        return Pull()
    if name in ("key", "by_key"):
        return ByKey()
    raise ValueError(f"unknown strategy {value!r}: choose one of {', '.join(_NAMES)}")


def _check_positive(what: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an integer, not {type(value).__name__} ({value!r})")
    if value < 1:
        raise ValueError(f"{what} must be at least 1, got {value}")
