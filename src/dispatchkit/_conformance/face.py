"""What a conformance target is: a factory of front ends behind one uniform face.

A :class:`Target` opens a :class:`FrontEnd` with given workers, strategy and
chunk settings; every check talks to that face only, so one check runs on
every front end and worker kind. A target also declares its
:class:`Capabilities`: where a promise does not apply to a kind by design (a
remote worker is known by no index, a published job cannot be recalled), the
checks adapt to what the target declares.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from dispatchkit.job import Outcome

__all__ = ["Capabilities", "Counts", "FrontEnd", "Target"]

#: Every strategy name a target can be opened with.
STRATEGIES = ("auto", "round_robin", "batch", "pull", "key")


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a target's kind promises, where kinds differ by design.

    Attributes:
        identity: how to tell which worker ran a job: ``"index"`` (the
            outcome's ``worker`` is the index the strategy names), ``"pid"``
            (the ``where`` job's pid, and runner thread name, tell the workers
            apart; assignment is checked up to a renaming of the workers), or
            ``"none"`` (workers cannot be told apart: placement is not checked).
        recall: a handle can cancel its job while the job is still queued
            (False where a submitted job leaves the process at once, as a
            published Redis entry does: ``cancel`` returns False, the job runs).
        key_pins_worker: all of one key's jobs run on one worker (False where a
            key's partition may move between workers when membership changes;
            its order is still kept).
        async_jobs: jobs that must wait without blocking are coroutines (the
            workers are tasks on one event loop).
        operations: what the accounting mix may do with this target, of
            ``submit``, ``map``, ``map_outcomes`` (``map(outcomes=True)``),
            ``dispatch``, ``cancel`` and ``stop``. An
            operation a front end lacks is left out here *and* checked on its own
            (where it fails, marked as an expected failure), so the accounting
            invariant is still checked over everything else.
        chunk: the chunk sizes the accounting mix may use (a front end that
            counts a chunk as one job gets ``(1,)``, and the chunk check on its own).
        fixed_workers: the number of workers, if the target does not choose it
            per front end (remote workers started once for a target).
    """

    identity: Literal["index", "pid", "none"] = "index"
    recall: bool = True
    key_pins_worker: bool = True
    async_jobs: bool = False
    operations: frozenset[str] = frozenset(
        {"submit", "map", "map_outcomes", "dispatch", "cancel", "stop"}
    )
    chunk: tuple[int, ...] = (1, 2, 3, 7)
    fixed_workers: int | None = None


@dataclass(frozen=True, slots=True)
class Counts:
    """A front end's counters, in one shape for every kind.

    Attributes:
        submitted, succeeded, failed, cancelled: totals so far.
        worker_jobs: jobs finished by each worker (None: the kind does not say).
    """

    submitted: int
    succeeded: int
    failed: int
    cancelled: int
    worker_jobs: tuple[int, ...] | None = None

    @property
    def finished(self) -> int:
        return self.succeeded + self.failed + self.cancelled


class FrontEnd(Protocol):
    """One dispatcher, whatever its kind, driven synchronously.

    Every method does what the method of the same name does on ``Dispatcher``;
    ``map`` returns the whole list (or raises the error it met). The options of
    ``map`` and ``dispatch`` are declared here once: a front end may take them
    as ``**options`` and hand its dispatcher those a check gave.
    """

    @property
    def workers(self) -> int: ...
    def submit(self, fn: Callable[..., Any], /, *args: Any, key: Hashable = None) -> Any: ...
    def outcome(self, handle: Any, timeout: float = 30) -> Outcome[Any]: ...
    def result(self, handle: Any, timeout: float = 30) -> Any: ...
    def cancel(self, handle: Any) -> bool: ...
    def map(
        self,
        fn: Callable[..., Any],
        items: Iterable[Any],
        *,
        ordered: bool = True,
        outcomes: bool = False,
        star: bool = False,
        key: Callable[[Any], Hashable] | None = None,
        window: int | None = None,
    ) -> list[Any]: ...
    def dispatch(
        self,
        fn: Callable[..., Any],
        items: Iterable[Any],
        *,
        key: Callable[[Any], Hashable] | None = None,
    ) -> int: ...
    def counts(self) -> Counts: ...
    def close(self) -> None: ...
    def join(self) -> None: ...
    def stop(self, cancel: bool = True) -> Counts: ...
    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None: ...


class Target(Protocol):
    """A factory of front ends of one kind (see :mod:`dispatchkit.testing`)."""

    name: str
    capabilities: Capabilities

    def open(
        self, workers: int, *, strategy: str, chunk: int = 1, block: int = 4, steal: bool = True
    ) -> AbstractContextManager[FrontEnd]:
        """A fresh front end; leaving the block drains and releases it. ``steal=False``:
        every job runs on the worker its strategy names (where idle workers steal).

        Raises:
            ValueError: an invalid setting.
        """
        ...
