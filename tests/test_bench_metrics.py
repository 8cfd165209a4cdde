"""Metrics, verdicts and recommendations on synthetic runs with known timings."""

from __future__ import annotations

import math

import pytest

from dispatchkit.bench import (
    BenchOptions,
    BenchResults,
    Config,
    ConfigResult,
    JobRecord,
    Plan,
    RunRecord,
    Usage,
    best_per_strategy,
    compute_metrics,
    judge,
    percentile,
    recommend,
)
from dispatchkit.bench.workloads import Workload

NO_USAGE = Usage(0.0, 0, 0)


def test_percentile_interpolates_like_numpy() -> None:
    values = [1.0, 2.0, 3.0, 4.0]
    assert percentile(values, 0) == 1.0
    assert percentile(values, 100) == 4.0
    assert percentile(values, 50) == pytest.approx(2.5)
    assert percentile(values, 95) == pytest.approx(3.85)
    assert percentile([7.0], 99) == 7.0
    assert percentile(list(range(101)), 99) == pytest.approx(99)


@pytest.mark.parametrize("q", [-1, 101])
def test_percentile_rejects_out_of_range(q: float) -> None:
    with pytest.raises(ValueError, match="between 0 and 100"):
        percentile([1.0], q)


def test_percentile_of_nothing_is_an_error() -> None:
    with pytest.raises(ValueError, match="no values"):
        percentile([], 50)


def test_metrics_of_a_known_run() -> None:
    # Worker 0 runs two 1 s jobs back to back; worker 1 starts 0.5 s late and
    # runs one 1 s job; worker 2 never runs anything. Makespan 2 s.
    run = RunRecord(
        makespan=2.0,
        workers=3,
        jobs=(
            JobRecord(0, 0.0, 0.0, 1.0, index=0),
            JobRecord(0, 0.0, 1.0, 2.0, index=1),
            JobRecord(1, 0.0, 0.5, 1.5, ok=False, index=2),
        ),
        usage=Usage(1.25, 10, 3),
    )
    m = compute_metrics(run)
    assert m.jobs == 3
    assert m.failed == 1
    assert m.throughput == pytest.approx(1.5)
    assert m.busy == (2.0, 1.0, 0.0)
    # Idle before the first job: none, half a second, the whole run.
    assert m.idle_before_first == (0.0, 0.5, 2.0)
    assert m.max_idle_before_first == 2.0
    assert m.utilisation == pytest.approx(3.0 / 6.0)
    # Busiest (2 s) over the mean (1 s).
    assert m.imbalance == pytest.approx(2.0)
    # Latencies 1, 2, 1.5 s.
    assert m.latency_p50 == pytest.approx(1.5)
    assert m.latency_p99 == pytest.approx(1.99)
    assert (m.cpu_seconds, m.voluntary_switches, m.involuntary_switches) == (1.25, 10, 3)


def test_even_work_has_imbalance_one() -> None:
    jobs = tuple(JobRecord(w, 0.0, 0.0, 0.25) for w in range(4))
    m = compute_metrics(RunRecord(0.25, 4, jobs, NO_USAGE))
    assert m.imbalance == pytest.approx(1.0)
    assert m.utilisation == pytest.approx(1.0)


def test_metrics_reject_bad_runs() -> None:
    with pytest.raises(ValueError, match="without jobs"):
        compute_metrics(RunRecord(1.0, 2, (), NO_USAGE))
    with pytest.raises(ValueError, match="worker 5"):
        compute_metrics(RunRecord(1.0, 2, (JobRecord(5, 0, 0, 1),), NO_USAGE))


def test_usage_subtracts() -> None:
    assert Usage(3.0, 10, 4) - Usage(1.0, 4, 1) == Usage(2.0, 6, 3)


# -- verdicts ---------------------------------------------------------------


def _result(strategy: str | None, makespans: list[float], executor: str = "thread") -> ConfigResult:
    """A configuration whose repeats each ran 100 jobs in the given makespans."""
    config = Config("w", executor, strategy, 1, 2)
    result = ConfigResult(config)
    for makespan in makespans:
        jobs = tuple(JobRecord(i % 2, 0.0, 0.0, makespan) for i in range(100))
        run = RunRecord(makespan, 2, jobs, NO_USAGE)
        result.runs.append(run)
        result.metrics.append(compute_metrics(run))
    return result


def test_a_clear_winner_and_its_margin() -> None:
    fast = _result("pull", [1.0, 1.1, 0.9])
    slow = _result("batch", [2.0, 2.2, 1.8])
    verdict = judge("w", [slow, fast])
    assert verdict.best is fast
    assert verdict.runner_up is slow
    assert verdict.margin == pytest.approx(1.0)  # twice the throughput
    assert verdict.clear is True
    assert "fastest is pull" in verdict.line()
    assert "100% more than batch" in verdict.line()


def test_overlapping_repeats_are_no_clear_winner() -> None:
    a = _result("pull", [1.0, 1.5, 0.8])
    b = _result("round_robin", [1.1, 0.9, 1.4])
    verdict = judge("w", [a, b])
    assert verdict.clear is False
    assert verdict.line().startswith("w: no clear winner")


def test_the_verdict_names_the_slowest_of_three() -> None:
    fast = _result("pull", [1.0, 1.0])
    verdict = judge("w", [_result("batch", [4.0, 4.0]), fast, _result("key", [2.0, 2.0])])
    assert verdict.slowest is not None
    assert verdict.slowest.config.strategy == "batch"
    assert "Slowest: batch c1 thread x2, 4.0x fewer jobs/s than the best." in verdict.line()


def test_a_tiny_margin_is_no_clear_winner_even_without_overlap() -> None:
    a = _result("pull", [1.00, 1.00, 1.00])
    b = _result("round_robin", [1.01, 1.01, 1.01])
    assert judge("w", [a, b]).clear is False


def test_one_repeat_is_not_judged_for_noise() -> None:
    verdict = judge("w", [_result("pull", [1.0]), _result("batch", [2.0])])
    assert verdict.clear is None
    assert "noise not judged" in verdict.line()


def test_recommendation_names_the_setting_and_the_margin() -> None:
    results = BenchResults(
        options=BenchOptions(),
        plan=Plan({"w": Workload("w", abs, None, [1], builtin=False)}, [], 3),
        results=[
            _result("pull", [1.0, 1.0, 1.0]),
            _result("batch", [1.5, 1.5, 1.5]),
            _result(None, [0.5, 0.5, 0.5], executor="ThreadPoolExecutor"),
        ],
        machine={},
        started="",
        seconds=1.0,
    )
    line = recommend(results, "w")
    assert line.startswith(
        "Recommendation for w: strategy=pull, chunk=1, thread workers, workers=2"
    )
    assert "50% more jobs/s than the next best, batch c1 thread x2" in line
    assert "ThreadPoolExecutor x2 was 100% faster still" in line
    assert not math.isnan(results.results[0].median("throughput"))


def _defaults(makespans: list[float]) -> ConfigResult:
    """The "dispatchkit defaults" configuration, its repeats in these makespans."""
    result = _result("auto", makespans)
    result.config = Config.defaults("w", "thread", 2)
    return result


@pytest.mark.parametrize(
    ("defaults", "expected"),
    [
        ([1.02, 1.02, 1.02], "The defaults are already within 5% of it."),
        ([2.0, 2.0, 2.0], "The defaults take 2.00x its time."),
        # Runs too short to tell: one repeat of the defaults beat the best's slowest.
        ([0.9, 2.0, 2.0], "The defaults took 2.00x its time, within noise"),
    ],
)
def test_the_recommendation_says_whether_the_defaults_trail_beyond_noise(
    defaults: list[float], expected: str
) -> None:
    results = BenchResults(
        options=BenchOptions(),
        plan=Plan({"w": Workload("w", abs, None, [1], builtin=False)}, [], 3),
        results=[_result("pull", [1.0, 1.0, 1.0]), _defaults(defaults)],
        machine={},
        started="",
        seconds=1.0,
    )
    assert expected in recommend(results, "w")


def test_best_per_strategy_keeps_each_strategys_fastest() -> None:
    slow_pull = _result("pull", [3.0])
    fast_pull = ConfigResult(Config("w", "thread", "pull", 8, 2))
    fast_pull.runs, fast_pull.metrics = (
        slow_pull.runs,
        [compute_metrics(RunRecord(1.0, 2, slow_pull.runs[0].jobs, NO_USAGE))],
    )
    peer = _result(None, [2.0], executor="asyncio")
    best = best_per_strategy([slow_pull, fast_pull, peer])
    assert best == {"pull": fast_pull, "stdlib": peer}
