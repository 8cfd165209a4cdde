"""The liaison of one worker process: the thread that feeds it and records what it did.

See :mod:`dispatchkit.executors.process` for the data flow: a liaison takes
messages from its inbox, makes each a run (:mod:`._rounds`), sends the runs'
rounds down the pipe as tasks, waits on the pipe and on the process's sentinel,
and completes the handles, map results and counters with what comes back (or
with ``WorkerLost`` / ``TimedOut``).

The pipe is kept full: while the process runs one round, the next is queued
behind it, so that it starts at once (at most one, so a shared queue stays
fair: a worker holds no more than it can start next). The process reads a task
only once it has replied to the one before, which settles every death: a round
whose final reply has not come may have been running and is lost as before; one
behind it never started and goes out again. A message that arrives while the
inbox was empty is taken at the next look (at most ``_POLL``), or when the
running round ends.
"""

from __future__ import annotations

import contextlib
import logging
import pickle
import select
import socket
import threading
from collections import deque
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from time import perf_counter
from typing import TYPE_CHECKING, Any, Final

from dispatchkit._inbox import Inbox
from dispatchkit._lanes import LanedMessage
from dispatchkit._steal import Thief
from dispatchkit.core import WorkerState
from dispatchkit.errors import RemoteError, TimedOut, WorkerLost, WorkerStartError

from ._child import RESEND, child_main, decode
from ._rounds import Round, Run, make_run

if TYPE_CHECKING:
    from .process import ProcessOptions

__all__ = ["Liaison", "PoolHealth"]

logger = logging.getLogger(__name__)

#: Seconds between two looks at a worker that is running a job.
_POLL: Final = 0.2

#: Most bytes of a queued round, as a share of the pipe's send buffer (see
#: ``Liaison._send_next``); the rest leaves room for the tail of the round
#: before it, which the process is reading.
_ROOM_SHARE: Final = 4

#: Failed starts in a row after which a worker is broken (see ``Liaison._failed_start``).
_START_TRIES: Final = 3

#: Seconds before the second start of a worker whose first failed; doubled each time.
_START_PAUSE: Final = 0.05

#: The room assumed where the buffer's size cannot be read (bytes).
_LEAST_ROOM: Final = 4096


class PoolHealth:
    """How many workers of a pool that share one queue are broken (see
    ``Liaison._failed_start``): a broken one leaves while another serves the queue."""

    def __init__(self, workers: int) -> None:
        self._workers = workers
        self._broken = 0
        self._lock = threading.Lock()

    def broke(self) -> None:
        with self._lock:
            self._broken += 1

    def served(self) -> bool:
        """Whether a worker that is not broken still takes from the queue."""
        with self._lock:
            return self._broken < self._workers


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
        health: PoolHealth | None = None,
    ) -> None:
        """``thief``: how an idle liaison takes jobs queued behind a busy one (None: never);
        ``health``: the broken workers of a pool whose workers share one queue."""
        self._inbox = inbox
        #: Waits for the next message: the own inbox's, or one taken from a busy worker.
        self._next_message = inbox.get if thief is None else thief.next_message
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
        #: Rounds sent to the process, oldest first: the one it runs, and at
        #: most one queued behind it (or replies that came and are asked again).
        self._flight: deque[Round] = deque()
        #: A round taken but not sent (too big for the pipe now, or over the
        #: process's job budget): it goes first once the process is free.
        self._held: Round | None = None
        #: Runs that want another round (retries, or a round that never started).
        self._ready: deque[Run] = deque()
        self._tasks_sent = 0  # to this process, numbering its rounds for RESEND
        self._room = _LEAST_ROOM  # bytes a queued round may take in the pipe
        #: The process has said it is ready (its initializer ran): a death
        #: before that is a failed start, which blames no job.
        self._booted = False
        self._start_failures = 0  # in a row
        #: The initializer's error, as the last process that failed to start sent it.
        self._start_error: BaseException | None = None
        #: Set once the processes failed to start ``_START_TRIES`` times in a row.
        self._broken: WorkerStartError | None = None
        self._exit_code: int | None = None  # of the last process that ended
        #: The pool's count of broken workers, when they share one queue (else None).
        self._health = health
        self.thread = threading.Thread(target=self._run, name=f"{name}-liaison", daemon=True)

    # -- the process ---------------------------------------------------------

    def start_process(self) -> None:
        """Start the worker process now, if it is not running (before any job)."""
        self._ensure_process()

    def wait_ready(self) -> None:
        """Wait until the process started by :meth:`start_process` can run jobs
        (its initializer has run), before the liaison's thread starts.

        A process that fails to start is replaced, as at any other time.

        Raises:
            WorkerStartError: the processes failed to start ``_START_TRIES``
                times in a row (the last one's initializer error is the cause).
        """
        while not self._booted:
            if not self._ensure_process():  # replaces one that ended: a failed start
                assert self._broken is not None
                raise self._broken
            process, conn = self._process, self._conn
            assert process is not None
            assert conn is not None
            wait([conn, process.sentinel])
            event = _read_event(conn) if conn.poll(0) else None
            if event is None:
                process.join()  # ended before it was ready: seen above, at the next look
            else:
                self._note_start(event)

    def _note_start(self, event: tuple[Any, ...]) -> bool:
        """Take a starting process's message, if ``event`` is one: ``("ready",)``, or
        ``("broken", error)`` when its initializer raised (the process is ending)."""
        if event[0] == "ready":
            self._booted = True
            self._start_failures = 0
        elif event[0] == "broken":
            self._start_error = event[1]
        else:
            return False
        return True

    def discard_process(self) -> None:
        """Stop the process now (a pool that could not start all its workers)."""
        self._discard_process(kill=True)

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

    def _ensure_process(self) -> bool:
        """A live process to give work to: a new one if there is none, or it died.
        False once the worker is broken (its processes fail to start).

        A process that died while idle (killed, out of memory) is seen here, before
        a job is sent to it, so that no job is blamed for a death it did not see.
        """
        if self._process is not None and self._exited.poll(0):
            self._process.join(1)  # reaps it, so that its exit code is known
            if self._booted:
                logger.warning(
                    "%s: worker process %s died while idle (exit code %s); starting a new one",
                    self._name,
                    self._process.pid,
                    self._process.exitcode,
                )
            else:
                self._failed_start(self._exit_text())
            self._discard_process(kill=True)
        if self._broken is not None:
            return False
        if self._process is None or self._conn is None:
            parent_end, child_end = self._context.Pipe()
            process = self._context.Process(
                target=child_main,
                args=(child_end, self._options.initializer, self._options.initargs),
                name=self._name,
                daemon=True,
            )
            try:
                process.start()
            finally:
                child_end.close()
                if process.pid is None:  # not started: nothing will use this end
                    parent_end.close()
            self._process, self._conn = process, parent_end
            self._booted = False
            self._exited = select.poll()
            self._exited.register(process.sentinel, select.POLLIN)
            self._jobs_in_process = 0
            self._tasks_sent = 0
            self._room = _pipe_room(parent_end)
        return True

    def _failed_start(self, reason: str) -> None:
        """A process ended before it was ready to run jobs (or could not be started).

        Its tasks never ran. The next start waits a little longer each time
        (``_START_PAUSE``, doubled). A worker whose processes fail to start
        ``_START_TRIES`` times in a row is broken: on a shared queue that another
        worker still serves it takes no more jobs; otherwise every job it takes
        fails with the error, so that nothing waits forever on a worker that cannot
        start. A process killed by a stop (``stop`` past its deadline) is no failed
        start.
        """
        if self._broken is not None or self._control.stopping:
            return
        self._start_failures += 1
        cause, self._start_error = self._start_error, None
        logger.warning(
            "%s: worker process failed to start (%s), %d time(s) in a row",
            self._name,
            f"its initializer raised {cause!r}" if cause is not None else reason,
            self._start_failures,
        )
        if self._start_failures < _START_TRIES:
            pause = _START_PAUSE * 2 ** (self._start_failures - 1)
            self._control.stop_event.wait(pause)  # a stop cuts it short
            return
        if cause is not None:
            text = f"the initializer raised in the worker process: {cause!r}"
        elif self._exit_code is not None and self._exit_code > 0:
            text = (
                f"the worker process {reason}; a script that starts process workers "
                'when it is imported needs the `if __name__ == "__main__":` guard, and '
                "the worker's own error output says why it stopped"
            )
        else:
            text = f"the worker process {reason}"
        self._broken = WorkerStartError(
            f"{self._name}: failed to start {_START_TRIES} times in a row: {text}"
        )
        self._broken.__cause__ = cause
        if self._health is not None:
            self._health.broke()

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
        try:
            while True:
                try:
                    if not self._step():
                        break
                except BaseException as exc:
                    logger.critical("%s: internal error", self._name, exc_info=True)
                    self._give_up(exc)
        finally:
            self._discard_process(kill=False)

    def _give_up(self, error: BaseException) -> None:
        """After an internal error (a process that cannot be started, say): end what was
        sent or held as lost, as if the process had died, and start afresh."""
        held, self._held = self._held, None
        lost = WorkerLost(f"the worker process could not be used: {error!r}")
        try:
            self._drop_flight(lost)
            if held is not None:  # never sent: it goes out again
                self._after(held.run, held.run.unstarted(held))
        except BaseException:
            logger.critical("%s: internal error", self._name, exc_info=True)
            self._flight.clear()
            self._discard_process(kill=True)

    def _step(self) -> bool:
        """Send what the process should hold, wait once for it; False once all is done."""
        flight = self._flight
        if not flight:
            if self._broken is not None and self._others_serve():
                self._leave()
                return False
            # Idle: others may not take what waits in this inbox meanwhile (nothing
            # runs ahead of it); busy again once a round is sent. A retry waiting out
            # its backoff holds the inbox as a running job would: others may take it.
            retrying = self._state.active = bool(self._ready)
            if retrying and self._thief is not None:
                self._thief.started()
            round_ = self._next_round(block=True)
            if round_ is None:
                return False
            self._state.active = True
            if self._thief is not None:
                self._thief.started()
            self._send_first(round_)
            return True
        if len(flight) == 1 and self._held is None:
            self._send_next()
        self._wait_once()
        return True

    def _others_serve(self) -> bool:
        """Whether this worker shares its queue with one that still takes from it."""
        return self._health is not None and self._health.served()

    def _leave(self) -> None:
        """Broken, on a shared queue that others serve: each run this worker holds
        goes back to the queue, in its order, if none of it ran yet (the others run
        it), else what is left of it fails with the start error (a retry of a job
        that ran here); then the worker takes no more."""
        held, self._held = self._held, None
        if held is not None:
            self._after(held.run, held.run.unstarted(held))
        back: list[Run] = []
        ready = self._ready
        while ready:
            run = ready.popleft()
            if run.untouched():
                back.append(run)
            else:
                self._abandon(run)
        messages = [run.message if run.laned is None else run.laned for run in back]
        if messages and not self._inbox.give_back(messages):
            # Closed, and every other worker has gone: no one would take them.
            for run in back:
                self._abandon(run)
            while ready:  # a lane's chunks that came in line meanwhile
                self._abandon(ready.popleft())
        self._inbox.leave()

    def _abandon(self, run: Run) -> None:
        """A broken worker's run: what is left of it fails with the start error."""
        assert self._broken is not None
        run.abandon(self._broken)
        self._after(run, False)  # a lane's next chunk, if it waits, comes in line

    def _next_round(self, block: bool) -> Round | None:
        """The next round to send: one held back, a run's next, or a new message's."""
        held, self._held = self._held, None
        if held is not None:
            if not self._control.stopping:
                return held
            self._after(held.run, held.run.unstarted(held))  # cancelled below
        ready, stopping = self._ready, self._control.stopping
        while True:
            if ready:
                now = perf_counter()
                run = ready[0] if stopping else next((r for r in ready if r.due <= now), None)
                if run is None:  # only retries waiting out their backoff
                    if not block:
                        return None  # nothing new is taken meanwhile, as for a thread
                    stopping = self._control.stop_event.wait(min(r.due for r in ready) - now)
                    continue
                ready.remove(run)
            else:
                message = self._next_message() if block else self._inbox.get_nowait()
                if message is None:
                    return None
                laned = None
                if message.__class__ is LanedMessage:  # auto with a key: in its lane's turn
                    if not message.claim():
                        continue  # its lane's current chunk runs elsewhere, which runs it next
                    laned, message = message, message.inner
                run = self._run_of(message, laned)
            round_ = run.next_round(self._control.stopping)
            if round_ is None:
                self._after(run, False)
            elif round_.data is None:  # every job failed before it could be sent
                self._after(run, run.replied(round_, ("done", None)))
            else:
                return round_

    def _after(self, run: Run, again: bool) -> None:
        """A round of ``run`` ended: its next goes in line, or it is over."""
        if again:
            self._ready.append(run)
        elif run.laned is not None:
            following = run.laned.next_in_lane(self._state)
            if following is not None:
                self._ready.append(self._run_of(following.inner, following))

    def _run_of(self, message: Any, laned: LanedMessage | None) -> Run:
        """The run of a message (``laned``: the lane's wrapper it came in, if any)."""
        run = make_run(message, self._state, self._options.job_timeout)
        run.laned = laned
        return run

    # -- sending -------------------------------------------------------------

    def _send_first(self, round_: Round) -> None:
        """Send a round to an idle process (a new one if it died)."""
        self._flight.append(round_)  # first: if no process can be started, it is settled
        if not self._ensure_process() or not self._send(round_):
            self._drop_flight(self._lost_error())

    def _send_next(self) -> None:
        """Queue the next round behind the running one, if the process can take it now.

        Only what fits in the pipe's buffer beside what the process has not read
        yet is sent: a send that blocked until the process is free would hold
        off the timeout checks, and deadlock with a reply too large for the
        buffer. Nor is a process sent jobs beyond its ``max_jobs_per_worker``.
        What is not sent is held here and sent when the process is free.
        """
        round_ = self._next_round(block=False)
        if round_ is None:
            return
        assert round_.data is not None
        limit = self._options.max_jobs_per_worker
        held = sum(r.size for r in self._flight) + round_.size
        if (
            len(round_.data) > self._room
            or (limit is not None and self._jobs_in_process + held > limit)
            or self._exited.poll(0)
        ):
            self._held = round_
            return
        self._flight.append(round_)
        if not self._send(round_):
            # The process is gone: its sentinel tells, and this round never started.
            self._flight.pop()
            self._held = round_

    def _send(self, round_: Round) -> bool:
        assert self._conn is not None
        assert round_.data is not None
        round_.number = self._tasks_sent
        self._tasks_sent += 1
        try:
            self._conn.send_bytes(round_.data)
        except OSError:
            return False
        return True

    # -- receiving -----------------------------------------------------------

    def _running(self) -> Round | None:
        """The round the process may be running: the first whose final reply has not come."""
        for round_ in self._flight:
            if not round_.awaiting:
                return round_
        return None

    def _wait_once(self) -> None:
        process, conn = self._process, self._conn
        assert process is not None
        assert conn is not None
        running = self._running()
        deadline = None
        if running is not None and running.running is not None and running.timeout is not None:
            deadline = running.running[1] + running.timeout
        wait_for = _POLL if deadline is None else max(0.0, min(_POLL, deadline - perf_counter()))
        ready = wait([conn, process.sentinel], wait_for)
        # What the process sent before it died is read first: it was sent.
        if conn in ready or (process.sentinel in ready and conn.poll(0)):
            self._take_reply(conn, running)
        elif process.sentinel in ready:
            self._drop_flight(self._lost_error())
        elif deadline is not None and perf_counter() >= deadline and running is not None:
            self._discard_process(kill=True)
            error = TimedOut(f"job ran longer than its timeout of {running.timeout} s")
            lost = WorkerLost("worker process was killed (a job's timeout) before its results came")
            self._drop_flight(lost, timed_out=error)

    def _take_reply(self, conn: Connection, running: Round | None) -> None:
        try:
            data = conn.recv_bytes()
        except (EOFError, OSError):
            self._drop_flight(self._lost_error())
            return
        try:
            reply = pickle.loads(data)
        except BaseException as exc:  # the loader ran the values' code: anything may come out
            # A value that pickled in the worker cannot be loaded here: have the
            # reply again with each result pickled on its own, so that only the
            # jobs whose values fail to load fail. The process sends it once it
            # has read the request, after the round queued behind this one.
            logger.debug("%s: a reply cannot be loaded (%r): asking again", self._name, exc)
            assert running is not None
            running.awaiting = True
            try:
                conn.send_bytes(pickle.dumps((RESEND, running.number)))
            except OSError:
                self._drop_flight(self._lost_error())
            return
        if reply[0] == "resent":  # a reply asked again: ("resent", number, sealed reply)
            target = next(r for r in self._flight if r.number == reply[1])
            reply = reply[2]
        else:
            assert running is not None
            target = running
        event = decode(reply)
        if self._note_start(event):
            return
        if event[0] == "start":
            target.running = (event[1], event[2])
        elif event[0] == "one":
            target.results[event[1]] = event[2]
            target.running = None
        else:  # "done" or "summary": the round has ended
            self._flight.remove(target)
            self._jobs_in_process += target.size
            self._after(target.run, target.run.replied(target, event))
            if not self._flight:
                self._recycle_if_due()

    def _lost_error(self) -> WorkerLost:
        """The process died: reaps it, and the error of the job it was running."""
        return WorkerLost(f"worker process {self._exit_text()} while running the job")

    def _exit_text(self) -> str:
        """How the process ended (reaping it): "died (exit code 1)"."""
        process = self._process
        code = None
        if process is not None:
            process.join(1)
            code = process.exitcode
        self._exit_code = code
        return f"died (exit code {code})"

    def _drop_flight(self, error: BaseException, timed_out: BaseException | None = None) -> None:
        """The process is gone (or going): settle what it held.

        The round it was running is lost (or timed out) as it would be alone;
        one whose reply came but could not be loaded is lost; one queued behind
        the running one never started (the process reads it only once it has
        replied to the one before), so it goes out again. A process that was not
        ready yet started none: its rounds go out again, or fail with the
        worker's start error once it is broken.
        """
        booted = self._booted
        if not booted:
            self._failed_start(self._exit_text() if self._process is not None else str(error))
        self._discard_process(kill=True)
        rounds = list(self._flight)
        self._flight.clear()
        blamed = False
        for round_ in rounds:
            run = round_.run
            if self._broken is not None and not self._others_serve():
                again = run.lost(round_, self._broken)
            elif not booted:
                again = run.unstarted(round_)
            elif round_.awaiting:
                again = run.lost(round_, error)
            elif not blamed:
                blamed = True
                if timed_out is not None:
                    again = run.timed_out(round_, timed_out)
                else:
                    again = run.lost(round_, error)
            else:
                again = run.unstarted(round_)
            self._after(run, again)

    def _recycle_if_due(self) -> None:
        limit = self._options.max_jobs_per_worker
        if limit is not None and self._jobs_in_process >= limit:
            self._discard_process(kill=False)


def _read_event(conn: Connection) -> tuple[Any, ...] | None:
    """The next message of a process that is starting; None if it is gone."""
    try:
        data = conn.recv_bytes()
    except (EOFError, OSError):
        return None
    try:
        return decode(pickle.loads(data))
    except BaseException as exc:  # the initializer's error, of a type only the worker has
        return "broken", RemoteError(f"the initializer's error cannot be loaded here: {exc!r}")


def _pipe_room(conn: Connection) -> int:
    """Bytes a queued round may take in ``conn`` without its send blocking."""
    try:
        with socket.socket(fileno=conn.fileno()) as sock:
            try:
                size = sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
            finally:
                sock.detach()  # the connection keeps its descriptor
    except OSError:
        return _LEAST_ROOM  # not a socket (a plain pipe): assume a small buffer
    return max(_LEAST_ROOM, size // _ROOM_SHARE)
