"""The exceptions dispatchkit raises. Every one inherits :class:`DispatchError`."""

from __future__ import annotations

from concurrent.futures import CancelledError
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .stats import DispatcherStats

__all__ = [
    "ClosedError",
    "DispatchError",
    "ExtraNotInstalled",
    "ForkedError",
    "Interrupted",
    "JobCancelled",
    "JobVanished",
    "NeedsAsyncWorker",
    "PayloadNotSendable",
    "QueueFull",
    "RemoteError",
    "RemoteJobError",
    "RemoteTraceback",
    "TimedOut",
    "TransportError",
    "TransportRejected",
    "TransportUnavailable",
    "WorkerLost",
    "WorkerStartError",
]


class DispatchError(Exception):
    """Base class of every error raised by dispatchkit itself."""


class ClosedError(DispatchError, RuntimeError):
    """The dispatcher was closed (by us): it takes no more jobs."""


class ForkedError(DispatchError, RuntimeError):
    """The dispatcher was created in another process and copied here by ``os.fork()``.

    A fork copies only the thread that called it, so the copy has no workers of its
    own (and the worker processes belong to the parent): it refuses work. Create a
    new dispatcher in the child.
    """


class QueueFull(DispatchError):
    """A bounded inbox stayed full for longer than the submit timeout.

    The job was not queued; nothing about it was counted. Retry later, raise
    the timeout, or give the dispatcher a larger ``queue_size``.
    """


class JobCancelled(DispatchError, CancelledError):
    """The job was cancelled before a worker started it.

    Raised by :meth:`JobHandle.result`. It is a ``concurrent.futures.CancelledError``
    too, so code written for ``concurrent.futures`` catches it.
    """


class WorkerLost(DispatchError):
    """The worker running the job died (a process killed, a connection gone)."""


class WorkerStartError(DispatchError, RuntimeError):
    """The operating system refused to start a worker (a thread limit, say).

    The workers started before it were stopped and joined: nothing is left running.
    """


class TimedOut(DispatchError, TimeoutError):
    """The job ran longer than its timeout and was stopped."""


class TransportError(DispatchError):
    """A transport (such as Redis) failed; the backend's error is the ``__cause__``."""


class TransportUnavailable(TransportError):
    """The transport's server cannot be reached, or its client library is not installed."""


class ExtraNotInstalled(TransportUnavailable, ImportError):
    """A transport's client library is not installed; the message says which extra to install.

    Also an ``ImportError``, which it is: code that imports the transport lazily
    catches it as such.
    """


class TransportRejected(TransportError):
    """The transport's server refused the request itself, so retrying it cannot help.

    For Redis: an error reply such as ``WRONGTYPE`` (a key of another type where a
    stream was expected), or a value that cannot be encoded. Replies that say the
    server is busy for now (``LOADING``, ``BUSY``, ``READONLY``, ``OOM``, ...) are not
    rejections: they are retried.
    """


class JobVanished(TransportError):
    """The job's entry vanished from the transport before its outcome arrived.

    Raised by a remote handle whose entry is neither queued, nor held by a worker,
    nor answered, checked once the visibility timeout has passed: for instance
    after Redis restarted without persistence. The job may or may not have run.
    """


class RemoteJobError(DispatchError):
    """A job raised on a remote worker.

    Attributes:
        type_name: the qualified name of the exception type raised remotely.
        remote_traceback: the remote traceback, as text (also the ``__cause__``).
    """

    def __init__(self, type_name: str, message: str, remote_traceback: str = "") -> None:
        super().__init__(f"{type_name}: {message}" if message else type_name)
        self.type_name = type_name
        self.remote_traceback = remote_traceback


class RemoteError(DispatchError):
    """Stands in for a job's exception that could not travel between the processes.

    Either it could not be pickled in the worker process or it could not be
    unpickled in the dispatcher's; the message names its type and says why.
    """


class RemoteTraceback(DispatchError):
    """The traceback of an exception raised in a worker process or on a remote worker.

    Set as the ``__cause__`` of the error the job's handle raises, as
    ``concurrent.futures.process`` does, so that it shows in the report.

    Attributes:
        text: the formatted traceback.
    """

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return f'\n"""\n{self.text.rstrip()}\n"""'


class NeedsAsyncWorker(DispatchError, TypeError):
    """A coroutine job reached a worker of plain functions: run it with ``--executor async``."""


class PayloadNotSendable(DispatchError, ValueError):
    """A payload that msgpack cannot carry to the workers (an integer over 64 bits, say)."""


class Interrupted(DispatchError):
    """A run was interrupted (Ctrl-C, SIGTERM); queued jobs were cancelled.

    Attributes:
        stats: the dispatcher's final counts, ``cancelled`` among them.
    """

    def __init__(self, stats: DispatcherStats) -> None:
        super().__init__(
            f"interrupted: {stats.succeeded + stats.failed} jobs ran, {stats.cancelled} cancelled"
        )
        self.stats = stats
