"""The awaiting half of :class:`~dispatchkit.AsyncDispatcher`: how the event loop drives the core.

    map/dispatch ──blocks──▶ Placement parts ──await room, put──▶ AsyncInbox[i]
    map ◀── MapRun rows (an asyncio.Event wakes the caller) ◀── worker tasks

The sans-I/O core numbers blocks and splits them into parts; this module puts
their chunks into the inboxes, awaiting room, waits for map results, owns the
worker tasks' TaskGroup (``async with``) and wraps a job's callable as an
awaitable, whatever kind it is.
"""

from __future__ import annotations

import asyncio
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Hashable,
    Iterable,
    Sequence,
)
from contextlib import nullcontext
from functools import partial
from time import perf_counter
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TypeVar

from ._async_map import BlockChunk
from ._async_work import AsyncChunk, InlineChunk, StopSignal, awaiting, is_coroutine_function
from ._lanes import LanedMessage, Lanes, lane_count
from .core import FrontEnd, MapRun, MapWindow, WorkerState, shutdown_plan
from .core.adaptive import BulkRun, MeasuredMapRun
from .core.placement import jobs_of
from .stats import DispatcherStats

if TYPE_CHECKING:
    from ._async_inbox import AsyncInbox
    from .executors.asyncio import AsyncWorkerPool

__all__ = ["AsyncFrontEnd"]

T = TypeVar("T")


class AsyncFrontEnd(FrontEnd):
    """Awaiting placement, the map loop, the callers and the lifecycle of an asyncio front end."""

    _inboxes: list[AsyncInbox[Any]]
    _states: list[WorkerState]
    _pool: AsyncWorkerPool
    _stop: StopSignal
    _group: asyncio.TaskGroup | None
    _job_timeout: float | None
    _sync_in_thread: bool
    _last_maker: tuple[Any, Any, Callable[[Sequence[Any], Sequence[int]], Any]] | None
    started_at: float

    async def __aenter__(self) -> Self:
        if self._group is not None:
            raise RuntimeError("an AsyncDispatcher can be entered only once")
        self._group = asyncio.TaskGroup()
        await self._group.__aenter__()
        self._stop.owner = asyncio.current_task()
        self.started_at = perf_counter()
        self._pool.start(self._group)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._group is not None
        if exc_type is None:
            self.close()
        else:
            self._cancel_everything()
        if exc_type is not None and not issubclass(exc_type, asyncio.CancelledError):
            # The block failed: the workers are cancelled above, and the
            # block's own exception propagates as it is, not wrapped in an
            # ExceptionGroup (a worker's crash still raises one).
            await self._group.__aexit__(None, None, None)
            return
        await self._group.__aexit__(exc_type, exc, tb)

    def close(self) -> None:
        """Take no more jobs; the workers finish what is queued. Idempotent."""
        self._closed = True
        for inbox in self._inboxes:
            inbox.close()

    async def join(self, timeout: float | None = None) -> bool:
        """Close, then wait until every queued job has run and the workers ended.

        Returns False if workers still run after ``timeout`` seconds.
        """
        self.close()
        return await self._pool.join(timeout)

    async def stop(self, cancel: bool = True, timeout: float | None = None) -> DispatcherStats:
        """Close; with ``cancel``, cancel queued *and running* jobs, then wait for the workers.

        Without ``cancel``, jobs still running after ``timeout`` seconds are
        cancelled then. Returns the final stats.
        """
        if cancel:
            self._cancel_everything()
        if not await self.join(timeout):
            self._cancel_everything()
            await self.join()
        return self.stats()

    async def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """``concurrent.futures.Executor.shutdown``, awaited: close, cancel or wait. Idempotent."""
        how, timeout = shutdown_plan(wait, cancel_futures)
        if how == "stop":
            await self.stop(cancel=True, timeout=timeout)
        elif how == "join":
            await self.join()
        else:
            self.close()

    def _cancel_everything(self) -> None:
        self.close()
        self._stop.requested = True
        for inbox in self._inboxes:
            self._add_cancelled(sum(message._cancel_taken() for message in inbox.take_all()))
        self._pool.kill()

    def _check_open(self) -> None:
        if self._group is None:
            raise RuntimeError("use the dispatcher inside 'async with AsyncDispatcher(...)'")
        if self._closed:
            raise self._refusal()

    def _caller(
        self, fn: Callable[..., Any], star: bool = False
    ) -> Callable[[Any], Awaitable[Any]]:
        """Turn ``fn`` into ``item -> awaitable``, whatever kind of callable it is."""
        if is_coroutine_function(fn):
            return (lambda item: fn(*item)) if star else fn
        if self._sync_in_thread:
            if star:
                return lambda item: asyncio.to_thread(fn, *item)
            return lambda item: asyncio.to_thread(fn, item)

        return awaiting((lambda item: fn(*item)) if star else fn)

    def _refuse_unstoppable(self, fn: Callable[..., Any], timeout: float | None) -> None:
        """Refuse a timeout that could not be kept: a plain function on the event loop.

        A coroutine is cancelled at the timeout; a function in a thread
        (``sync_in_thread``) is abandoned there, its thread running on. A plain
        call on the event loop can be neither: the loop itself is held until
        it returns.

        Raises:
            ValueError: ``fn`` is a plain function, ``timeout`` is set and
                ``sync_in_thread`` is not.
        """
        if timeout is not None and not self._sync_in_thread and not is_coroutine_function(fn):
            name = getattr(fn, "__qualname__", None) or type(fn).__name__
            raise ValueError(
                f"a job timeout cannot stop the plain function {name} on the event loop: "
                "make it an async def, or pass sync_in_thread=True (where a timed-out "
                "job's thread runs on to its end)"
            )

    def _fire_and_forget(
        self,
        fn: Callable[[Any], Any],
        on_error: Callable[[Any, BaseException], object] | None,
        tally: BulkRun | None = None,
    ) -> Callable[[Sequence[Any], Sequence[int]], AsyncChunk | InlineChunk]:
        """How to wrap jobs of ``fn`` whose results nobody wants: ``(jobs, seqs) -> message``;
        each chunk tells ``tally`` when it ended, for an adaptive ``dispatch``.

        Raises:
            ValueError: ``job_timeout`` with a plain function on the event loop.
        """
        cached = self._last_maker
        # A server offers the same function for every request: decide once.
        if tally is None and cached is not None and cached[0] == fn and cached[1] is on_error:
            return cached[2]
        self._refuse_unstoppable(fn, self._job_timeout)
        make: Callable[[Sequence[Any], Sequence[int]], AsyncChunk | InlineChunk]
        if (
            not is_coroutine_function(fn)
            and not self._sync_in_thread
            and self._retry is None
            and self._job_timeout is None
        ):
            make = lambda jobs, seqs: InlineChunk(fn, jobs, on_error, tally)  # noqa: E731
        else:
            call = self._caller(fn)
            make = lambda jobs, seqs: AsyncChunk(  # noqa: E731
                call, jobs, seqs, None, self._retry, self._job_timeout, on_error, tally
            )
        if tally is None:
            self._last_maker = (fn, on_error, make)
        return make

    async def _dispatch_paced(
        self,
        fn: Callable[[T], Any],
        items: Iterable[T] | AsyncIterable[T],
        key: Callable[[T], Hashable] | None,
        on_error: Callable[[T, BaseException], object] | None,
    ) -> int | None:
        """``dispatch`` with adaptive chunks; None (nothing taken) if its hand-off
        size does not adapt. Each block is cut when it is about to be needed
        (see the thread front end's ``_dispatch_paced``)."""
        event = asyncio.Event()
        run = self._bulk_run(items, self._inboxes[0].__len__, event.set)
        if run is None:
            return None
        make = self._fire_and_forget(fn, on_error, run)
        dispatched = 0
        async for block, first, keys in self._blocks(items, key, run.limit, exact=True):
            await self._place(block, first, keys, make, run.cut)
            dispatched += len(block)
            while not run.wants_more():
                event.clear()
                run.waiting = True
                try:
                    if run.may_sleep():
                        await event.wait()
                finally:
                    run.waiting = False
        return dispatched

    async def _map(
        self,
        fn: Callable[..., Any],
        items: Iterable[Any] | AsyncIterable[Any],
        outcomes: bool,
        star: bool,
        key: Callable[[Any], Hashable] | None,
        window: MapWindow,
    ) -> AsyncIterator[Any]:
        call = self._caller(fn, star)
        event = asyncio.Event()
        adaptive = self._adaptive_feed(items, self._inboxes[0].__len__)
        run: MapRun
        if adaptive is None:
            run, limit, wants_more = MapRun(outcomes, event.set), window.room, _always
        else:
            # Adaptive chunks: paced blocks, cut when placed, measured when delivered.
            run = MeasuredMapRun(adaptive, event.set, outcomes)
            limit = lambda: adaptive.block_limit(window.room())  # noqa: E731
            wants_more = adaptive.wants_more
        blocks = self._blocks(items, key, limit).__aiter__()
        lanes = Lanes(lane_count(self._n), nullcontext()) if self._keeps_key_order(key) else None
        # Every chunk comes back as one block of results. With one shared queue
        # and no lanes its jobs are consecutive, and so are admitted as a block;
        # otherwise (when order matters) one by one, each job's place pointing
        # at its chunk's block.
        by_chunk = (self._shared and lanes is None) or not window.ordered
        exhausted = False
        while True:
            while not exhausted and window.room() > 0 and wants_more(window.in_flight):
                try:
                    block, first, keys = await blocks.__anext__()
                except StopAsyncIteration:
                    exhausted = True
                    break
                make: Callable[[Sequence[Any], Sequence[int]], Any]
                if by_chunk:
                    make = partial(self._block_chunk, call, run, window, outcomes)
                else:
                    window.admit(first, len(block))
                    make = lambda jobs, seqs: BlockChunk(  # noqa: E731
                        call, jobs, seqs, run, self._retry, self._job_timeout, outcomes
                    )
                cut: Callable[[Sequence[int]], Sequence[Sequence[int]]] | None
                cut = None if adaptive is None else adaptive.slices
                if lanes is not None and keys is not None:
                    # One key's jobs in order: chunks of one lane each, run in turn.
                    size = adaptive.take(len(block)) if adaptive is not None else self._chunk
                    cut = partial(lanes.pieces, keys=keys, size=size)
                    make = partial(_in_lane, lanes, make)
                await self._place(block, first, keys, make, cut)
            if window.in_flight == 0:
                return
            if not run.finished:
                event.clear()
                run.waiting = True
                await event.wait()
                run.waiting = False
            while run.finished:
                if by_chunk:
                    units: list[Any] = window.release(run.finished.popleft())
                    for unit in units:
                        for result in unit.results(outcomes):
                            yield result
                    continue
                for chunk_results in window.release_spread(run.finished.popleft()):
                    yield chunk_results.next_result(outcomes)

    def _block_chunk(
        self,
        call: Callable[[Any], Awaitable[Any]],
        run: MapRun,
        window: MapWindow,
        timed: bool,
        jobs: list[Any],
        seqs: Sequence[int],
    ) -> AsyncChunk:
        """A chunk of consecutive ``map`` jobs, admitted to the window as one block."""
        window.admit_block(seqs)
        return BlockChunk(call, jobs, seqs, run, self._retry, self._job_timeout, timed)

    async def _blocks(
        self,
        items: Iterable[T] | AsyncIterable[T],
        key: Callable[[T], Hashable] | None,
        limit: Callable[[], int] | None,
        exact: bool = False,
    ) -> AsyncIterator[tuple[list[T], int, list[Hashable] | None]]:
        """Take ``items`` a numbered block at a time (see ``Placement._next_block_size``)."""
        if isinstance(items, AsyncIterable):
            iterator = items.__aiter__()
            while True:
                want = self._next_block_size(limit, exact)
                block: list[T] = []
                async for item in iterator:
                    block.append(item)
                    if len(block) >= want:
                        break
                if not block:
                    return
                if self._closed:
                    raise self._refusal()
                yield self._stamp(block, key)
        else:
            for taken in self._numbered_blocks(items, key, limit, exact):
                yield taken

    async def _place(
        self,
        block: list[Any],
        first: int,
        keys: list[Hashable] | None,
        make: Callable[[Sequence[Any], Sequence[int]], Any],
        cut: Callable[[Sequence[int]], Sequence[Sequence[int]]] | None = None,
    ) -> None:
        """Hand each queue its part of a block, a chunk at a time, waiting for room;
        ``cut`` makes the chunks (default: the dispatcher's fixed chunk).

        If a put fails (QueueFull, an interrupt), the jobs of the block not yet
        handed over were never accepted: they are uncounted.
        """
        placed = 0
        timeout = self.settings.put_timeout
        try:
            for index, seqs in self._parts(range(first, first + len(block)), first, keys):
                inbox = self._inboxes[index]
                for piece in self._chunked(seqs) if cut is None else cut(seqs):
                    if inbox.full():  # else no coroutine to await: this runs once per chunk
                        await inbox.room(timeout)
                    # Room was made, and nothing ran since: the put cannot find it full.
                    inbox.put_nowait(make(jobs_of(block, first, piece), piece))
                    placed += len(piece)
        except BaseException:
            self._reject(len(block) - placed)
            raise

    def _worker_kind(self) -> str:
        return "asyncio"

    # -- accounting ----------------------------------------------------------

    def stats(self) -> DispatcherStats:
        """A snapshot of the counters (exact once joined or stopped)."""
        return self._ledger_stats(self._states, self.started_at, self._inboxes)


def _always(in_flight: int) -> bool:
    return True


def _in_lane(
    lanes: Lanes,
    make: Callable[[Sequence[Any], Sequence[int]], Any],
    jobs: list[Any],
    seqs: Sequence[int],
) -> LanedMessage:
    return lanes.wrap(seqs, make(jobs, seqs))
