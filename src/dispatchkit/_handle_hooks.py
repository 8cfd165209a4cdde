"""How a job handle tells whoever waits that its job ended: hooks, and the stdlib's view.

A :class:`~dispatchkit.job.JobHandle` is a :class:`HookedFuture`. Anything
waiting on it (``result()``, callbacks, :func:`~dispatchkit.wait`,
:func:`~dispatchkit.as_completed`) registers a *hook* under one module-wide
lock, taken only when there is something to wake; the worker that ends the job
fires the hooks, if there are any.

How the stdlib's module-level ``wait``/``as_completed`` see a handle: they
take ``f._condition``, read ``f._state`` and append to ``f._waiters``. The
first read of ``_condition`` creates the condition and the waiter list and
installs a hook (:func:`_publish`) that, under that condition, marks the handle
*published* and tells the stdlib waiters. Until it is published, ``_state``
says the job runs, even if the worker has already finished it: the stdlib thus
sees the job end under the condition it holds, never between its look at
``_state`` and its append to ``_waiters``, which is the guarantee its own
Futures give by changing state under their condition.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import _base as _futures_base
from typing import Any, TypeVar

from .core.status import JobStatus

__all__ = ["HOOKS_LOCK", "HookedFuture"]

R = TypeVar("R")

_PENDING, _RUNNING = JobStatus.PENDING, JobStatus.RUNNING
_SUCCEEDED, _FAILED, _CANCELLED = JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED

# The states of a stdlib Future, as its module-level wait/as_completed read them.
_F_PENDING, _F_RUNNING = _futures_base.PENDING, _futures_base.RUNNING
_F_CANCELLED, _F_FINISHED = _futures_base.CANCELLED_AND_NOTIFIED, _futures_base.FINISHED

_LOGGER = logging.getLogger("dispatchkit.job")

#: Guards the hook lists of every handle. Taken only to attach a hook, and by a
#: worker finishing a job that has hooks: never on the plain submit/run path.
HOOKS_LOCK = threading.Lock()


class HookedFuture(Future[R]):
    """A ``concurrent.futures.Future`` whose waiters hang hooks on it.

    The subclass keeps the job's state in ``_status`` (a :class:`JobStatus`)
    and fires the hooks (:meth:`_fire_hooks`) when ``_hooks`` is not None
    after it ends the job.
    """

    __slots__ = ("_hooks",)

    job_id: int
    _status: JobStatus
    _hooks: list[Callable[[Any], object]] | None

    def add_done_callback(self, fn: Callable[[Any], object]) -> None:
        """Call ``fn(handle)`` when the job finishes (at once if it has).

        The callback runs in the worker thread that finished the job; an
        exception it raises is logged and ignored, as in ``concurrent.futures``.
        """
        if not self._add_hook(fn):
            _call_hook(fn, self)

    # -- what the stdlib's wait() and as_completed() reach into -------------

    @property
    def _condition(self) -> threading.Condition:  # type: ignore[override]
        """This handle's condition, made on first use (only the stdlib's wait uses it)."""
        try:
            return self.__dict__["_cond"]  # type: ignore[no-any-return]
        except KeyError:
            pass
        with HOOKS_LOCK:
            cond: threading.Condition | None = self.__dict__.get("_cond")
            if cond is not None:
                return cond
            cond = threading.Condition()
            # Kept in the instance dict, not in slots: a handle nobody waits on
            # through the stdlib pays not even the room for them.
            self.__dict__["_fwaiters"] = []
            self.__dict__["_published"] = False
            self.__dict__["_cond"] = cond
        if not self._add_hook(_publish):
            _publish(self)
        return cond

    @property
    def _waiters(self) -> list[Any]:  # type: ignore[override]
        """The stdlib waiters (``concurrent.futures._base._Waiter``) of this handle."""
        try:
            return self.__dict__["_fwaiters"]  # type: ignore[no-any-return]
        except KeyError:
            self._condition  # noqa: B018  (makes the list)
            return self.__dict__["_fwaiters"]  # type: ignore[no-any-return]

    @property
    def _state(self) -> str:  # type: ignore[override]
        """The state as a stdlib Future names it; finished only once published."""
        status = self._status
        published = self.__dict__.get("_published")
        if published is None:  # nobody waits through the stdlib: the status is the truth
            published = status is not _PENDING and status is not _RUNNING
        if published:
            return _F_CANCELLED if status is _CANCELLED else _F_FINISHED
        return _F_PENDING if status is _PENDING else _F_RUNNING

    # -- hooks ---------------------------------------------------------------

    def _add_hook(self, hook: Callable[[Any], object]) -> bool:
        """Attach a hook; False if the job has already finished (call it yourself)."""
        with HOOKS_LOCK:
            if self._status is not _PENDING and self._status is not _RUNNING:
                return False
            if self._hooks is None:
                self._hooks = [hook]
            else:
                self._hooks.append(hook)
        # The worker may have finished the job between our check and our
        # append and seen no hooks: whoever takes the list under the lock fires it.
        if self._status is not _PENDING and self._status is not _RUNNING:
            self._fire_hooks()
        return True

    def _fire_hooks(self) -> None:
        with HOOKS_LOCK:
            hooks, self._hooks = self._hooks, None
        for hook in hooks or ():
            _call_hook(hook, self)

    def _wait(self, timeout: float | None) -> None:
        if self._status is not _PENDING and self._status is not _RUNNING:
            return
        event = threading.Event()
        if self._add_hook(lambda _handle: event.set()) and not event.wait(timeout):
            raise TimeoutError(f"job {self.job_id} did not finish within {timeout} s")


def _publish(handle: HookedFuture[Any]) -> None:
    """Show the finished job to the stdlib's waiters, under the handle's condition."""
    cond: threading.Condition = handle.__dict__["_cond"]
    with cond:
        handle.__dict__["_published"] = True
        status = handle._status
        for waiter in handle.__dict__["_fwaiters"]:
            if status is _SUCCEEDED:
                waiter.add_result(handle)
            elif status is _FAILED:
                waiter.add_exception(handle)
            else:
                waiter.add_cancelled(handle)
        cond.notify_all()


def _call_hook(hook: Callable[[Any], object], handle: HookedFuture[Any]) -> None:
    try:
        hook(handle)
    except Exception:
        _LOGGER.exception("a done callback of job %s raised", handle.job_id)
