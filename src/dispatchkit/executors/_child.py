"""The main loop of a worker process, and the wire format it speaks.

Everything crossing the pipe is pickled once per message (a chunk of jobs),
not once per job. Parent to child: a :class:`Task`, ``(RESEND, n)``, or
``None`` to stop. Tasks are numbered from 0 in the order they arrive; the
parent may queue the next task before the current one ends, so the worker
reads it as soon as it has replied. Child to parent, first ``("ready",)`` once
the worker is set up (its initializer has run), or ``("broken", error)`` if the
initializer raised (the worker then exits); then, per task, in order:

* without a timeout, one ``("done", results)`` when the whole task has run;
* with a timeout, ``("start", k, t)`` before job ``k`` and ``("one", k, sealed)``
  after it, so that the parent can enforce the deadline and, if it kills the
  process, loses only the job that was running; then ``("done", None)``;
* for fire-and-forget chunks, one ``("summary", ok, failures, started,
  finished)``: counts instead of a result per job.

A result is ``(ok, value_or_error, started, finished)``; an error travels with
its formatted traceback, and one that cannot be pickled is replaced by a
:class:`RemoteError` carrying its text.

Some values pickle here but cannot be unpickled in the parent (a class from a
module only the worker imported, a ``__reduce__`` whose loader raises). So
that such a value fails its own job only, a result can travel *sealed*: its
value pickled on its own, beside the type's name (see :func:`seal`). The parent
decodes every message with :func:`decode`; when a whole message fails to load,
it sends ``(RESEND, n)`` for task ``n`` and the worker, once it reads that
(after the task queued behind, if any), sends ``("resent", n, reply)``: the
same reply again with every result sealed (``"sealed"`` for ``"done"``,
``"sealed-summary"`` for ``"summary"``). A reply whose whole pickle fails
here goes sealed at once, and a streamed ``"one"`` is always sealed (it is one
job anyway).
"""

from __future__ import annotations

import contextlib
import pickle
import signal
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from operator import length_hint
from time import perf_counter
from typing import Any, Final

from dispatchkit.errors import RemoteError, RemoteTraceback

__all__ = [
    "CALL",
    "EACH",
    "RESEND",
    "RemoteError",
    "RemoteTraceback",
    "Task",
    "child_main",
    "decode",
]

#: Task kinds: one call ``fn(*args, **kwargs)``, or ``fn(item)`` per item.
CALL, EACH = "call", "each"

#: Parent to child, as ``(RESEND, n)``: "the reply of task n could not be loaded
#: here: send it again sealed".
RESEND: Final = "resend"

_READY: Final = pickle.dumps(("ready",))

#: One result, as the parent uses it: ``(ok, value or exception, started, finished)``.
Result = tuple[bool, Any, float, float]

#: A result whose value is pickled on its own: ``(ok, pickled value or error,
#: what it is, started, finished, traceback text)``.
Sealed = tuple[bool, bytes, str, float, float, str]


@dataclass(frozen=True, slots=True)
class Task:
    kind: str
    fn: Callable[..., Any]
    #: CALL: ``[(args, kwargs)]``; EACH: the items.
    items: Sequence[Any]
    star: bool = False
    #: Send each job's result as it finishes (needed to enforce a timeout).
    stream: bool = False
    #: Drop the values (fire-and-forget jobs): only success or failure returns.
    keep_values: bool = True
    #: Return counts and failures only: ``("summary", ok, [(position, error)],
    #: started, finished)``, for fire-and-forget chunks.
    summary: bool = False


def _portable_error(exc: BaseException) -> tuple[BaseException, str]:
    text = "".join(traceback.format_exception(exc))
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        exc = RemoteError(f"{type(exc).__qualname__}: {exc}")
    else:
        # Drops the frames (the error may be kept for a RESEND); an exception
        # type that refuses attributes keeps them, and fails its job alone.
        with contextlib.suppress(Exception):
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
    fn, items, failures = task.fn, task.items, []
    total = len(items)
    it = iter(items)
    started = perf_counter()
    # The loop keeps no count of its own (a few nanoseconds a job, for jobs that may
    # take less than a hundred): a failing job's position is read from how much of
    # the iterator is left, and the loop goes on after it.
    while True:
        try:
            for item in it:
                fn(item)
            break
        except BaseException as exc:  # a failing job never stops its worker
            failures.append((total - length_hint(it) - 1, _portable_error(exc)))
    return "summary", total - len(failures), failures, started, perf_counter()


def _qualified_name(obj: object) -> str:
    kind = type(obj)
    return f"{kind.__module__}.{kind.__qualname__}"


def seal(result: Result) -> Sealed:
    """Pickle a result's value (or error) on its own, so that it fails alone."""
    ok, value, started, finished = result
    obj, text = (value, "") if ok else value
    try:
        data = pickle.dumps(obj, pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        # Only a value can fail here: errors were made portable when raised.
        error = TypeError(f"the job's result cannot be sent back: {exc}")
        return False, pickle.dumps(error), "TypeError", started, finished, ""
    what = _qualified_name(obj) if ok else f"{_qualified_name(obj)}: {obj}"
    return ok, data, what, started, finished, text


def _sealed(reply: tuple[Any, ...]) -> tuple[Any, ...]:
    """The same reply with every result sealed."""
    if reply[0] == "summary":
        _, ok, failures, started, finished = reply
        sealed = [(position, seal((False, error, 0.0, 0.0))) for position, error in failures]
        return "sealed-summary", ok, sealed, started, finished
    return "sealed", [seal(result) for result in reply[1]]


def _dumps(reply: tuple[Any, ...]) -> bytes:
    try:
        return pickle.dumps(reply, pickle.HIGHEST_PROTOCOL)
    except Exception:
        # A value that cannot be pickled: seal each result, so that it fails alone.
        return pickle.dumps(_sealed(reply), pickle.HIGHEST_PROTOCOL)


# -- in the parent -------------------------------------------------------------


def _unseal(sealed: Sealed) -> Result:
    ok, data, what, started, finished, text = sealed
    try:
        obj = pickle.loads(data)
    except BaseException as exc:  # the loader ran the value's code: anything may come out
        reason = f"{type(exc).__name__}: {exc}"
        if ok:
            obj = TypeError(
                f"the job's result, a {what}, cannot be loaded in the dispatcher's process: "
                f"{reason}"
            )
            obj.__cause__ = exc
        else:
            obj = RemoteError(
                f"{what} (the exception could not be loaded in the dispatcher's process: {reason})"
            )
        ok = False
    if not ok:
        _attach_traceback(obj, text)
    return ok, obj, started, finished


def _attach_traceback(error: BaseException, text: str) -> None:
    if text:
        # An exception type that refuses attributes goes without it.
        with contextlib.suppress(Exception):
            error.__cause__ = RemoteTraceback(text)


def _unwrap(result: Result) -> Result:
    ok, value, started, finished = result
    if ok:
        return result
    error, text = value
    _attach_traceback(error, text)
    return False, error, started, finished


def decode(reply: tuple[Any, ...]) -> tuple[Any, ...]:
    """A loaded reply with its results ready to use: errors carry their remote traceback.

    ``"sealed"`` becomes ``"done"`` and ``"sealed-summary"`` becomes ``"summary"``;
    a value that cannot be loaded becomes the failure of its job alone.
    """
    kind = reply[0]
    if kind == "one":
        return "one", reply[1], _unseal(reply[2])
    if kind in {"done", "sealed"}:
        load = _unwrap if kind == "done" else _unseal
        return "done", None if reply[1] is None else [load(r) for r in reply[1]]
    if kind == "summary":
        _, ok, failures, started, finished = reply
        errors = [(position, _unwrap((False, error, 0.0, 0.0))[1]) for position, error in failures]
        return "summary", ok, errors, started, finished
    if kind == "broken":  # the initializer's error
        return "broken", _unwrap((False, reply[1], 0.0, 0.0))[1]
    if kind == "sealed-summary":
        _, ok, failures, started, finished = reply
        errors = [(position, _unseal(sealed)[1]) for position, sealed in failures]
        return "summary", ok, errors, started, finished
    return reply  # "start", "ready"


# -- in the worker process -----------------------------------------------------


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
        try:
            initializer(*initargs)
        except BaseException as exc:  # the parent decides: it fails no job for it
            with contextlib.suppress(OSError):
                # the error was made portable: it pickles
                conn.send_bytes(pickle.dumps(("broken", _portable_error(exc))))
            return
    # Tells the parent this process can run jobs: one that dies before this
    # failed to start (its tasks never ran), it did not lose a job.
    try:
        conn.send_bytes(_READY)
    except OSError:
        return  # the parent is gone
    # Replies kept in case the parent asks for one again (RESEND), by task
    # number. The parent sends task n only once it is done with the replies of
    # tasks before n - 1, so at most two chunks' values are kept: the last
    # task's, and the one before it (its reply may be asked again while the
    # last one, queued behind it, runs).
    kept: dict[int, tuple[Any, ...]] = {}
    number = 0
    while True:
        try:
            data = conn.recv_bytes()
        except (EOFError, OSError):
            return  # the parent is gone
        message: Task | tuple[str, int] | None = pickle.loads(data)
        if message is None:
            return
        if isinstance(message, tuple):  # (RESEND, number)
            last = kept.pop(message[1], None)
            assert last is not None, "RESEND without a reply to send again"
            again = ("resent", message[1], _sealed(last))
            conn.send_bytes(pickle.dumps(again, pickle.HIGHEST_PROTOCOL))
            continue
        kept.pop(number - 2, None)
        reply = _answer(conn, message)
        if reply is not None:
            kept[number] = reply
        number += 1
        # Nothing of the task may outlive it while the worker waits for the
        # next one: its arguments are freed once it is done, as in the stdlib.
        del data, message, reply


def _answer(conn: Connection, task: Task) -> tuple[Any, ...] | None:
    """Run ``task``, send its reply, and return the reply to keep for a RESEND."""
    if task.summary:
        last = _run_summary(task)
        conn.send_bytes(_dumps(last))
        return last
    if task.stream:
        for index, item in enumerate(task.items):
            conn.send_bytes(pickle.dumps(("start", index, perf_counter())))
            one = ("one", index, seal(_run_one(task, item)))
            conn.send_bytes(pickle.dumps(one, pickle.HIGHEST_PROTOCOL))
        conn.send_bytes(pickle.dumps(("done", None)))
        return None
    done = ("done", [_run_one(task, item) for item in task.items])
    conn.send_bytes(_dumps(done))
    return done
