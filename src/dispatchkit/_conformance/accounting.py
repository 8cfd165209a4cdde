"""The accounting promise, under hypothesis: every job ends once, and is counted."""

from __future__ import annotations

from typing import Any

from dispatchkit.job import JobStatus

from . import jobs
from .common import examples, is_value_error, worker_counts
from .face import STRATEGIES, Counts, Target

__all__ = ["check_accounting"]


def check_accounting(target: Target, *, max_examples: int = 20) -> None:
    """After a drain, ``submitted == succeeded + failed + cancelled``, exactly.

    For random mixes (under hypothesis) of succeeding and failing jobs by
    ``submit``, ``map`` (with and without ``outcomes``) and ``dispatch``, and of
    cancels of submitted handles, with every strategy, worker count and chunk,
    drained by ``join`` or by ``stop(cancel=True)`` in the middle: every handle
    ends once (its value, its own error, or cancelled), the totals match what
    was submitted, and the per-worker counts add up. Drained by ``join``, each
    total is exactly what the jobs did.
    """
    caps = target.capabilities
    kinds = sorted(caps.operations - {"stop"})

    def check(
        strategy: str, workers: int, chunk: int, mix: list[tuple[str, int]], stop_at: int | None
    ) -> None:
        _one_mix(target, strategy, workers, chunk, mix, stop_at)

    examples(
        max_examples,
        check,
        strategy=lambda st: st.sampled_from(STRATEGIES),
        workers=lambda st: worker_counts(target, st),
        chunk=lambda st: st.sampled_from(caps.chunk),
        mix=lambda st: st.lists(
            st.tuples(st.sampled_from(kinds), st.integers(min_value=0, max_value=12)), max_size=5
        ),
        stop_at=lambda st: (
            st.none() | st.integers(min_value=0, max_value=4)
            if "stop" in caps.operations
            else st.none()
        ),
    )


def _one_mix(
    target: Target,
    strategy: str,
    workers: int,
    chunk: int,
    mix: list[tuple[str, int]],
    stop_at: int | None,
) -> None:
    key = (lambda item: item) if strategy == "key" else None
    handles: list[tuple[int, Any]] = []
    submitted = bulk_succeeded = bulk_failed = 0
    stopped: Counts | None = None
    with target.open(workers, strategy=strategy, chunk=chunk, block=3) as front:
        for step, (kind, size) in enumerate(mix):
            if step == stop_at:
                stopped = front.stop(cancel=True)
                break
            if kind == "submit":
                handles += [(i, front.submit(jobs.flaky, i, key=i)) for i in range(size)]
            elif kind == "dispatch":
                assert front.dispatch(jobs.flaky, range(size), key=key) == size
                bulk_failed += len(range(0, size, 3))
                bulk_succeeded += size - len(range(0, size, 3))
            elif kind == "map":
                assert front.map(jobs.square, range(size), key=key) == [i * i for i in range(size)]
                bulk_succeeded += size
            elif kind == "map_outcomes":
                outcomes = front.map(jobs.flaky, range(size), key=key, outcomes=True)
                assert [o.ok for o in outcomes] == [i % 3 != 0 for i in range(size)], outcomes
                assert [o.value for o in outcomes if o.ok] == [i for i in range(size) if i % 3]
                bulk_failed += len(range(0, size, 3))
                bulk_succeeded += size - len(range(0, size, 3))
            else:  # cancel the latest handles (those still queued are cancelled)
                for _, handle in handles[-size:]:
                    front.cancel(handle)
            if kind != "cancel":
                submitted += size
        if stopped is None:
            front.join()
        counts = front.counts()
        ended = _ended_by_status(front, handles)
    assert counts.submitted == submitted, f"{counts} after submitting {submitted}"
    assert counts.finished == submitted, f"{counts}: not every job ended once"
    if counts.worker_jobs is not None:
        assert sum(counts.worker_jobs) == counts.succeeded + counts.failed, counts
    if stopped is None:
        assert counts.cancelled == ended[JobStatus.CANCELLED], (counts, ended)
        assert counts.failed == ended[JobStatus.FAILED] + bulk_failed, (counts, ended)
        assert counts.succeeded == ended[JobStatus.SUCCEEDED] + bulk_succeeded, (counts, ended)
    else:
        assert stopped == counts, f"stop returned {stopped}, then the counts were {counts}"
        assert counts.cancelled >= ended[JobStatus.CANCELLED], (counts, ended)
        assert counts.failed >= ended[JobStatus.FAILED], (counts, ended)


def _ended_by_status(front: Any, handles: list[tuple[int, Any]]) -> dict[JobStatus, int]:
    """How the handles ended, by status; each is checked against its job."""
    ended = dict.fromkeys(JobStatus, 0)
    for item, handle in handles:
        outcome = front.outcome(handle)
        assert outcome.status in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED), (
            f"job {item} did not end: {outcome.status}"
        )
        if outcome.status is JobStatus.SUCCEEDED:
            assert item % 3, f"job {item} should have failed: {outcome}"
            assert outcome.value == item, (item, outcome)
        elif outcome.status is JobStatus.FAILED:
            assert item % 3 == 0, f"job {item} should have succeeded: {outcome}"
            assert is_value_error(outcome.error), (item, outcome)
        ended[outcome.status] += 1
    return ended
