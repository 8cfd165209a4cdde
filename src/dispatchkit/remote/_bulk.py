"""How :class:`~dispatchkit.remote.RedisDispatcher` publishes: one entry, ``map``, ``dispatch``.

An entry is one job, or a chunk of them (one stream entry, one outcome). ``map``
and ``dispatch`` cut the input into entries of ``chunk`` jobs, numbered by the core's
:class:`~dispatchkit.core.Ledger`; ``map`` keeps the core's
:class:`~dispatchkit.core.MapWindow` full and yields :func:`~dispatchkit.core.map_result`
of each row as the listener delivers it, ``dispatch`` keeps nothing but the count.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Coroutine, Hashable, Iterable, Iterator, Sequence
from itertools import islice
from time import perf_counter
from typing import Any, Literal, TypeVar, overload

from dispatchkit.core import Ledger, MapRun, MapWindow, RowBlock, check_window, map_result
from dispatchkit.errors import ClosedError, QueueFull
from dispatchkit.job import Outcome
from dispatchkit.registry import job_name
from dispatchkit.retry import RetryPolicy
from dispatchkit.strategies import Strategy, stable_hash
from dispatchkit.transports._codec import CHUNK_JOB, encode_job

from ._link import Link
from .outcomes import Waiting

__all__ = ["RemoteBulk"]

R = TypeVar("R")

#: Jobs of a ``map`` call out at once, unless told.
_WINDOW = 10_000


class RemoteBulk(Ledger):
    """How jobs become published entries: one (:meth:`_publish`), or many (``map``,
    ``dispatch``)."""

    _strategy: Strategy
    _closed: bool
    _results: str
    _put_timeout: float | None
    _slots: threading.BoundedSemaphore
    _link: Link

    @property
    def pending(self) -> int:
        """Entries submitted whose outcome has not arrived."""
        return len(self._link.waiting)

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError("the dispatcher is closed: it takes no more jobs")

    def _publish(
        self,
        entry: Waiting,
        name: str,
        args: tuple[Any, ...],
        kwargs: Any,
        key: Hashable,
        timeout: float | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        """Hand an entry to the flusher; if that fails, its jobs count as never submitted."""
        try:
            if self._strategy.needs_key:
                stable_hash(key)  # a TypeError now, rather than in the flusher
            reply_to = "" if entry.forget else self._results  # "": the worker stores no outcome
            payload = encode_job(entry.seq, name, args, kwargs, reply_to, None, timeout, retry)
            if not self._slots.acquire(timeout=self._put_timeout):
                raise QueueFull(f"{self.pending} entries unfinished for {self._put_timeout} s")
            with self._link.lock:
                if self._closed:
                    self._slots.release()
                    raise ClosedError("the dispatcher is closed: it takes no more jobs")
                self._link.send(entry, key, payload)
        except BaseException:
            self._reject(len(entry.seqs))
            raise

    def dispatch(
        self,
        fn: Callable[..., object] | str,
        items: Iterable[Any],
        *,
        chunk: int = 1,
        key: Callable[[Any], Hashable] | None = None,
        forget: bool = False,
    ) -> int:
        """Run ``fn(item)`` remotely for every item, fire and forget; how many were sent.

        ``chunk`` jobs travel in one entry. No handle is kept and values are
        dropped: each entry's outcome only counts its jobs' successes and
        failures in :meth:`stats` (as they arrive; :meth:`join` waits for all).
        With ``forget``, no outcome comes back at all (the worker stores none):
        the jobs count as ``forgotten`` once published, :meth:`join` waits only
        for that, and a failure is logged and counted by the worker alone. Their
        bound is then ``capacity`` entries in their stream.

        Raises:
            ClosedError, TypeError, QueueFull: as :meth:`submit` (jobs sent before
                stay sent and counted).
            ValueError: ``fn`` is not registered, a bad ``chunk``, or the key
                strategy without ``key`` (or with ``chunk`` > 1).
        """
        name = self._check_bulk(fn, chunk, key)
        sent = 0
        source = iter(items)
        while entries := self._next_entries(source, chunk, None)[1]:
            for index, (seqs, jobs) in enumerate(entries):
                entry = Waiting(seqs, True, perf_counter(), forget=forget)
                calls = [[item] for item in jobs]
                unsent = index  # this entry and those after it, until _publish has it
                try:
                    routing = key(jobs[0]) if key else None
                    unsent = index + 1  # _publish counts its own entry out if it fails
                    self._publish(entry, CHUNK_JOB, (name, calls), {}, routing)
                except BaseException:
                    self._reject_from(entries, unsent)
                    raise
                sent += len(seqs)
        return sent

    def _reject_from(self, entries: list[tuple[Sequence[int], list[Any]]], start: int) -> None:
        """An entry failed: the jobs of the entries from ``start`` on, numbered with it,
        are never sent."""
        self._reject(sum(len(seqs) for seqs, _ in entries[start:]))

    def _next_entries(
        self, source: Iterator[Any], chunk: int, most: int | None
    ) -> tuple[int, list[tuple[Sequence[int], list[Any]]]]:
        """The next jobs of ``source`` (``most`` at most), numbered: ``(first seq,
        entries of at most chunk jobs, each as (seqs, items)))``. Where the strategy
        places each job on a worker, an entry holds the jobs of one worker, so that
        a chunk goes where its jobs would go one by one; otherwise an entry's jobs
        are consecutive (its seqs a range).

        Raises:
            LookupError: no worker to place on within ``worker_wait`` seconds.
        """
        strategy = self._strategy
        spread = chunk > 1 and not strategy.shared and not strategy.needs_key
        workers = self._link.worker_count() if spread else 1
        size = chunk * workers
        block = list(islice(source, size if most is None else min(size, most)))
        if not block:
            return 0, []
        first = self._take_seqs(len(block))
        if workers == 1:  # consecutive entries: slices, no per-job work
            return first, [
                (range(first + low, first + low + len(part)), part)
                for low in range(0, len(block), chunk)
                if (part := block[low : low + chunk])
            ]
        seqs = list(range(first, first + len(block)))
        parts = [part for _, part in strategy.split(seqs, first, workers)]
        pieces = [part[low : low + chunk] for part in parts for low in range(0, len(part), chunk)]
        return first, [(piece, [block[seq - first] for seq in piece]) for piece in pieces]

    @overload
    def map(
        self,
        fn: Callable[..., Any] | str,
        items: Iterable[Any],
        *,
        outcomes: Literal[True],
        ordered: bool = ...,
        star: bool = ...,
        key: Callable[[Any], Hashable] | None = ...,
        chunk: int = ...,
        window: int | None = ...,
    ) -> Iterator[Outcome[Any]]: ...
    # A coroutine job's result is what it returns once awaited (on an async worker).
    @overload
    def map(
        self,
        fn: Callable[..., Coroutine[Any, Any, R]],
        items: Iterable[Any],
        *,
        ordered: bool = ...,
        outcomes: Literal[False] = ...,
        star: bool = ...,
        key: Callable[[Any], Hashable] | None = ...,
        chunk: int = ...,
        window: int | None = ...,
    ) -> Iterator[R]: ...
    @overload
    def map(
        self,
        fn: Callable[..., R] | str,
        items: Iterable[Any],
        *,
        chunk: int = ...,
        window: int | None = ...,
        ordered: bool = ...,
        star: bool = ...,
        key: Callable[[Any], Hashable] | None = ...,
        outcomes: bool = ...,
    ) -> Iterator[R]: ...
    def map(
        self,
        fn: Callable[..., Any] | str,
        items: Iterable[Any],
        *,
        ordered: bool = True,
        outcomes: bool = False,
        star: bool = False,
        key: Callable[[Any], Hashable] | None = None,
        chunk: int = 1,
        window: int | None = None,
    ) -> Iterator[Any]:
        """Run ``fn(item)`` remotely for each item (``fn(*item)`` with ``star``).

        Yields in input order (or as outcomes come, without ``ordered``) the
        values, or with ``outcomes`` an :class:`~dispatchkit.Outcome` per item.
        ``chunk`` jobs travel in one stream entry and come back in one outcome:
        the batching that makes tiny jobs cheap. At most ``window`` jobs (10,000
        by default) are unfinished at once: the input is read lazily.

        Raises:
            ClosedError, TypeError, QueueFull: as :meth:`submit`.
            ValueError: ``fn`` is not registered, a bad ``window`` or ``chunk``, or
                ``chunk`` > 1 with the key strategy (raised before anything is sent).
            RemoteJobError: without ``outcomes``, the first job error met.
        """
        name = self._check_bulk(fn, chunk, key)
        size = check_window(window, _WINDOW)
        return self._map(name, items, MapWindow(size, ordered), outcomes, star, key, chunk)

    def _map(
        self,
        name: str,
        items: Iterable[Any],
        window: MapWindow,
        outcomes: bool,
        star: bool,
        key: Callable[[Any], Hashable] | None,
        chunk: int,
    ) -> Iterator[Any]:
        ready = threading.Condition()
        run = MapRun(outcomes, ready.notify)  # notified by deliver(), under ``ready``

        def deliver(rows: list[Any]) -> None:
            with ready:
                run.deliver(rows)

        source = iter(items)
        while True:
            while window.room() > 0:
                first, entries = self._next_entries(source, chunk, window.room())
                if not entries:
                    break
                # A chunk travels as one unit, its results expanded only as they are
                # yielded; chunks whose jobs interleave (spread over workers) are one
                # only when order does not matter.
                block = chunk > 1 and (not window.ordered or isinstance(entries[0][0], range))
                if not block:
                    window.admit(first, sum(len(seqs) for seqs, _ in entries))
                for index, (seqs, jobs) in enumerate(entries):
                    unsent = index  # this entry and those after it, until _publish has it
                    try:
                        if chunk > 1:
                            if block:
                                window.admit_block(seqs)
                            entry = Waiting(
                                seqs, True, perf_counter(), deliver=deliver, block=block
                            )
                            calls = [list(item) for item in jobs] if star else [[i] for i in jobs]
                            unsent = index + 1  # _publish counts its own entry out if it fails
                            self._publish(entry, CHUNK_JOB, (name, calls), {}, None)
                        else:
                            (item,) = jobs
                            entry = Waiting(seqs, False, perf_counter(), deliver=deliver)
                            args = tuple(item) if star else (item,)
                            routing = key(item) if key else None
                            unsent = index + 1
                            self._publish(entry, name, args, {}, routing)
                    except BaseException:
                        self._reject_from(entries, unsent)
                        raise
            if window.in_flight == 0:
                return
            with ready:
                run.waiting = not run.finished
                if run.waiting:
                    ready.wait(1.0)
                run.waiting = False
            while run.finished:
                for row in window.release(run.finished.popleft()):
                    if isinstance(row, RowBlock):
                        yield from row.results(outcomes)
                    else:
                        yield map_result(row, outcomes)

    def _check_bulk(
        self, fn: Callable[..., Any] | str, chunk: int, key: Callable[[Any], Hashable] | None
    ) -> str:
        name = job_name(fn)
        if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
            raise ValueError(f"chunk must be a whole number of at least 1, got {chunk!r}")
        if chunk > 1 and (key is not None or self._strategy.needs_key):
            raise ValueError("the key strategy sends one job per entry: use chunk=1")
        if self._strategy.needs_key and key is None:
            raise ValueError("the key strategy needs key=<function giving each item's key>")
        self._check_open()
        return name
