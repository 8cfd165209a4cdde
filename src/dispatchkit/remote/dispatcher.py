"""A dispatcher that publishes jobs to Redis instead of running them.

    submit/map/dispatch ──encode──▶ Link outbox ──flusher──▶ job streams
    handles / map rows / counts ◀──listener── results stream ◀── workers

The numbering and the count of how jobs ended are the core's
(:class:`~dispatchkit.core.Ledger`), so are the ``map`` window and its rows
(:class:`~dispatchkit.core.MapWindow`, :func:`~dispatchkit.core.map_result`);
:mod:`._link` does the I/O. ``submit`` returns the same
:class:`~dispatchkit.JobHandle` as the local dispatchers; its outcome arrives
from whichever worker ran the job.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Coroutine
from time import perf_counter
from types import TracebackType
from typing import Any, Self, TypeVar, overload

from dispatchkit._durations import check_seconds
from dispatchkit.core import (
    shutdown_plan,
)
from dispatchkit.job import Job, JobHandle
from dispatchkit.registry import job_name
from dispatchkit.strategies import Strategy, parse_strategy
from dispatchkit.transports._redis_keys import DEFAULT_NAMESPACE
from dispatchkit.transports.base import Transport

from ._bulk import RemoteBulk
from ._connect import redis_transport
from ._link import Link
from .outcomes import RemoteStats, Waiting
from .worker import DEFAULT_PARTITIONS

__all__ = ["RedisDispatcher", "RemoteStats"]

R = TypeVar("R")

#: Seconds a connection or a reply from Redis may take before the call fails as
#: unreachable (a blocking read waits 0.2 s).
_REPLY_TIMEOUT = 10.0


def _remote(*args: Any, **kwargs: Any) -> Any:  # the local stand-in of every remote job
    raise RuntimeError("a remote job does not run locally")


class RedisDispatcher(RemoteBulk):
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
        capacity: unfinished stream entries at most (a chunk is one); submitting
            waits for room beyond. For ``dispatch(forget=True)``, whose entries
            send no outcome back: entries in their stream at most.
        put_timeout: seconds a submit waits for room before ``QueueFull``
            (None: as long as it takes).
        worker_wait: seconds to wait for a registered worker (round_robin and
            batch cannot place a job without one) before failing the jobs.
        visibility_timeout: seconds after which a job whose entry is gone from
            Redis (neither queued, nor held by a worker, nor answered) fails with
            ``JobVanished`` (as given to the workers).
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
        visibility = check_seconds("visibility_timeout", visibility_timeout)
        if capacity < 1 or partitions < 1:
            raise ValueError("capacity and partitions must be at least 1")
        self._strategy = parse_strategy(strategy, block=block)
        self.name = secrets.token_hex(6)
        if transport is None:
            # Bounded waits: a Redis that hangs must not hang the listener (and shutdown).
            transport = redis_transport(url, queue, namespace, "", _REPLY_TIMEOUT)
        elif url is not None or (queue is not None and queue != transport.keys.queue):
            raise ValueError("give either a Redis URL and a queue, or a transport of that queue")
        transport.ping()
        self.keys = transport.keys
        self._results = self.keys.results(self.name)
        self._put_timeout = put_timeout
        self._slots = threading.BoundedSemaphore(capacity)
        self._open_ledger(threading.Lock())
        self._closed = False
        self.started_at = perf_counter()
        self._link = Link(
            transport, self._results, self._strategy, partitions=partitions,
            worker_wait=worker_wait, visibility=visibility, capacity=capacity,
            freed=self._slots.release,
        )  # fmt: skip

    @property
    def strategy(self) -> Strategy:
        return self._strategy

    def __repr__(self) -> str:
        return f"<RedisDispatcher {self.keys.prefix} {self._strategy.name} pending={self.pending}>"

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
        return self._submit_one(job_name(fn), Job(_remote, args, kwargs))

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
        return self._submit_one(job.name or job_name(job.fn), job)

    def _submit_one(self, name: str, job: Job[Any]) -> JobHandle[Any]:
        """Publish one job as the registered job ``name``."""
        self._check_open()
        seq = self._take_seqs(1)
        handle: JobHandle[Any] = JobHandle(seq, _remote, (), {}, name)
        entry = Waiting([seq], False, perf_counter(), handle=handle)
        self._publish(entry, name, job.args, job.kwargs, job.key, job.timeout, job.retry)
        return handle

    # -- accounting and lifecycle ------------------------------------------------------------

    def stats(self) -> RemoteStats:
        """Counts so far, a job at a time (exact after :meth:`join` or :meth:`stop`:
        submitted = succeeded + failed + cancelled + forgotten)."""
        with self._lock:
            submitted = self._next_seq - self._rejected
        link = self._link
        with link.lock:
            ended = (link.succeeded, link.failed, link.cancelled)
            counts = (link.published, link.duplicates, link.forgotten)
            return RemoteStats(submitted, *ended, (), *counts)

    def close(self) -> None:
        """Take no more jobs (those submitted still run). Idempotent."""
        with self._link.lock:
            self._closed = True

    def join(self, timeout: float | None = None) -> bool:
        """Close, then wait for every outcome; False if some are missing after ``timeout``.

        Once every outcome is in, the dispatcher's threads end and its results
        stream is deleted.
        """
        self.close()
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._link.waiting:
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        self._link.release()
        return True

    def stop(self, cancel: bool = True, timeout: float | None = None) -> RemoteStats:
        """Close and stop; returns the final stats. Idempotent.

        A published job cannot be recalled: it runs on a worker whatever happens
        here. With ``cancel``, every job not yet published is dropped and every
        handle, ``map`` row or ``dispatch`` job still waiting for its outcome ends
        CANCELLED (``JobCancelled``) at once: its outcome, if it comes, is not
        read. Without ``cancel``, outcomes are waited for up to ``timeout``
        seconds (None: all of them) first, and only what is left is cancelled.
        """
        self.close()
        if cancel or not self.join(timeout):
            self._link.cancel_waiting("cancelled by stop(): its outcome is not waited for")
            self._link.release()
        return self.stats()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """``concurrent.futures.Executor.shutdown``. Idempotent.

        ``wait`` (and no ``cancel_futures``) waits for every outcome, as
        :meth:`join`; otherwise it is :meth:`stop`: the dispatcher's threads
        read outcomes, so without waiting what still waits is cancelled. For a
        bounded wait, ``join(timeout)`` first (or ``stop(cancel=False, timeout=...)``).
        """
        how, _ = shutdown_plan(wait, cancel_futures)
        if how == "join":
            self.join()
        else:
            self.stop(cancel=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.shutdown(wait=exc_type is None)
