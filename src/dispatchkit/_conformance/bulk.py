"""Checks of the bulk calls' options: map's options and window, dispatch, chunk counts."""

from __future__ import annotations

from dispatchkit.job import JobStatus

from . import jobs
from .common import is_value_error, workers_for
from .face import STRATEGIES, Target

__all__ = [
    "check_chunked_map_counts",
    "check_dispatch",
    "check_map_options",
    "check_window_validation",
]


def _first(item: int | tuple[int, int]) -> int:
    """The key of an item of ``map``, or of ``map(star=True)``."""
    return item if isinstance(item, int) else item[0]


def check_map_options(target: Target) -> None:
    """``map(ordered=False)`` yields every result once, in any order;
    ``outcomes=True`` yields an outcome per item instead of raising; ``star=True``
    unpacks each item as the arguments."""
    workers = workers_for(target, 2)
    for strategy in STRATEGIES:
        key = (
            (lambda item: item if isinstance(item, int) else item[0]) if strategy == "key" else None
        )
        with target.open(workers, strategy=strategy, chunk=2) as front:
            items = list(range(15))
            unordered = front.map(jobs.square, items, ordered=False, key=key)
            assert sorted(unordered) == [i * i for i in items], unordered
            outcomes = front.map(jobs.flaky, items, outcomes=True, key=key)
            assert [o.status for o in outcomes] == [
                JobStatus.FAILED if i % 3 == 0 else JobStatus.SUCCEEDED for i in items
            ]
            assert [o.value for o in outcomes if o.ok] == [i for i in items if i % 3]
            assert all(is_value_error(o.error) for o in outcomes if not o.ok)
            pairs = [(i, 10 * i) for i in items]
            assert front.map(jobs.add, pairs, star=True, key=key) == [11 * i for i in items]


def check_window_validation(target: Target) -> None:
    """``map(window=0)`` or a negative window raises ``ValueError`` and runs nothing."""
    with target.open(workers_for(target, 2), strategy="pull") as front:
        for window in (0, -1):
            try:
                got = front.map(jobs.square, range(5), window=window)
            except ValueError:
                pass
            else:
                raise AssertionError(f"map(window={window}) raised nothing and gave {got}")
        front.join()
        counts = front.counts()
    assert counts.submitted == 0, f"a refused map still submitted jobs: {counts}"


def check_dispatch(target: Target) -> None:
    """``dispatch`` runs every item fire-and-forget and returns how many; after
    ``join`` each success and failure is counted."""
    for strategy in STRATEGIES:
        key = (lambda item: item) if strategy == "key" else None
        with target.open(workers_for(target, 2), strategy=strategy, chunk=3) as front:
            assert front.dispatch(jobs.flaky, range(20), key=key) == 20
            assert front.dispatch(jobs.flaky, [], key=key) == 0
            front.join()
            counts = front.counts()
        failures = len(range(0, 20, 3))
        assert (counts.submitted, counts.failed, counts.succeeded) == (
            20,
            failures,
            20 - failures,
        ), f"{strategy}: {counts} after dispatching 20 jobs, {failures} of them failing"


def check_chunked_map_counts(target: Target) -> None:
    """A chunked ``map`` counts jobs, not chunks: ``submitted`` is the number of items."""
    with target.open(workers_for(target, 2), strategy="pull", chunk=3) as front:
        assert front.map(jobs.square, range(7)) == [i * i for i in range(7)]
        front.join()
        counts = front.counts()
    assert (counts.submitted, counts.succeeded) == (7, 7), counts
