"""The core promises, checked for every worker kind: thread, process and async.

The same hypothesis properties as tests/test_properties.py, through
``dispatchkit.testing.open_harness``; process workers get fewer examples
(each starts real processes).
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dispatchkit.strategies import Batch, RoundRobin
from dispatchkit.testing import EXECUTORS, open_harness
from tests import jobs

EXAMPLES = {"thread": 40, "process": 8, "async": 40}


@dataclass
class Op:
    kind: str
    size: int


operations = st.lists(
    st.builds(
        Op,
        kind=st.sampled_from(["submit", "dispatch", "map", "cancel"]),
        size=st.integers(min_value=0, max_value=40),
    ),
    max_size=6,
)


@pytest.mark.parametrize("executor", EXECUTORS)
def test_every_job_ends_exactly_once_and_is_counted(executor: str) -> None:
    @settings(max_examples=EXAMPLES[executor])
    @given(
        strategy=st.sampled_from(["round_robin", "batch", "pull", "key"]),
        workers=st.integers(min_value=1, max_value=3 if executor == "process" else 6),
        chunk=st.integers(min_value=1, max_value=10),
        ops=operations,
        cancel_at_end=st.booleans(),
    )
    def check(strategy: str, workers: int, chunk: int, ops: list[Op], cancel_at_end: bool) -> None:
        key = str if strategy == "key" else None
        submitted = 0
        with open_harness(executor, workers, strategy=strategy, chunk=chunk, block=3) as h:
            handles = []
            for op in ops:
                if op.kind == "submit":
                    handles += [h.submit(jobs.flaky, i, key=i) for i in range(op.size)]
                elif op.kind == "dispatch":
                    assert h.dispatch(jobs.flaky, range(op.size), key) == op.size
                elif op.kind == "map":
                    outcomes = h.map(jobs.flaky, range(op.size), key)
                    assert [o.ok for o in outcomes] == [i % 3 != 0 for i in range(op.size)]
                    assert [o.value for o in outcomes if o.ok] == [
                        i for i in range(op.size) if i % 3
                    ]
                else:
                    for handle in handles[-op.size :]:
                        h.cancel(handle)
                if op.kind != "cancel":
                    submitted += op.size
            stats = h.stop() if cancel_at_end else h.join()
            for handle in handles:
                assert h.outcome(handle, timeout=30).status.finished
        assert stats.submitted == submitted
        assert stats.succeeded + stats.failed + stats.cancelled == submitted
        assert sum(w.succeeded + w.failed for w in stats.workers) == stats.succeeded + stats.failed

    check()


@pytest.mark.parametrize("executor", EXECUTORS)
def test_jobs_run_on_the_worker_their_strategy_names(executor: str) -> None:
    @settings(max_examples=EXAMPLES[executor])
    @given(
        workers=st.integers(min_value=1, max_value=3 if executor == "process" else 6),
        count=st.integers(min_value=0, max_value=60),
        chunk=st.integers(min_value=1, max_value=7),
        block=st.integers(min_value=1, max_value=9),
    )
    def check(workers: int, count: int, chunk: int, block: int) -> None:
        for strategy in (RoundRobin(), Batch(block)):
            with open_harness(executor, workers, strategy=strategy, chunk=chunk) as h:
                handles = [h.submit(jobs.square, i) for i in range(count)]
                mapped = h.map(jobs.square, range(count), None)
                submitted = [h.outcome(handle) for handle in handles]
            for outcome in [*submitted, *mapped]:
                assert outcome.worker == strategy.assign(outcome.job_id, None, workers)
            assert [o.value for o in mapped] == [i * i for i in range(count)]

    check()


@pytest.mark.parametrize("executor", EXECUTORS)
def test_key_one_key_one_worker_order_kept_and_pull_runs_each_job_once(executor: str) -> None:
    @settings(max_examples=EXAMPLES[executor])
    @given(
        workers=st.integers(min_value=1, max_value=3 if executor == "process" else 6),
        keys=st.lists(st.integers(min_value=0, max_value=5), max_size=60),
        chunk=st.integers(min_value=1, max_value=7),
    )
    def check(workers: int, keys: list[int], chunk: int) -> None:
        with open_harness(executor, workers, strategy="key", chunk=chunk) as h:
            outcomes = h.map(jobs.square, keys, lambda k: k)
        by_key: dict[int, list[tuple[int, float | None, int | None]]] = {}
        for key, outcome in zip(keys, outcomes, strict=True):
            by_key.setdefault(key, []).append((outcome.job_id, outcome.started_at, outcome.worker))
        for runs in by_key.values():
            assert len({worker for _, _, worker in runs}) == 1
            starts = [started for _, started, _ in sorted(runs)]
            assert starts == sorted(starts)  # type: ignore[type-var]
        with open_harness(executor, workers, strategy="pull", chunk=chunk) as h:
            pulled = h.map(jobs.square, range(len(keys)), None)
        assert [o.value for o in pulled] == [i * i for i in range(len(keys))]
        assert len({o.job_id for o in pulled}) == len(keys)

    check()
