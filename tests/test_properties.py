"""Hypothesis properties of the whole dispatcher: accounting and assignment."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from hypothesis import given
from hypothesis import strategies as st

from dispatchkit import Dispatcher, Job, JobHandle
from dispatchkit.strategies import Batch, ByKey, Pull, RoundRobin


def flaky(x: int) -> int:
    if x % 3 == 0:
        raise ValueError(x)
    return x


@dataclass
class Op:
    kind: str  # submit, dispatch, map, cancel
    size: int


ops = st.lists(
    st.builds(
        Op,
        kind=st.sampled_from(["submit", "dispatch", "map", "cancel"]),
        size=st.integers(min_value=0, max_value=60),
    ),
    max_size=8,
)
strategy_names = st.sampled_from(["round_robin", "batch", "pull", "key"])


@given(
    strategy=strategy_names,
    workers=st.integers(min_value=1, max_value=6),
    chunk=st.integers(min_value=1, max_value=20),
    operations=ops,
    stop_with_cancel=st.booleans(),
)
def test_every_job_ends_exactly_once_and_is_counted(
    strategy: str, workers: int, chunk: int, operations: list[Op], stop_with_cancel: bool
) -> None:
    d = Dispatcher(workers, strategy=strategy, chunk=chunk, block=3)
    submitted = 0
    handles: list[JobHandle[int]] = []
    key = str if strategy == "key" else None
    for op in operations:
        if op.kind == "submit":
            for i in range(op.size):
                handles.append(d.submit_job(Job(flaky, (i,), key=i)))
        elif op.kind == "dispatch":
            d.dispatch(flaky, range(op.size), key=key)
        elif op.kind == "map":
            outcomes = list(d.map(flaky, range(op.size), outcomes=True, key=key))
            assert [o.ok for o in outcomes] == [i % 3 != 0 for i in range(op.size)]
        else:
            for handle in handles[-op.size :]:
                handle.cancel()
        if op.kind != "cancel":
            submitted += op.size
    stats = d.stop(cancel=True) if stop_with_cancel else (d.join(), d.stats())[1]
    assert stats.submitted == submitted
    assert stats.succeeded + stats.failed + stats.cancelled == submitted
    assert sum(w.succeeded + w.failed for w in stats.workers) == stats.succeeded + stats.failed
    assert all(h.done() for h in handles)
    if not stop_with_cancel:
        cancelled_handles = sum(h.cancelled() for h in handles)
        assert stats.cancelled == cancelled_handles


@given(
    workers=st.integers(min_value=1, max_value=8),
    jobs=st.integers(min_value=0, max_value=200),
    chunk=st.integers(min_value=1, max_value=9),
    block=st.integers(min_value=1, max_value=12),
)
def test_submitted_jobs_run_on_the_worker_their_strategy_names(
    workers: int, jobs: int, chunk: int, block: int
) -> None:
    for strategy in (RoundRobin(), Batch(block)):
        # Placement as the strategy says it: no idle worker takes another's jobs.
        with Dispatcher(workers, strategy=strategy, chunk=chunk, steal=False) as d:
            handles = [d.submit(abs, -i) for i in range(jobs)]
            outcomes = list(d.map(abs, range(jobs), outcomes=True))
        for handle in handles:
            assert handle.worker == strategy.assign(handle.job_id, None, workers)
        for outcome in outcomes:
            assert outcome.worker == strategy.assign(outcome.job_id, None, workers)
        assert [o.value for o in outcomes] == list(range(jobs))


@given(
    workers=st.integers(min_value=1, max_value=8),
    keys=st.lists(st.integers(min_value=0, max_value=9), max_size=200),
    chunk=st.integers(min_value=1, max_value=9),
)
def test_key_strategy_one_key_one_worker_order_kept(
    workers: int, keys: list[int], chunk: int
) -> None:
    ran: dict[int, list[int]] = {}
    lock = threading.Lock()

    def record(item: tuple[int, int]) -> None:
        key, position = item
        with lock:
            ran.setdefault(key, []).append(position)

    with Dispatcher(workers, strategy=ByKey(), chunk=chunk) as d:
        outcomes = list(
            d.map(
                record,
                list(zip(keys, range(len(keys)), strict=True)),
                key=lambda t: t[0],
                outcomes=True,
            )
        )
    workers_of_key: dict[int, set[int | None]] = {}
    for key, outcome in zip(keys, outcomes, strict=True):
        workers_of_key.setdefault(key, set()).add(outcome.worker)
    assert all(len(ws) == 1 for ws in workers_of_key.values())
    for key, positions in ran.items():
        assert positions == sorted(positions)
        assert len(positions) == keys.count(key)


@given(
    workers=st.integers(min_value=1, max_value=8),
    jobs=st.integers(min_value=0, max_value=500),
    chunk=st.integers(min_value=1, max_value=50),
)
def test_pull_runs_every_job_exactly_once(workers: int, jobs: int, chunk: int) -> None:
    ran: list[int] = []
    with Dispatcher(workers, strategy=Pull(), chunk=chunk) as d:
        d.dispatch(ran.append, range(jobs))
        handles = [d.submit(ran.append, -1 - i) for i in range(jobs // 5)]
    assert sorted(ran) == sorted([*range(jobs), *(-1 - i for i in range(len(handles)))])
    stats = d.stats()
    assert stats.succeeded == jobs + len(handles) == stats.submitted
