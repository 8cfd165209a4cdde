"""Drop-ins for ``concurrent.futures``: change the import, keep the code.

    from concurrent.futures import ThreadPoolExecutor    # before
    from dispatchkit.futures import ThreadPoolExecutor   # after

:class:`ThreadPoolExecutor` and :class:`ProcessPoolExecutor` take the stdlib's
constructor arguments with the stdlib's defaults (worker counts included) and
are :class:`~dispatchkit.Dispatcher`\\ s, so ``concurrent.futures.Executor``\\ s:
``submit`` returns a ``concurrent.futures.Future``, ``map`` takes several
iterables, ``timeout``, ``chunksize`` and ``buffersize``, ``shutdown`` takes
``cancel_futures``. dispatchkit's own settings (``strategy``, ``chunk``,
``queue_size``, ``job_timeout``, ``retry``) are keyword-only extras. Where the
behaviour differs (bounded queues, a failing initializer, a dead process), the
README's table "differences from concurrent.futures" says how.

The stdlib's module-level functions and names are re-exported, so the whole
import can switch: ``from dispatchkit import futures as cf``.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import os
from collections.abc import Callable
from concurrent.futures import (
    ALL_COMPLETED,
    FIRST_COMPLETED,
    FIRST_EXCEPTION,
    CancelledError,
    Executor,
    Future,
    InvalidStateError,
    TimeoutError,
    as_completed,
    wait,
)
from typing import TYPE_CHECKING, Any, Unpack

from .dispatcher import Dispatcher
from .retry import RetryPolicy
from .settings import PoolOptions, check_options

if TYPE_CHECKING:
    import multiprocessing.context


__all__ = [
    "ALL_COMPLETED",
    "FIRST_COMPLETED",
    "FIRST_EXCEPTION",
    "CancelledError",
    "Executor",
    "Future",
    "InvalidStateError",
    "ProcessPoolExecutor",
    "ThreadPoolExecutor",
    "TimeoutError",
    "as_completed",
    "wait",
]

# Numbers unnamed thread pools as the stdlib does: ThreadPoolExecutor-0, -1, ...
_pool_numbers = itertools.count().__next__


def _checked_pool(
    max_workers: int | None, default: int, initializer: Callable[..., object] | None
) -> int:
    """The worker count of a pool, checked with its initializer as the stdlib checks them.

    Raises:
        ValueError: ``max_workers`` under 1 (the stdlib's message).
        TypeError: ``initializer`` is not callable (the stdlib's message).
    """
    if max_workers is not None and max_workers <= 0:
        raise ValueError("max_workers must be greater than 0")
    if initializer is not None and not callable(initializer):
        raise TypeError("initializer must be a callable")
    return default if max_workers is None else max_workers


class ThreadPoolExecutor(Dispatcher, concurrent.futures.ThreadPoolExecutor):
    """``concurrent.futures.ThreadPoolExecutor``, run by dispatchkit's thread workers.

    A subclass of the stdlib class too (whose ``__init__`` is never run: every
    method it has is dispatchkit's), so that code that insists on one, such as
    asyncio's ``loop.set_default_executor``, takes it.

    Args:
        max_workers: worker threads (default ``min(32, os.cpu_count() + 4)``, as
            in the stdlib).
        thread_name_prefix: the threads are named ``<prefix>_<n>``; by default
            the prefix is ``ThreadPoolExecutor-<k>``, as in the stdlib.
        initializer: called as ``initializer(*initargs)`` once in each worker
            thread before it runs a job.
        initargs: its arguments.
        strategy, chunk, queue_size, job_timeout, retry: as for
            :class:`~dispatchkit.Dispatcher`.

    Raises:
        ValueError: ``max_workers`` under 1, or an invalid dispatchkit setting.
        TypeError: ``initializer`` is not callable.
        WorkerStartError: the initializer raised in a worker thread (the cause
            is its exception); the threads already started are stopped.
    """

    def __init__(
        self,
        max_workers: int | None = None,
        thread_name_prefix: str = "",
        initializer: Callable[..., object] | None = None,
        initargs: tuple[Any, ...] = (),
        *,
        retry: RetryPolicy | None = None,
        **options: Unpack[PoolOptions],
    ) -> None:
        workers = _checked_pool(max_workers, min(32, (os.cpu_count() or 1) + 4), initializer)
        check_options("ThreadPoolExecutor", options, PoolOptions.__optional_keys__)
        prefix = thread_name_prefix or f"ThreadPoolExecutor-{_pool_numbers()}"
        #: As in the stdlib, for code that reads it.
        self._max_workers = workers
        self._thread_name_prefix = prefix
        super().__init__(
            workers,
            retry=retry,
            initializer=initializer,
            initargs=initargs,
            # The pool replaces {index}: the stdlib's "<prefix>_<n>".
            name=prefix.replace("{", "{{").replace("}", "}}") + "_{index}",
            **options,
        )


class ProcessPoolExecutor(Dispatcher, concurrent.futures.ProcessPoolExecutor):
    """``concurrent.futures.ProcessPoolExecutor``, run by dispatchkit's worker processes.

    A subclass of the stdlib class too, as :class:`ThreadPoolExecutor` is.

    Args:
        max_workers: worker processes (default ``os.cpu_count()``, as in the stdlib).
        mp_context: a multiprocessing context; only its start method is used
            (default: dispatchkit's, ``forkserver``).
        initializer: called as ``initializer(*initargs)`` in each new worker process.
        initargs: its arguments.
        max_tasks_per_child: jobs a worker process runs before a new one
            replaces it (None: it lives as long as the pool).
        strategy, chunk, queue_size, job_timeout, retry: as for
            :class:`~dispatchkit.Dispatcher`.

    Raises:
        ValueError: ``max_workers`` or ``max_tasks_per_child`` under 1,
            ``max_tasks_per_child`` with the ``fork`` start method, or an
            invalid dispatchkit setting.
        TypeError: ``initializer`` is not callable, or ``max_tasks_per_child``
            is not an int.
    """

    def __init__(
        self,
        max_workers: int | None = None,
        mp_context: multiprocessing.context.BaseContext | None = None,
        initializer: Callable[..., object] | None = None,
        initargs: tuple[Any, ...] = (),
        *,
        max_tasks_per_child: int | None = None,
        retry: RetryPolicy | None = None,
        **options: Unpack[PoolOptions],
    ) -> None:
        workers = _checked_pool(max_workers, os.cpu_count() or 1, initializer)
        check_options("ProcessPoolExecutor", options, PoolOptions.__optional_keys__)
        start_method = None if mp_context is None else mp_context.get_start_method()
        if max_tasks_per_child is not None:
            if isinstance(max_tasks_per_child, bool) or not isinstance(max_tasks_per_child, int):
                raise TypeError("max_tasks_per_child must be an integer")
            if max_tasks_per_child <= 0:
                raise ValueError("max_tasks_per_child must be >= 1")
            if start_method == "fork":
                raise ValueError(
                    "max_tasks_per_child is incompatible with the 'fork' "
                    "multiprocessing start method"
                )
        #: As in the stdlib, for code that reads it.
        self._max_workers = workers
        super().__init__(
            workers,
            executor="process",
            retry=retry,
            start_method=start_method,
            initializer=initializer,
            initargs=initargs,
            max_jobs_per_worker=max_tasks_per_child,
            name="ProcessPoolExecutor",
            **options,
        )
