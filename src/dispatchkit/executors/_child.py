"""The main loop of a worker process, and the wire format it speaks.

Everything crossing the pipe is pickled once per message (a chunk of jobs),
not once per job. Parent to child: a :class:`Task`, or ``None`` to stop.
Child to parent, per task:

* without a timeout, one ``("done", results)`` when the whole task has run;
* with a timeout, ``("start", k, t)`` before job ``k`` and ``("one", k, result)``
  after it, so that the parent can enforce the deadline and, if it kills the
  process, loses only the job that was running; then ``("done", None)``;
* for fire-and-forget chunks, one ``("summary", ok, failures, started,
  finished)``: counts instead of a result per job.

A result is ``(ok, value_or_error, started, finished)``; an error travels with
its formatted traceback, and one that cannot be pickled is replaced by a
:class:`RemoteError` carrying its text.
"""

from __future__ import annotations

import pickle
import signal
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from time import perf_counter
from typing import Any

__all__ = ["CALL", "EACH", "RemoteError", "RemoteTraceback", "Task", "child_main"]

#: Task kinds: one call ``fn(*args, **kwargs)``, or ``fn(item)`` per item.
CALL, EACH = "call", "each"


@dataclass(frozen=True, slots=True)
class Task:
    kind: str
    fn: Callable[..., Any]
    #: CALL: ``[(args, kwargs)]``; EACH: the items.
    items: list[Any]
    star: bool = False
    #: Send each job's result as it finishes (needed to enforce a timeout).
    stream: bool = False
    #: Drop the values (fire-and-forget jobs): only success or failure returns.
    keep_values: bool = True
    #: Return counts and failures only: ``("summary", ok, [(position, error)],
    #: started, finished)``, for fire-and-forget chunks.
    summary: bool = False


class RemoteError(Exception):
    """Stands in for an exception that could not be pickled in the worker process."""


class RemoteTraceback(Exception):
    """The traceback of an exception raised in a worker process (set as ``__cause__``)."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return self.text


def _portable_error(exc: BaseException) -> tuple[BaseException, str]:
    text = "".join(traceback.format_exception(exc))
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        exc = RemoteError(f"{type(exc).__qualname__}: {exc}")
    else:
        exc.__traceback__ = None
        exc.__context__ = exc.__cause__ = None
    return exc, text


def _run_one(task: Task, item: Any) -> tuple[bool, Any, float, float]:
    started = perf_counter()
    try:
        if task.kind == CALL:
            args, kwargs = item
            value = task.fn(*args, **kwargs)
        else:
            value = task.fn(*item) if task.star else task.fn(item)
    except BaseException as exc:  # a failing job never stops its worker
        return False, _portable_error(exc), started, perf_counter()
    return True, value if task.keep_values else None, started, perf_counter()


def _run_summary(task: Task) -> tuple[Any, ...]:
    fn, failures = task.fn, []
    started = perf_counter()
    for position, item in enumerate(task.items):
        try:
            fn(item)
        except BaseException as exc:  # a failing job never stops its worker
            failures.append((position, _portable_error(exc)))
    return "summary", len(task.items) - len(failures), failures, started, perf_counter()


def _dumps(message: Any) -> bytes:
    try:
        return pickle.dumps(message, pickle.HIGHEST_PROTOCOL)
    except Exception:
        # A value that cannot be pickled: send an error in its place, for
        # that result only.
        kind, results = message[0], message[-1]
        if kind == "one":
            results = [results]
        fixed = []
        for result in results or ():
            try:
                pickle.dumps(result, pickle.HIGHEST_PROTOCOL)
                fixed.append(result)
            except Exception as exc:
                error = TypeError(f"the job's result cannot be sent back: {exc}")
                fixed.append((False, (error, ""), result[2], result[3]))
        if kind == "one":
            return pickle.dumps((kind, message[1], fixed[0]), pickle.HIGHEST_PROTOCOL)
        return pickle.dumps((kind, fixed), pickle.HIGHEST_PROTOCOL)


def child_main(
    conn: Connection,
    initializer: Callable[..., object] | None,
    initargs: tuple[Any, ...],
) -> None:
    """Run tasks from ``conn`` until told to stop or the parent goes away."""
    # Ctrl-C goes to the whole process group: the parent decides what to do,
    # and a job must not die half-way because of it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if initializer is not None:
        initializer(*initargs)
    while True:
        try:
            data = conn.recv_bytes()
        except (EOFError, OSError):
            return  # the parent is gone
        task: Task | None = pickle.loads(data)
        if task is None:
            return
        if task.summary:
            conn.send_bytes(_dumps(_run_summary(task)))
        elif task.stream:
            for index, item in enumerate(task.items):
                conn.send_bytes(_dumps(("start", index, perf_counter())))
                conn.send_bytes(_dumps(("one", index, _run_one(task, item))))
            conn.send_bytes(_dumps(("done", None)))
        else:
            conn.send_bytes(_dumps(("done", [_run_one(task, item) for item in task.items])))
