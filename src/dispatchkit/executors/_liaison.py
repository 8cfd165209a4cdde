"""The liaison of one worker process: the thread that feeds it and records what it did.

See :mod:`dispatchkit.executors.process` for the data flow: a liaison takes one
message at a time from its inbox, sends it down the pipe as one task, waits on
the pipe and on the process's sentinel, and completes the handles, map results
and counters with what comes back (or with ``WorkerLost`` / ``TimedOut``).
"""

from __future__ import annotations

import contextlib
import logging
import pickle
import select
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from time import perf_counter
from typing import TYPE_CHECKING, Any, Final

from dispatchkit._inbox import Inbox
from dispatchkit._lanes import LanedMessage
from dispatchkit._steal import Thief
from dispatchkit._work import BulkChunk, MapChunk, report_error
from dispatchkit.core import ResultRow, WorkerState, retry_delay
from dispatchkit.errors import TimedOut, WorkerLost
from dispatchkit.job import JobHandle, JobStatus, PolicyHandle
from dispatchkit.retry import RetryPolicy

from ._child import CALL, EACH, RESEND, Result, Task, child_main, decode

if TYPE_CHECKING:
    from .process import ProcessOptions

__all__ = ["Liaison"]

logger = logging.getLogger(__name__)

#: Seconds between two looks at a worker that is running a job.
_POLL: Final = 0.2

#: RESEND, as sent down the pipe.
_RESEND_BYTES: Final = pickle.dumps(RESEND)


class _Spec:
    """A message seen as a task: what to send, and how to record the results."""

    __slots__ = ("fn", "items", "keep_values", "kind", "policy", "star", "timeout")

    def __init__(
        self,
        kind: str,
        fn: Callable[..., Any],
        items: list[Any],
        policy: RetryPolicy | None,
        timeout: float | None,
        star: bool = False,
        keep_values: bool = True,
    ) -> None:
        self.kind, self.fn, self.items = kind, fn, items
        self.policy, self.timeout, self.star, self.keep_values = policy, timeout, star, keep_values


class Liaison:
    """Feeds one worker process and records what it did."""

    def __init__(
        self,
        inbox: Inbox[Any],
        state: WorkerState,
        context: Any,  # a multiprocessing context; typeshed gives BaseContext no Process
        options: ProcessOptions,
        name: str,
        thief: Thief | None = None,
    ) -> None:
        """``thief``: how an idle liaison takes jobs queued behind a busy one (None: never)."""
        self._inbox = inbox
        self._thief = thief
        self._state = state
        self._control = state.control
        self._context = context
        self._options = options
        self._name = name
        self._process: BaseProcess | None = None
        self._conn: Connection | None = None
        # Watches the process's sentinel, which becomes readable once it exits:
        # one poll(0) before each hand-off (cheaper than exitcode under forkserver).
        self._exited = select.poll()
        self._jobs_in_process = 0
        self.thread = threading.Thread(target=self._run, name=f"{name}-liaison", daemon=True)

    # -- the process ---------------------------------------------------------

    def start_process(self) -> None:
        """Start the worker process now, if it is not running (before any job)."""
        self._ensure_process()

    def let_go(self, children: set[Any] | None) -> None:
        """In a child made by ``os.fork()``: forget the parent's worker process.

        ``children`` is multiprocessing's set of this process's children (None
        if it has none): the process is taken out of it, so that the child's
        exit handler does not terminate it.
        """
        if children is not None:
            children.discard(self._process)
        if self._conn is not None:
            # Only this copy of the pipe's end: the worker still sees EOF
            # when the parent goes, whatever the child does.
            self._conn.close()
        self._process = self._conn = None

    def _ensure_process(self) -> tuple[BaseProcess, Connection]:
        """The live process to give work to: a new one if there is none, or it died.

        A process that died while idle (killed, out of memory) is seen here, before
        a job is sent to it, so that no job is blamed for a death it did not see.
        """
        if self._process is not None and self._exited.poll(0):
            self._process.join(1)  # reaps it, so that its exit code is known
            logger.warning(
                "%s: worker process %s died while idle (exit code %s); starting a new one",
                self._name,
                self._process.pid,
                self._process.exitcode,
            )
            self._discard_process(kill=True)
        if self._process is None or self._conn is None:
            parent_end, child_end = self._context.Pipe()
            process = self._context.Process(
                target=child_main,
                args=(child_end, self._options.initializer, self._options.initargs),
                name=self._name,
                daemon=True,
            )
            process.start()
            child_end.close()
            self._process, self._conn = process, parent_end
            self._exited = select.poll()
            self._exited.register(process.sentinel, select.POLLIN)
            self._jobs_in_process = 0
        return self._process, self._conn

    def _discard_process(self, kill: bool) -> None:
        process, conn = self._process, self._conn
        self._process = self._conn = None
        if process is None:
            return
        if kill:
            process.kill()
        elif conn is not None:
            with contextlib.suppress(OSError):  # already gone: nothing to tell it
                conn.send_bytes(pickle.dumps(None))
        process.join(5)
        if process.is_alive():
            process.kill()
            process.join()
        if conn is not None:
            conn.close()

    def kill(self) -> None:
        """Kill the process now (a stop past its deadline)."""
        process = self._process
        if process is not None and process.is_alive():
            process.kill()

    # -- the loop ------------------------------------------------------------

    def _run(self) -> None:
        next_message = self._inbox.get if self._thief is None else self._thief.next_message
        state = self._state
        try:
            while (message := next_message()) is not None:
                state.active = True  # others may take what waits behind this message
                try:
                    if message.__class__ is LanedMessage:  # auto with a key: in its lane's turn
                        message.drive(self._handle, state)
                    else:
                        self._handle(message)
                except BaseException:
                    logger.critical("%s: internal error", self._name, exc_info=True)
                state.active = False
        finally:
            self._discard_process(kill=False)

    def _spec(self, message: Any) -> _Spec:
        control, timeout = self._control, self._options.job_timeout
        if isinstance(message, JobHandle):
            if isinstance(message, PolicyHandle):
                policy = message.retry or control.retry
                timeout = message.timeout or timeout
            else:
                policy = control.retry
            fn, args, kwargs = message.call
            return _Spec(CALL, fn, [(args, kwargs)], policy, timeout)
        if message.__class__ is tuple:
            return _Spec(EACH, message[0], [message[1]], control.retry, timeout, keep_values=False)
        if isinstance(message, BulkChunk):
            return _Spec(EACH, message.fn, message.items, control.retry, timeout, keep_values=False)
        assert isinstance(message, MapChunk)
        return _Spec(EACH, message.fn, message.items, control.retry, timeout, star=message.star)

    def _handle(self, message: Any) -> None:
        spec = self._spec(message)
        span: tuple[float, float] | None = None
        try:
            if not spec.keep_values and spec.policy is None and spec.timeout is None:
                span = self._handle_summary(message, spec)
            else:
                span = self._handle_each(message, spec)
        finally:
            if isinstance(message, BulkChunk):  # an adaptive dispatch sizes chunks from this
                message._ended(self._state.index, len(spec.items), *(span or (None, None)))

    def _handle_each(self, message: Any, spec: _Spec) -> tuple[float, float] | None:
        """Jobs whose every result matters: values, timeouts, retries; the span
        they ran over in the process (None: none ran)."""
        count = len(spec.items)
        attempts = [0] * count
        final: list[tuple[JobStatus, Any, float | None, float | None]] = [
            (JobStatus.CANCELLED, None, None, None)
        ] * count
        todo = list(range(count))
        while todo:
            if self._control.stopping:
                break  # the rest stays cancelled
            results, not_started = self._execute(spec, [spec.items[i] for i in todo])
            again: list[int] = []
            pause = 0.0
            for local, index in enumerate(todo):
                if local in not_started:
                    again.append(index)  # never ran: uses no attempt
                    continue
                ok, value, started, finished = results[local]
                attempts[index] += 1
                self._state.busy += finished - started
                if self._state.first_start is None or started < self._state.first_start:
                    self._state.first_start = started
                if ok:
                    final[index] = (JobStatus.SUCCEEDED, value, started, finished)
                    continue
                error = value
                final[index] = (JobStatus.FAILED, error, started, finished)
                delay = retry_delay(spec.policy, error, attempts[index])
                if delay is not None:
                    again.append(index)
                    pause = max(pause, delay)
            # The chunk's retries go back together, after the longest of their waits.
            if again and pause and self._control.stop_event.wait(pause):
                # Stopped while waiting to retry: cancelled, no attempt used up.
                for index in again:
                    if final[index][0] is JobStatus.FAILED:
                        final[index] = (JobStatus.CANCELLED, *final[index][1:])
                break
            todo = again
        self._record(message, spec, final, attempts)
        starts = [started for _, _, started, _ in final if started is not None]
        ends = [finished for _, _, _, finished in final if finished is not None]
        return (min(starts), max(ends)) if starts and ends else None

    def _handle_summary(self, message: Any, spec: _Spec) -> tuple[float, float] | None:
        """Fire-and-forget jobs: the worker sends counts and failures, not a result per
        job; the span they ran over in the process (None: they did not run)."""
        state = self._state
        on_error = message[2] if message.__class__ is tuple else message.on_error
        if self._control.stopping:
            state.cancelled += len(spec.items)
            return None
        task = Task(spec.kind, spec.fn, spec.items, keep_values=False, summary=True)
        try:
            data = pickle.dumps(task, pickle.HIGHEST_PROTOCOL)
        except Exception:
            # Find the items that cannot be sent, one by one (the slow path).
            return self._handle_each(message, spec)
        process, conn = self._ensure_process()
        reply = self._exchange(process, conn, data)
        if reply is None:
            error = WorkerLost("worker process died while running the chunk")
            state.failed += len(spec.items)
            for item in spec.items:
                report_error(item, error, state, on_error)
        else:
            _, ok, failures, started, finished = reply
            self._jobs_in_process += len(spec.items)
            state.succeeded += ok
            state.failed += len(failures)
            state.busy += finished - started
            if state.first_start is None or started < state.first_start:
                state.first_start = started
            for position, error in failures:
                report_error(spec.items[position], error, state, on_error)
            self._recycle_if_due()
        if message.__class__ is not tuple:
            message.items = []
        return None if reply is None else (started, finished)

    def _exchange(self, process: BaseProcess, conn: Connection, data: bytes) -> Any:
        """Send one task and wait for its one reply; None if the process died."""
        try:
            conn.send_bytes(data)
        except OSError:
            pass
        else:
            if self._wait_for_reply(process, conn):
                reply = self._receive(process, conn)
                if reply is not None:
                    return reply
        self._discard_process(kill=True)
        return None

    def _wait_for_reply(self, process: BaseProcess, conn: Connection) -> bool:
        """Wait until ``conn`` has data: True, or False if the process died first."""
        while True:
            ready = wait([conn, process.sentinel], _POLL)
            if conn in ready:
                return True
            if process.sentinel in ready:
                return False

    def _receive(self, process: BaseProcess, conn: Connection) -> tuple[Any, ...] | None:
        """The process's next reply, decoded (data is waiting); None if it died."""
        try:
            data = conn.recv_bytes()
            try:
                reply = pickle.loads(data)
            except BaseException as exc:  # the loader ran the values' code: anything may come out
                # A value that pickled in the worker cannot be loaded here: have
                # the reply again with each result pickled on its own, so that
                # only the jobs whose values fail to load fail.
                logger.debug("%s: a reply cannot be loaded (%r): asking again", self._name, exc)
                conn.send_bytes(_RESEND_BYTES)
                if not self._wait_for_reply(process, conn):
                    return None
                reply = pickle.loads(conn.recv_bytes())
        except (EOFError, OSError):
            return None
        return decode(reply)

    def _recycle_if_due(self) -> None:
        limit = self._options.max_jobs_per_worker
        if limit is not None and self._jobs_in_process >= limit:
            self._discard_process(kill=False)

    def _execute(self, spec: _Spec, items: list[Any]) -> tuple[dict[int, Result], set[int]]:
        """Run ``items`` in the process; results by position, and positions never started."""
        task = Task(
            spec.kind, spec.fn, items, spec.star, spec.timeout is not None, spec.keep_values
        )
        try:
            data = pickle.dumps(task, pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            return self._unpicklable(spec, items, exc)
        process, conn = self._ensure_process()
        try:
            conn.send_bytes(data)
        except OSError:
            return self._lost(spec, items, {}, None, process, conn)
        results: dict[int, Result] = {}
        running: tuple[int, float] | None = None  # (position, started) in stream mode
        while True:
            deadline = None
            if running is not None and spec.timeout is not None:
                deadline = running[1] + spec.timeout
            wait_for = (
                _POLL if deadline is None else max(0.0, min(_POLL, deadline - perf_counter()))
            )
            ready = wait([conn, process.sentinel], wait_for)
            if conn in ready:
                event = self._receive(process, conn)
                if event is None:
                    return self._lost(spec, items, results, running, process, conn)
                if event[0] == "start":
                    running = (event[1], event[2])
                elif event[0] == "one":
                    results[event[1]] = event[2]
                    running = None
                else:  # "done"
                    for position, result in enumerate(event[1] or ()):
                        results[position] = result
                    self._jobs_in_process += len(items)
                    self._recycle_if_due()
                    return results, set()
            elif process.sentinel in ready:
                return self._lost(spec, items, results, running, process, conn)
            elif deadline is not None and perf_counter() >= deadline and running is not None:
                position, started = running
                self._discard_process(kill=True)
                error = TimedOut(f"job ran longer than its timeout of {spec.timeout} s")
                results[position] = (False, error, started, perf_counter())
                return results, set(range(position + 1, len(items)))

    def _lost(
        self,
        spec: _Spec,
        items: list[Any],
        results: dict[int, Result],
        running: tuple[int, float] | None,
        process: BaseProcess,
        conn: Connection,
    ) -> tuple[dict[int, Result], set[int]]:
        """The process died: what it held is lost, the rest of the chunk runs again."""
        process.join(1)
        code = process.exitcode
        self._discard_process(kill=True)
        error = WorkerLost(f"worker process died (exit code {code}) while running the job")
        now = perf_counter()
        if spec.timeout is not None:  # stream mode: we know which job was running
            position = running[0] if running is not None else len(results)
            started = running[1] if running is not None else now
            if position < len(items):
                results[position] = (False, error, started, now)
            return results, set(range(position + 1, len(items)))
        # Without per-job reports the whole chunk was in the worker's hands.
        return dict.fromkeys(range(len(items)), (False, error, now, now)), set()

    def _unpicklable(
        self, spec: _Spec, items: list[Any], exc: Exception
    ) -> tuple[dict[int, Result], set[int]]:
        """A job that cannot be pickled fails with a clear error; its chunk mates still run."""
        now = perf_counter()
        try:
            pickle.dumps(spec.fn)
        except Exception as fn_error:
            error = TypeError(f"the job function cannot be sent to a worker process: {fn_error}")
            return dict.fromkeys(range(len(items)), (False, error, now, now)), set()
        sendable, results = [], {}
        for position, item in enumerate(items):
            try:
                pickle.dumps(item)
                sendable.append(position)
            except Exception as item_error:
                results[position] = (
                    False,
                    TypeError(
                        f"the job's arguments cannot be sent to a worker process: {item_error}"
                    ),
                    now,
                    now,
                )
        if sendable:
            sub, not_started = self._execute(spec, [items[p] for p in sendable])
            for local, position in enumerate(sendable):
                if local in not_started:
                    continue
                results[position] = sub[local]
            missing = {sendable[local] for local in not_started}
            return results, missing
        del exc
        return results, set()

    def _record(
        self,
        message: Any,
        spec: _Spec,
        final: list[tuple[JobStatus, Any, float | None, float | None]],
        attempts: list[int],
    ) -> None:
        state = self._state
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
            for item, (status, value, _, _) in zip(spec.items, final, strict=True):
                if status is JobStatus.FAILED:
                    report_error(item, value, state, on_error)
            if message.__class__ is not tuple:
                message.items = []
