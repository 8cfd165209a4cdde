"""Checks of cancelling, stopping and shutting down."""

from __future__ import annotations

import threading
from typing import Any

from dispatchkit.errors import ClosedError, JobCancelled
from dispatchkit.job import JobStatus

from . import jobs
from .common import held_workers, scratch, wait_until, workers_for
from .face import FrontEnd, Target

__all__ = [
    "check_cancel",
    "check_close_join_idempotent",
    "check_stop_cancels_queued",
    "check_stop_shutdown_idempotent",
]


def _raises_cancelled(front: FrontEnd, handle: Any) -> bool:
    try:
        front.result(handle)
    except JobCancelled:
        return True
    return False


def check_cancel(target: Target) -> None:
    """``cancel`` of a queued job's handle returns True, the job never runs, its
    outcome is CANCELLED, ``result`` raises ``JobCancelled``, and it is counted
    cancelled; cancelling it again is True, a finished job's cancel is False.

    Where a submitted job cannot be recalled (``recall=False``: it left the
    process), ``cancel`` returns False and the job runs and succeeds.
    """
    recall = target.capabilities.recall
    with scratch() as tmp, target.open(workers_for(target, 2), strategy="round_robin") as front:
        log = str(tmp / "log")
        with held_workers(target, front, tmp / "held"):
            queued = [front.submit(jobs.note, [log, i]) for i in range(2 * front.workers)]
            assert front.cancel(queued[0]) is recall, f"cancel of a queued job is not {recall}"
            if recall:
                assert front.cancel(queued[0]), "a second cancel of a cancelled job"
        outcomes = [front.outcome(h) for h in queued]
        wanted = JobStatus.CANCELLED if recall else JobStatus.SUCCEEDED
        assert outcomes[0].status is wanted, f"the cancelled job ended {outcomes[0]}"
        assert _raises_cancelled(front, queued[0]) is recall, "JobCancelled from result()"
        assert all(o.status is JobStatus.SUCCEEDED for o in outcomes[1:]), outcomes
        assert not front.cancel(queued[-1]), "cancel of a finished job returned True"
        front.join()
        counts = front.counts()
        ran = sorted(int(line[0]) for line in jobs.read_log(log))
    cancelled = 1 if recall else 0
    assert ran == list(range(cancelled, 2 * front.workers)), f"jobs run: {ran}"
    assert counts.cancelled == cancelled, counts
    assert counts.finished == counts.submitted == 3 * front.workers, counts


def check_stop_cancels_queued(target: Target) -> None:
    """``stop(cancel=True)`` cancels every queued job (CANCELLED, ``result`` raises
    ``JobCancelled``, none of them runs), lets running ones end, and returns counts
    in which ``submitted == succeeded + failed + cancelled``.

    Where a submitted job cannot be recalled (``recall=False``), its handle ends
    CANCELLED all the same, but the job may still run (it has left the process).
    """
    with scratch() as tmp, target.open(workers_for(target, 2), strategy="round_robin") as front:
        log = str(tmp / "log")
        stopped: list[Any] = []

        def stop() -> None:
            try:
                stopped.append(front.stop(cancel=True))
            except Exception as exc:  # raised again below, in the checking thread
                stopped.append(exc)

        with held_workers(target, front, tmp / "held") as held:
            queued = [front.submit(jobs.note, [log, i]) for i in range(3 * front.workers)]
            stopper = threading.Thread(target=stop, name="conformance-stop")
            stopper.start()
            # The held jobs run until the gate opens: stop must cancel the queue first.
            wait_until(
                lambda: bool(stopped) or front.counts().cancelled >= len(queued),
                "stop cancelled the queue",
            )
        stopper.join(30)
        assert stopped, "stop did not return"
        if isinstance(stopped[0], Exception):
            raise stopped[0]
        counts = stopped[0]
        ended = [front.outcome(h).status for h in queued]
        assert all(status is JobStatus.CANCELLED for status in ended), ended
        assert all(_raises_cancelled(front, h) for h in queued), "JobCancelled from result()"
        assert all(front.outcome(h).status.finished for h in held), "a held job did not end"
        if target.capabilities.recall:
            assert jobs.read_log(log) == [], "a cancelled job ran"
    assert counts.submitted == 4 * front.workers, counts
    assert counts.finished == counts.submitted, counts
    assert counts.cancelled >= 3 * front.workers, counts


def _refuses(front: FrontEnd) -> None:
    try:
        front.submit(jobs.square, 1)
    except ClosedError:
        pass
    else:
        raise AssertionError("submit after close was accepted")
    try:
        front.map(jobs.square, [1])
    except ClosedError:
        pass
    else:
        raise AssertionError("map after close was accepted")


def check_close_join_idempotent(target: Target) -> None:
    """``close`` and ``join`` may each be called twice; what was submitted before
    ``close`` still runs; ``submit`` and ``map`` afterwards raise ``ClosedError``."""
    with target.open(workers_for(target, 2), strategy="pull") as front:
        handles = [front.submit(jobs.square, i) for i in range(6)]
        front.close()
        front.close()
        _refuses(front)
        front.join()
        front.join()
        _refuses(front)
        assert [front.result(h) for h in handles] == [i * i for i in range(6)]
        counts = front.counts()
    assert (counts.submitted, counts.succeeded) == (6, 6), counts


def check_stop_shutdown_idempotent(target: Target) -> None:
    """``stop`` twice, then ``shutdown(wait)`` and ``shutdown(cancel_futures=True)``
    (the ``concurrent.futures`` spelling) twice each, are safe and change nothing;
    ``submit`` afterwards raises ``ClosedError``."""
    with target.open(workers_for(target, 2), strategy="pull") as front:
        handles = [front.submit(jobs.square, i) for i in range(4)]
        front.join()
        first = front.stop(cancel=True)
        assert front.stop(cancel=True) == first, "a second stop changed the counts"
        front.shutdown(wait=True)
        front.shutdown(wait=True)
        front.shutdown(wait=True, cancel_futures=True)
        front.shutdown(wait=False, cancel_futures=True)
        _refuses(front)
        assert [front.result(h) for h in handles] == [0, 1, 4, 9]
        assert front.counts() == first, "shutdown after stop changed the counts"
    assert (first.submitted, first.succeeded) == (4, 4), first
