"""What a liaison does with one message: the tasks (rounds) it sends, and the record it keeps.

A message (a handle, a map chunk, a bulk chunk) becomes a *run*; a run hands
the liaison one *round* at a time: a pickled :class:`Task` of the jobs still to
run. When the round ends the liaison tells the run how (its reply, the death of
the process, a timeout, or that it never started), and the run says whether it
wants another round (retries, or jobs that never started); once it wants none
it records its outcomes on the handles, map results and counters.

Rounds are resumable on purpose: the liaison keeps a process's next round
queued in its pipe while the current one runs, so a run's next round may come
after another run's, and one that never started is simply handed out again.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Sequence
from time import perf_counter
from typing import Any

from dispatchkit._lanes import LanedMessage
from dispatchkit._work import BulkChunk, MapChunk, report_error
from dispatchkit.core import ResultRow, WorkerState, retry_delay
from dispatchkit.job import JobHandle, JobStatus, PolicyHandle
from dispatchkit.retry import RetryPolicy

from ._child import CALL, EACH, Result, Task

__all__ = ["EachRun", "Round", "Run", "SummaryRun", "make_run"]

#: A job's outcome as recorded: status, value or error, started, finished.
_Final = tuple[JobStatus, Any, float | None, float | None]


class Round:
    """One task for the process: its pickle, and what came back of it so far."""

    __slots__ = ("awaiting", "data", "indices", "number", "pre", "results", "run", "running")

    def __init__(
        self, run: Run, data: bytes | None, indices: Sequence[int], pre: dict[int, Result]
    ) -> None:
        self.run = run
        #: The pickled task; None when there is nothing to send (every job failed already).
        self.data = data
        #: The run's job indices, in the task's order (a range when they are all of them).
        self.indices = indices
        #: Jobs of the round that failed before it was sent (by the run's index).
        self.pre = pre
        #: Results by the task's position, as they stream in.
        self.results: dict[int, Result] = {}
        #: ``(position, started)`` of the job running, when the task streams.
        self.running: tuple[int, float] | None = None
        #: Its final reply came but cannot be loaded: asked again, sealed.
        self.awaiting = False
        #: Its number among the tasks sent to this process (for a RESEND).
        self.number = -1

    @property
    def size(self) -> int:
        """Jobs sent (what counts toward ``max_jobs_per_worker``)."""
        return len(self.indices)

    @property
    def timeout(self) -> float | None:
        return self.run.timeout


class Run:
    """One message, from its first round until its outcomes are recorded."""

    #: The message taken from the inbox (a LanedMessage's inner one).
    message: Any
    timeout: float | None = None
    #: When its next round may go (perf_counter; 0.0: at once), for retries that wait.
    due = 0.0
    #: The lane's message this run is the chunk of (``auto`` with a key), if any.
    laned: LanedMessage | None = None

    def next_round(self, stopping: bool) -> Round | None:
        """The round to send next; None when the run is over (then recorded)."""
        raise NotImplementedError

    def replied(self, round_: Round, reply: tuple[Any, ...]) -> bool:
        """The round's final reply (decoded) came: True if another round is wanted."""
        raise NotImplementedError

    def lost(self, round_: Round, error: BaseException) -> bool:
        """The process died (or was replaced) while it held the round."""
        raise NotImplementedError

    def timed_out(self, round_: Round, error: BaseException) -> bool:
        """The round's running job passed its timeout and its process was killed."""
        return self.lost(round_, error)

    def unstarted(self, round_: Round) -> bool:
        """The round never started (it waited in a pipe whose process went): send it again."""
        raise NotImplementedError

    def untouched(self) -> bool:
        """Whether none of its jobs has run or been recorded yet (it can start afresh)."""
        raise NotImplementedError

    def abandon(self, error: BaseException) -> None:
        """Its worker can run nothing more: every job not yet ended fails with ``error``."""
        raise NotImplementedError


def make_run(message: Any, state: WorkerState, job_timeout: float | None) -> Run:
    """The run of a message taken from an inbox (a LanedMessage's inner one)."""
    control = state.control
    timeout = job_timeout
    if isinstance(message, JobHandle):
        if isinstance(message, PolicyHandle):
            policy = message.retry or control.retry
            timeout = message.timeout or timeout
        else:
            policy = control.retry
        fn, args, kwargs = message.call
        return EachRun(message, state, CALL, fn, [(args, kwargs)], policy, timeout)
    items: Sequence[Any]
    if message.__class__ is tuple:
        fn, items, keep = message[0], [message[1]], False
    elif isinstance(message, BulkChunk):
        fn, items, keep = message.fn, message.items, False
    else:
        assert isinstance(message, MapChunk)
        return EachRun(
            message, state, EACH, message.fn, message.items, control.retry, timeout,
            star=message.star,
        )  # fmt: skip
    if control.retry is None and timeout is None:
        task = Task(EACH, fn, items, keep_values=False, summary=True)
        try:
            data = pickle.dumps(task, pickle.HIGHEST_PROTOCOL)
        except Exception:
            pass  # find the items that cannot be sent, one by one (the slow path)
        else:
            return SummaryRun(message, state, items, data)
    return EachRun(message, state, EACH, fn, items, control.retry, timeout, keep_values=keep)


class SummaryRun(Run):
    """Fire-and-forget jobs: the worker sends counts and failures, not a result per job."""

    def __init__(self, message: Any, state: WorkerState, items: Sequence[Any], data: bytes) -> None:
        self.message, self.state, self.items, self.data = message, state, items, data
        self.on_error = message[2] if message.__class__ is tuple else message.on_error

    def next_round(self, stopping: bool) -> Round | None:
        if stopping:
            self.state.cancelled += len(self.items)
            self._drop()
            return None
        return Round(self, self.data, range(len(self.items)), {})

    def replied(self, round_: Round, reply: tuple[Any, ...]) -> bool:
        state = self.state
        _, ok, failures, started, finished = reply
        state.succeeded += ok
        state.failed += len(failures)
        state.busy += finished - started
        if state.first_start is None or started < state.first_start:
            state.first_start = started
        for position, error in failures:
            report_error(self.items[position], error, state, self.on_error)
        self._drop(state.index, started, finished)
        return False

    def lost(self, round_: Round, error: BaseException) -> bool:
        self.abandon(error)
        return False

    def unstarted(self, round_: Round) -> bool:
        return True

    def untouched(self) -> bool:
        return True  # its one round either ended it or never started

    def abandon(self, error: BaseException) -> None:
        state = self.state
        state.failed += len(self.items)
        for item in self.items:
            report_error(item, error, state, self.on_error)
        self._drop(state.index)

    def _drop(
        self, worker: int | None = None, started: float | None = None, finished: float | None = None
    ) -> None:
        """The chunk is over: its items let go, and an adaptive ``dispatch`` told how
        long it ran (None: it did not run, or was lost)."""
        message = self.message
        if message.__class__ is not tuple:  # a BulkChunk
            message.items = []
            message._ended(worker, len(self.items), started, finished)


class EachRun(Run):
    """Jobs whose every result matters: values, timeouts, retries."""

    def __init__(
        self,
        message: Any,
        state: WorkerState,
        kind: str,
        fn: Callable[..., Any],
        items: Sequence[Any],
        policy: RetryPolicy | None,
        timeout: float | None,
        star: bool = False,
        keep_values: bool = True,
    ) -> None:
        self.message, self.state = message, state
        self.kind, self.fn, self.items = kind, fn, items
        self.policy, self.timeout, self.star, self.keep_values = policy, timeout, star, keep_values
        count = len(items)
        self.attempts = [0] * count
        self.final: list[_Final] = [(JobStatus.CANCELLED, None, None, None)] * count
        self.todo = list(range(count))
        #: When the retries in ``todo`` may go (perf_counter), 0.0 if they need no wait.
        self.due = 0.0

    def next_round(self, stopping: bool) -> Round | None:
        if not self.todo:
            return None
        if stopping:
            if self.due:
                # Stopped while waiting to retry: cancelled, no attempt used up.
                for index in self.todo:
                    if self.final[index][0] is JobStatus.FAILED:
                        self.final[index] = (JobStatus.CANCELLED, *self.final[index][1:])
            self.todo = []
            self._record()
            return None
        return self._round(self.todo)

    def _round(self, indices: list[int]) -> Round:
        task = Task(
            self.kind, self.fn, [self.items[i] for i in indices], self.star,
            self.timeout is not None, self.keep_values,
        )  # fmt: skip
        try:
            return Round(self, pickle.dumps(task, pickle.HIGHEST_PROTOCOL), indices, {})
        except Exception:
            return self._unpicklable(indices)

    def _unpicklable(self, indices: list[int]) -> Round:
        """A job that cannot be pickled fails with a clear error; its chunk mates still run."""
        now = perf_counter()
        try:
            pickle.dumps(self.fn)
        except Exception as fn_error:
            error = TypeError(f"the job function cannot be sent to a worker process: {fn_error}")
            return Round(self, None, [], dict.fromkeys(indices, (False, error, now, now)))
        pre: dict[int, Result] = {}
        sendable = []
        for index in indices:
            try:
                pickle.dumps(self.items[index])
                sendable.append(index)
            except Exception as item_error:
                text = f"the job's arguments cannot be sent to a worker process: {item_error}"
                pre[index] = (False, TypeError(text), now, now)
        if not sendable:
            return Round(self, None, [], pre)
        round_ = self._round(sendable)
        round_.pre.update(pre)
        return round_

    def replied(self, round_: Round, reply: tuple[Any, ...]) -> bool:
        results = round_.results
        for position, result in enumerate(reply[1] or ()):
            results[position] = result
        return self.absorb(round_, results, set())

    def lost(self, round_: Round, error: BaseException) -> bool:
        now = perf_counter()
        results, running, count = round_.results, round_.running, round_.size
        if round_.timeout is None or round_.awaiting:
            # Without per-job reports the whole task was in the worker's hands.
            return self.absorb(round_, dict.fromkeys(range(count), (False, error, now, now)), set())
        # Stream mode: we know which job was running; the ones after it never started.
        position = running[0] if running is not None else len(results)
        started = running[1] if running is not None else now
        if position < count:
            results[position] = (False, error, started, now)
        return self.absorb(round_, results, set(range(position + 1, count)))

    def timed_out(self, round_: Round, error: BaseException) -> bool:
        assert round_.running is not None
        position, started = round_.running
        round_.results[position] = (False, error, started, perf_counter())
        return self.absorb(round_, round_.results, set(range(position + 1, round_.size)))

    def unstarted(self, round_: Round) -> bool:
        return self.absorb(round_, {}, set(range(round_.size)))

    def untouched(self) -> bool:
        return not any(self.attempts)

    def abandon(self, error: BaseException) -> None:
        now = perf_counter()
        for index in self.todo:
            self.attempts[index] += 1
            self.final[index] = (JobStatus.FAILED, error, now, now)
        self.todo = []
        self._record()

    def absorb(self, round_: Round, results: dict[int, Result], not_started: set[int]) -> bool:
        """Count the round's results (by task position); True if another round is wanted."""
        state = self.state
        by_index = dict(round_.pre)
        waiting: set[int] = set()
        for position, index in enumerate(round_.indices):
            if position in not_started:
                waiting.add(index)
            else:
                by_index[index] = results[position]
        again: list[int] = []
        pause = 0.0
        for index in sorted({*by_index, *waiting}):
            if index in waiting:
                again.append(index)  # never ran: uses no attempt
                continue
            ok, value, started, finished = by_index[index]
            self.attempts[index] += 1
            state.busy += finished - started
            if state.first_start is None or started < state.first_start:
                state.first_start = started
            if ok:
                self.final[index] = (JobStatus.SUCCEEDED, value, started, finished)
                continue
            self.final[index] = (JobStatus.FAILED, value, started, finished)
            delay = retry_delay(self.policy, value, self.attempts[index])
            if delay is not None:
                again.append(index)
                pause = max(pause, delay)
        # The chunk's retries go back together, after the longest of their waits.
        self.todo = again
        self.due = perf_counter() + pause if again and pause else 0.0
        if again:
            return True
        self._record()
        return False

    def _record(self) -> None:
        state, message, final, attempts = self.state, self.message, self.final, self.attempts
        statuses = [status for status, *_ in final]
        state.succeeded += statuses.count(JobStatus.SUCCEEDED)
        state.failed += statuses.count(JobStatus.FAILED)
        state.cancelled += statuses.count(JobStatus.CANCELLED)
        if isinstance(message, JobHandle):
            status, value, started, finished = final[0]
            message.settle(state.index, status, value, started, finished, attempts[0])
        elif isinstance(message, MapChunk):
            rows = [
                ResultRow(
                    seq, status, value, state.index, message.submitted_at, started, finished, tries
                )
                for seq, (status, value, started, finished), tries in zip(
                    message.seqs, final, attempts, strict=True
                )
            ]
            message.items = []
            message.run.deliver(rows)
        else:
            on_error = message[2] if message.__class__ is tuple else message.on_error
            for item, (status, value, _, _) in zip(self.items, final, strict=True):
                if status is JobStatus.FAILED:
                    report_error(item, value, state, on_error)
            if message.__class__ is not tuple:  # a BulkChunk
                message.items = []
                if message.tally is not None:  # an adaptive dispatch: its span sizes the next
                    starts = [started for _, _, started, _ in final if started is not None]
                    ends = [finished for _, _, _, finished in final if finished is not None]
                    span = (min(starts), max(ends)) if starts and ends else (None, None)
                    message._ended(state.index, len(self.items), *span)
