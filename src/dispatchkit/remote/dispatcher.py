"""A dispatcher that publishes jobs to Redis instead of running them.

    submit ──encode──▶ outbox ──flusher thread: pipelined XADD──▶ job streams
    handles ◀──listener thread: XREAD results stream, settle handles── workers

``submit`` returns the same :class:`~dispatchkit.JobHandle` as the local
dispatcher; its outcome arrives from whichever worker ran the job. Outcomes
are delivered at least once: a duplicate (the job ran twice after its worker
died) finds its handle settled already and is dropped.

A handle still waiting ``visibility_timeout`` seconds after its job was
published is checked (by the listener, many in one pipelined round trip, each
at most once per timeout): if its entry is neither in its stream nor pending
in the group, and no outcome came, the entry vanished (Redis restarted without
persistence, say) and the handle fails with :class:`~dispatchkit.errors.JobVanished`.
"""

from __future__ import annotations

import itertools
import logging
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Coroutine, Hashable, Iterable, Iterator
from time import perf_counter
from types import TracebackType
from typing import Any, Final, TypeVar, overload

from dispatchkit._durations import check_seconds
from dispatchkit.errors import (
    ClosedError,
    JobVanished,
    QueueFull,
    TransportError,
)
from dispatchkit.job import Job, JobHandle, JobStatus
from dispatchkit.registry import job_name
from dispatchkit.retry import RetryPolicy
from dispatchkit.strategies import Strategy, parse_strategy, stable_hash
from dispatchkit.transports._codec import CHUNK_JOB, decode_outcome, encode_job
from dispatchkit.transports._redis_keys import DEFAULT_NAMESPACE
from dispatchkit.transports.base import Transport

from ._connect import redis_transport
from .outcomes import RemoteStats, remote_error, values
from .worker import DEFAULT_PARTITIONS

__all__ = ["RedisDispatcher", "RemoteStats"]

logger = logging.getLogger(__name__)

R = TypeVar("R")

#: Entries published in one pipelined round trip, at most.
_PUBLISH_BATCH: Final = 2048

#: Outcomes read in one XREAD, at most.
_READ_BATCH: Final = 2048

#: Seconds a connection or a reply from Redis may take before the call fails as
#: unreachable (a blocking read waits 0.2 s).
_REPLY_TIMEOUT: Final = 10.0

#: Handles whose entries are looked for in one pipelined round trip, at most.
_CHECK_BATCH: Final = 1024
#: Seconds between two looks for vanished entries, at most.
_CHECK_EVERY: Final = 5.0


def _remote(*args: Any, **kwargs: Any) -> Any:  # the local stand-in of every remote job
    raise RuntimeError("a remote job does not run locally")


class RedisDispatcher:
    """Publishes registered jobs to the workers of one Redis queue.

    Args:
        url: ``redis://HOST:PORT/DB`` (or give ``transport``).
        queue: the queue's name, as given to the workers.
        strategy: ``pull`` (one shared stream), ``round_robin`` or ``batch`` (one
            stream per registered worker), ``key`` (one stream per partition). A
            Strategy of one's own goes by what it declares: ``shared`` to the shared
            stream, ``needs_key`` to the partitions, otherwise its ``assign`` picks
            among the registered workers.
        block: block size of ``batch``.
        namespace: first part of every key (as given to the workers).
        partitions: partitions of ``key`` (as given to the workers).
        capacity: unfinished jobs at most; ``submit`` waits for room beyond.
        put_timeout: seconds ``submit`` waits for room before ``QueueFull``
            (None: as long as it takes).
        worker_wait: seconds to wait for a registered worker (round_robin and
            batch cannot place a job without one) before failing the jobs.
        visibility_timeout: seconds after which a handle whose entry is gone
            from Redis (neither queued, nor held by a worker, nor answered)
            fails with ``JobVanished`` (as given to the workers).
        transport: the transport to use instead of a Redis URL (a
            :class:`~dispatchkit.transports.memory.MemoryTransport` in tests, say).

    Raises:
        ValueError: an unknown strategy or a bad number (a duration that is not
            a finite number of seconds).
        TransportUnavailable: Redis cannot be reached.
    """

    def __init__(
        self,
        url: str | None = None,
        queue: str | None = None,
        *,
        strategy: str | Strategy = "pull",
        block: int = 100,
        namespace: str = DEFAULT_NAMESPACE,
        partitions: int = DEFAULT_PARTITIONS,
        capacity: int = 100_000,
        put_timeout: float | None = None,
        worker_wait: float = 30.0,
        visibility_timeout: float = 60.0,
        transport: Transport | None = None,
    ) -> None:
        if put_timeout is not None:
            put_timeout = check_seconds("put_timeout", put_timeout, zero_ok=True)
        worker_wait = check_seconds("worker_wait", worker_wait, zero_ok=True)
        self._visibility = check_seconds("visibility_timeout", visibility_timeout)
        if capacity < 1 or partitions < 1:
            raise ValueError("capacity and partitions must be at least 1")
        self._strategy = parse_strategy(strategy, block=block)
        self.name = secrets.token_hex(6)
        if transport is None:
            # Bounded waits: a Redis that hangs must not hang the listener (and shutdown).
            transport = redis_transport(url, queue, namespace, "", _REPLY_TIMEOUT)
        elif url is not None or (queue is not None and queue != transport.keys.queue):
            raise ValueError("give either a Redis URL and a queue, or a transport of that queue")
        self._transport = transport
        self._transport.ping()
        self.keys = self._transport.keys
        self._results = self.keys.results(self.name)
        self._partitions = partitions
        self._put_timeout = put_timeout
        self._worker_wait = worker_wait
        self._slots = threading.BoundedSemaphore(capacity)
        self._ids = itertools.count()
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._outbox: deque[tuple[int, Hashable, bytes]] = deque()
        self._pending: dict[int, JobHandle[Any]] = {}
        # Where each published, unsettled job's entry is, and when to look for it:
        # in order of that time (published in order; one looked at goes last).
        self._placed: dict[int, tuple[str, str, float]] = {}
        self._last_outcome = "0-0"
        self._unread = 0
        self._closed = False
        self._stopping = threading.Event()
        self._workers: list[str] = []
        self._workers_at = 0.0
        self.published = self.succeeded = self.failed = self.duplicates = 0
        self._flusher = threading.Thread(target=self._flush_loop, name="redis-flusher", daemon=True)
        self._listener = threading.Thread(target=self._listen, name="redis-listener", daemon=True)
        self._flusher.start()
        self._listener.start()

    @property
    def strategy(self) -> Strategy:
        return self._strategy

    def __repr__(self) -> str:
        strategy = self._strategy.name
        return f"<RedisDispatcher {self.keys.prefix} {strategy} pending={len(self._pending)}>"

    # -- submitting ----------------------------------------------------------------

    # A coroutine job's result is what it returns once awaited (on an async worker).
    @overload
    def submit(
        self, fn: Callable[..., Coroutine[Any, Any, R]], /, *args: Any, **kwargs: Any
    ) -> JobHandle[R]: ...
    @overload
    def submit(self, fn: Callable[..., R] | str, /, *args: Any, **kwargs: Any) -> JobHandle[R]: ...
    def submit(self, fn: Callable[..., Any] | str, /, *args: Any, **kwargs: Any) -> JobHandle[Any]:
        """Publish a registered job; its handle settles when a worker has run it.

        Raises:
            ClosedError: the dispatcher is closed.
            ValueError: ``fn`` is not a registered job.
            TypeError: arguments that cannot be encoded (only plain data travels), or
                a key that is not an int, str or bytes with the key strategy.
            QueueFull: no room within ``put_timeout``.
        """
        return self._submit(job_name(fn), args, kwargs, None)

    def submit_job(self, job: Job[R]) -> JobHandle[R]:
        """Publish a :class:`~dispatchkit.Job` (with its key, for the key strategy).

        Its ``timeout`` and ``retry`` travel with it: the worker retries the job
        in place per the policy (whose exception types it must be able to
        import), and stops it past its timeout (process and async workers; a
        thread worker fails a job with a timeout, as a running thread cannot be
        stopped).

        Raises:
            ClosedError, ValueError, TypeError, QueueFull: as :meth:`submit`.
        """
        name = job.name or job_name(job.fn)
        return self._submit(name, job.args, job.kwargs, job.key, job.timeout, job.retry)

    @overload
    def map(
        self,
        fn: Callable[..., Coroutine[Any, Any, R]],
        items: Iterable[Any],
        *,
        key: Callable[[Any], Hashable] | None = None,
        chunk: int = 1,
        window: int = 10_000,
    ) -> Iterator[R]: ...
    @overload
    def map(
        self,
        fn: Callable[..., R] | str,
        items: Iterable[Any],
        *,
        key: Callable[[Any], Hashable] | None = None,
        chunk: int = 1,
        window: int = 10_000,
    ) -> Iterator[R]: ...
    def map(
        self,
        fn: Callable[..., Any] | str,
        items: Iterable[Any],
        *,
        key: Callable[[Any], Hashable] | None = None,
        chunk: int = 1,
        window: int = 10_000,
    ) -> Iterator[Any]:
        """Run ``fn(item)`` remotely for each item; yield the results in input order.

        ``chunk`` jobs travel in one stream entry and come back in one outcome:
        the batching that makes tiny jobs cheap. At most about ``window`` jobs
        are unfinished at once: the input is read lazily.

        Raises:
            ClosedError, TypeError, QueueFull: as :meth:`submit`.
            ValueError: ``fn`` is not registered, or ``chunk`` > 1 with the key strategy.
            RemoteJobError: the first job error met, in input order.
        """
        name = job_name(fn)
        if chunk < 1:
            raise ValueError(f"chunk must be at least 1, got {chunk}")
        if chunk > 1 and (key is not None or self._strategy.needs_key):
            raise ValueError("the key strategy sends one job per entry: use chunk=1")
        handles: deque[JobHandle[Any]] = deque()
        source = iter(items)
        while block := list(itertools.islice(source, chunk)):
            if chunk == 1:
                item = block[0]
                handles.append(self._submit(name, (item,), {}, key(item) if key else None))
            else:
                calls = [[item] for item in block]
                handles.append(self._submit(CHUNK_JOB, (name, calls), {}, None))
            if len(handles) * chunk >= window:
                yield from values(handles.popleft(), chunk > 1)
        while handles:
            yield from values(handles.popleft(), chunk > 1)

    def _submit(
        self,
        name: str,
        args: tuple[Any, ...],
        kwargs: Any,
        key: Hashable,
        timeout: float | None = None,
        retry: RetryPolicy | None = None,
    ) -> JobHandle[Any]:
        if self._closed:
            raise ClosedError("the dispatcher is closed: it takes no more jobs")
        if self._strategy.needs_key:
            stable_hash(key)  # a TypeError now, rather than in the flusher
        job_id = next(self._ids)
        payload = encode_job(job_id, name, args, kwargs, self._results, None, timeout, retry)
        if not self._slots.acquire(timeout=self._put_timeout):
            raise QueueFull(f"{len(self._pending)} jobs unfinished for {self._put_timeout} s")
        handle: JobHandle[Any] = JobHandle(job_id, _remote, (), {}, name)
        with self._wake:
            if self._closed:
                self._slots.release()
                raise ClosedError("the dispatcher is closed: it takes no more jobs")
            self._pending[job_id] = handle
            self._outbox.append((job_id, key, payload))
            if len(self._outbox) == 1:
                self._wake.notify()
        return handle

    # -- publishing (flusher thread) ---------------------------------------------------

    def _flush_loop(self) -> None:
        while True:
            with self._wake:
                while not self._outbox and not self._stopping.is_set():
                    self._wake.wait(0.2)
                if not self._outbox:
                    return
                count = min(len(self._outbox), _PUBLISH_BATCH)
                batch = [self._outbox.popleft() for _ in range(count)]
            try:
                entries = [(self._stream_of(seq, key), payload) for seq, key, payload in batch]
                ids = self._transport.put(entries)
                self.published += len(entries)
                due = time.monotonic() + self._visibility
                with self._lock:
                    for (seq, _, _), (stream, _), entry_id in zip(batch, entries, ids, strict=True):
                        if seq in self._pending:  # not settled already
                            self._placed[seq] = (stream, entry_id, due)
            except (TransportError, LookupError) as exc:
                logger.error("publishing %d jobs failed: %s", len(batch), exc)
                for seq, _, _ in batch:
                    self._settle(seq, False, exc, 0)

    def _stream_of(self, seq: int, key: Hashable) -> str:
        # Routed by what the strategy declares, so that one of the user's own goes
        # where it belongs: one shared stream, a partition per key, or a worker's stream.
        strategy = self._strategy
        if strategy.shared:
            return self.keys.pull
        if strategy.needs_key:
            return self.keys.partition(stable_hash(key) % self._partitions)
        # round_robin and batch: the strategy picks among the registered workers.
        workers = self._live_workers()
        return self.keys.worker_stream(workers[strategy.assign(seq, key, len(workers))])

    def _live_workers(self) -> list[str]:
        """Registered workers that are not draining, refreshed at most once a second.

        Raises:
            LookupError: none registered within ``worker_wait`` seconds.
        """
        now = time.monotonic()
        if self._workers and now - self._workers_at < 1.0:
            return self._workers
        deadline = now + self._worker_wait
        while True:
            # Fresh heartbeats only: a worker silent for 10 s gets no new jobs.
            names = self._transport.live_workers(10.0)
            if names:
                self._workers, self._workers_at = names, time.monotonic()
                return names
            if time.monotonic() > deadline or self._stopping.is_set():
                raise LookupError(f"no worker registered on queue {self.keys.prefix}")
            time.sleep(0.1)

    # -- outcomes (listener thread) ------------------------------------------------------

    def _listen(self) -> None:
        check_every = min(self._visibility / 2, _CHECK_EVERY)
        next_check = time.monotonic() + check_every
        while not (self._stopping.is_set() and not self._pending):
            try:
                self._read_outcomes(block=0.2)
                if time.monotonic() >= next_check:
                    self._fail_vanished()
                    next_check = time.monotonic() + check_every
            except TransportError as exc:
                logger.error("reading outcomes failed: %s; retrying", exc)
                time.sleep(0.5)

    def _read_outcomes(self, block: float | None) -> int:
        """Read and settle the next outcomes (waiting ``block`` seconds for some); how many.

        Raises:
            TransportError: Redis failed.
        """
        t = self._transport
        entries = t.read_outcomes(self._results, self._last_outcome, _READ_BATCH, block)
        if not entries:
            return 0
        self._last_outcome = entries[-1][0]
        for _, payload in entries:
            self._on_outcome(payload)
        self._unread += len(entries)
        if self._unread >= _READ_BATCH or not self._pending:
            # Trim what was read, in one command per many outcomes.
            t.trim_outcomes(self._results, self._last_outcome)
            self._unread = 0
        return len(entries)

    def _fail_vanished(self) -> None:
        """Fail the handles, due for a look, whose entries are gone from Redis.

        Raises:
            TransportError: Redis failed (the handles are looked at next time).
        """
        while due := self._due_for_a_look():
            try:
                gone = self._transport.vanished([(stream, eid) for _, stream, eid in due])
            except TransportError:
                self._look_again(due)
                raise
            self._look_again([d for d, lost in zip(due, gone, strict=True) if not lost])
            lost_jobs = [d for d, lost in zip(due, gone, strict=True) if lost]
            if not lost_jobs:
                continue
            # An entry acknowledged before the look had its outcome stored with it:
            # read every outcome up to now before calling any entry lost.
            while self._read_outcomes(block=None) == _READ_BATCH:
                pass
            with self._lock:
                lost_jobs = [d for d in lost_jobs if d[0] in self._pending]
            for job_id, stream, entry_id in lost_jobs:
                error = JobVanished(
                    f"job {job_id} vanished from Redis: its entry {entry_id} is neither in "
                    f"{stream} nor held by a worker, and no outcome came (did Redis restart "
                    "without persistence?)"
                )
                self._settle(job_id, False, error, 0)
            if lost_jobs:
                logger.error("%d jobs vanished from Redis: their handles fail", len(lost_jobs))

    def _due_for_a_look(self) -> list[tuple[int, str, str]]:
        now = time.monotonic()
        due: list[tuple[int, str, str]] = []
        with self._lock:
            for job_id, (stream, entry_id, when) in self._placed.items():
                if when > now or len(due) == _CHECK_BATCH:
                    break
                due.append((job_id, stream, entry_id))
            for job_id, _, _ in due:
                del self._placed[job_id]
        return due

    def _look_again(self, jobs: list[tuple[int, str, str]]) -> None:
        """Put jobs still unsettled back, to be looked at one timeout from now."""
        when = time.monotonic() + self._visibility
        with self._lock:
            for job_id, stream, entry_id in jobs:
                if job_id in self._pending:
                    self._placed[job_id] = (stream, entry_id, when)

    def _on_outcome(self, payload: bytes | None) -> None:
        try:
            job_id, ok, value, _worker, attempts = decode_outcome(payload or b"")
        except ValueError:
            logger.warning("ignored a malformed outcome on %s", self._results)
            return
        if not ok:
            value = remote_error(value)
        self._settle(job_id, ok, value, attempts)

    def _settle(self, job_id: int, ok: bool, value: Any, attempts: int) -> None:
        with self._lock:
            handle = self._pending.pop(job_id, None)
            self._placed.pop(job_id, None)
        if handle is None:
            self.duplicates += 1  # at-least-once: the job ran again after a worker died
            return
        if ok:
            self.succeeded += 1
        else:
            self.failed += 1
        self._slots.release()
        # The remote worker is known by name, not index: no worker, no start time.
        status = JobStatus.SUCCEEDED if ok else JobStatus.FAILED
        handle._complete(-1, status, value, None, perf_counter(), attempts)

    def stats(self) -> RemoteStats:
        """Counts so far. After :meth:`join`, published = succeeded + failed."""
        return RemoteStats(
            published=self.published,
            succeeded=self.succeeded,
            failed=self.failed,
            duplicates=self.duplicates,
            pending=len(self._pending),
        )

    # -- shutdown ----------------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Jobs submitted whose outcome has not arrived."""
        return len(self._pending)

    def close(self) -> None:
        """Take no more jobs (those submitted still run). Idempotent."""
        with self._wake:
            self._closed = True
            self._wake.notify()

    def join(self, timeout: float | None = None) -> bool:
        """Close, then wait for every outcome; False if some are missing after ``timeout``."""
        self.close()
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._pending:
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        return True

    def shutdown(self, wait: bool = True, timeout: float | None = None) -> None:
        """Close, wait for the outcomes if ``wait``, stop the threads, drop the results stream.

        Handles still unsettled then fail with ``TransportError``: their jobs
        may yet run on a worker, but their outcomes will not be read. Idempotent.
        """
        if wait:
            self.join(timeout)
        self.close()
        self._stopping.set()
        with self._lock:
            self._outbox.clear()  # never published: nobody will run them
            left = list(self._pending)
        for job_id in left:
            self._settle(
                job_id, False, TransportError("dispatcher shut down before the outcome"), 0
            )
        self._flusher.join()
        self._listener.join()
        try:
            self._transport.drop_outcomes(self._results)
        except TransportError:
            logger.warning("could not delete %s", self._results)
        self._transport.close()

    def __enter__(self) -> RedisDispatcher:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.shutdown(wait=exc_type is None)
