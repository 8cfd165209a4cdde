"""Placement: which worker's queue gets which jobs of a block, in hand-offs of ``chunk``.

Sans-I/O: a front end takes a block of jobs from its input (:meth:`Placement._block_size`
says how many), numbers it (:meth:`Placement._stamp`), asks for the
``(queue index, jobs)`` parts (:meth:`Placement._parts`) and puts each part's
chunks into its queue, waiting for room as its kind of waiting goes. ``offer``,
which never waits, asks :meth:`Placement._plan_offer`: all the parts, if every
queue has room for its share, or none.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from itertools import islice
from operator import length_hint
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from dispatchkit.errors import ClosedError

from .adaptive import (
    MAX_CHUNK,
    AdaptiveFeed,
    BulkRun,
    ChunkController,
    tuning,
)
from .ledger import Ledger

if TYPE_CHECKING:
    from dispatchkit.settings import Settings
    from dispatchkit.strategies import Strategy

__all__ = ["MIN_BLOCK", "Placement", "jobs_of"]

T = TypeVar("T")

#: Fewest jobs taken from the input at once, so that the per-block overhead
#: (a lock, a split) stays small beside the jobs even at chunk 1.
MIN_BLOCK = 1024


class _Queue(Protocol):
    @property
    def capacity(self) -> int: ...
    def __len__(self) -> int: ...


class Placement(Ledger):
    """The strategy, the worker count and the chunk of a front end, and what follows."""

    _strategy: Strategy
    _n: int
    _chunk: int
    _shared: bool
    _needs_key: bool
    _closed: bool
    _adaptive: bool
    settings: Settings

    def _open_placement(self, settings: Settings) -> None:
        self._strategy = settings.resolved_strategy
        self._n = settings.workers
        self._chunk = settings.fixed_chunk
        self._adaptive = settings.adaptive_chunk
        self._shared = self._strategy.shared
        self._needs_key = self._strategy.needs_key
        self._queue_size = settings.queue_size
        self._capacity = settings.inbox_capacity

    def _queue_capacities(self) -> list[int]:
        """One queue per worker, or one for all with a shared strategy (it holds theirs)."""
        if self._shared:
            return [self._capacity * self._n]
        return [self._capacity] * self._n

    def _check_key(self, key: Callable[[Any], Hashable] | None) -> None:
        """Raises ValueError: the strategy needs keys and ``key`` is None."""
        if self._needs_key and key is None:
            raise ValueError(
                f"the {self._strategy.name} strategy needs key=<function giving each item's key>"
            )

    def _block_size(self, limit: int | None = None) -> int:
        """Jobs to take from the input next: ``chunk`` for each worker (a hand-off
        each), at least :data:`MIN_BLOCK` but never more than the queues hold,
        and at most ``limit`` (never under 1)."""
        size = self._chunk if self._shared else self._chunk * self._n
        size = max(size, min(MIN_BLOCK, self._queue_size * self._n))
        return size if limit is None else max(1, min(size, limit))

    def _next_block_size(self, limit: Callable[[], int] | None, exact: bool) -> int:
        """Jobs to take from the input next: :meth:`_block_size` within ``limit()``,
        or ``limit()`` itself if ``exact`` (an adaptive ``dispatch`` sizes its blocks)."""
        if limit is None:
            return self._block_size()
        return max(1, limit()) if exact else self._block_size(limit())

    def _stamp(
        self, block: list[T], key: Callable[[T], Hashable] | None
    ) -> tuple[list[T], int, list[Hashable] | None]:
        """Number a block: ``(jobs, first seq, keys or None)``; its seqs are consecutive."""
        keys = [key(item) for item in block] if key is not None else None
        return block, self._take_seqs(len(block)), keys

    def _refusal(self) -> Exception:
        """The error of a closed front end (a thread front end adds a fork's)."""
        return ClosedError("the dispatcher is closed: it takes no more jobs")

    def _numbered_blocks(
        self,
        items: Iterable[T],
        key: Callable[[T], Hashable] | None,
        limit: Callable[[], int] | None = None,
        exact: bool = False,
    ) -> Iterator[tuple[list[T], int, list[Hashable] | None]]:
        """Take ``items`` a numbered block at a time, at most ``limit()`` jobs each
        (``exact``: that many, see :meth:`_next_block_size`).

        Raises:
            ClosedError (or the front end's refusal): closed meanwhile.
        """
        iterator = iter(items)
        while True:
            block = list(islice(iterator, self._next_block_size(limit, exact)))
            if not block:
                return
            if self._closed:
                raise self._refusal()
            yield self._stamp(block, key)

    def _range_blocks(
        self,
        items: range,
        key: Callable[[int], Hashable] | None,
        limit: Callable[[], int] | None,
        exact: bool,
    ) -> Iterator[tuple[range, int, list[Hashable] | None]]:
        """:meth:`_numbered_blocks` of a ``range``, each block a slice of it: the
        slices stay ranges down to the chunks, so that a worker process is sent a
        chunk's bounds, not its numbers."""
        low = 0
        while low < len(items):
            high = low + self._next_block_size(limit, exact)
            block = items[low:high]
            low = high
            if self._closed:
                raise self._refusal()
            keys = [key(item) for item in block] if key is not None else None
            yield block, self._take_seqs(len(block)), keys

    def _parts(
        self, jobs: Sequence[T], first: int, keys: Sequence[Hashable] | None
    ) -> list[tuple[int, Sequence[T]]]:
        """``(queue index, jobs)`` for each worker getting some of a numbered block."""
        parts = self._strategy.split(jobs, first, self._n, keys)
        if self._shared:
            return [(0, part) for _, part in parts]
        return parts

    def _chunked(self, jobs: Sequence[T], chunk: int | None = None) -> list[Sequence[T]]:
        """A part cut into hand-offs of ``chunk`` jobs (default: the dispatcher's), each
        of the part's own type (a range's slices are ranges)."""
        if chunk is None:
            chunk = self._chunk
        if len(jobs) <= chunk:
            return [jobs]
        return [jobs[low : low + chunk] for low in range(0, len(jobs), chunk)]

    def _worker_kind(self) -> str:
        """The worker kind whose hand-off cost the adaptive chunk is aimed at."""
        return self.settings.executor

    def _adaptive_feed(
        self,
        items: object,
        queued: Callable[[], int],
        chunk: int | None = None,
        max_chunk: int = MAX_CHUNK,
    ) -> AdaptiveFeed | None:
        """The pacing and chunking of one bulk call, if its hand-off size adapts:
        the strategy is adaptive and no ``chunk`` is given for the call.
        ``queued``: how many messages wait in the shared queue."""
        if not self._adaptive or chunk is not None:
            return None
        total = length_hint(items, -1)
        bounds = tuning(self._worker_kind())
        controller = ChunkController(
            self._n,
            bounds.target,
            max_chunk=max_chunk,
            tail_factor=bounds.tail_factor,
            tail_seconds=bounds.tail_seconds,
        )
        return AdaptiveFeed(controller, queued, None if total < 0 else total)

    def _bulk_run(
        self, items: object, queued: Callable[[], int], notify: Callable[[], None]
    ) -> BulkRun | None:
        """The pacing and measuring of one ``dispatch`` call, if its hand-off size
        adapts (as :meth:`_adaptive_feed`), in chunks of at most the worker kind's
        ``max_dispatch_chunk``."""
        max_chunk = tuning(self._worker_kind()).max_dispatch_chunk
        feed = self._adaptive_feed(items, queued, max_chunk=max_chunk)
        return None if feed is None else BulkRun(feed, notify)

    def _keeps_key_order(self, key: object) -> bool:
        """Whether a bulk call's chunks go in lanes, one key's jobs in order
        (an adaptive strategy, whose queue is shared, given a ``key``)."""
        return key is not None and self._strategy.adaptive

    def _plan_offer(
        self, items: Sequence[T], keys: Sequence[Hashable] | None, queues: Sequence[_Queue]
    ) -> list[tuple[int, Sequence[T]]] | None:
        """All or nothing: the parts of ``items``, numbered, if every queue has room
        for its share of hand-offs; else None, and nothing numbered. The caller
        holds the lock that keeps offers atomic against each other."""
        first = self._next_seq
        parts = self._parts(items, first, keys)
        chunk = self._chunk
        # A split gives a queue at most one part: one look at each will do.
        for index, jobs in parts:
            queue = queues[index]
            if len(queue) - (-len(jobs) // chunk) > queue.capacity:
                return None
        self._next_seq = first + len(items)
        return parts


def jobs_of(block: Sequence[T], first: int, seqs: Sequence[int]) -> list[T]:
    """The jobs of ``block`` (numbered from ``first``) whose seqs are ``seqs``, which
    increase: one slice of it when they are consecutive (a shared queue's chunks)."""
    count = len(seqs)
    if count and seqs[-1] - seqs[0] == count - 1:
        low = seqs[0] - first
        part = block[low : low + count]
        return part if type(part) is list else list(part)
    return [block[seq - first] for seq in seqs]
