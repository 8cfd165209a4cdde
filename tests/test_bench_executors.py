"""The bench adapters drive real process and asyncio workers."""

from __future__ import annotations

import pytest

from dispatchkit.bench import BenchOptions, make_plan, run_bench


@pytest.mark.parametrize(("executor", "workload"), [("process", "cpu"), ("async", "io")])
def test_each_worker_kind_runs_a_workload_and_is_measured(executor: str, workload: str) -> None:
    results = run_bench(
        BenchOptions(
            workloads=(workload,),
            executors=(executor,),
            strategies=("round_robin", "pull", "key"),
            jobs=12,
            repeat=1,
            chunks=(1, 4),
            workers=(2,),
        )
    )
    assert len(results.results) == 3 * 2 + 1  # and the defaults
    for result in results.results:
        assert result.config.executor == executor
        [metrics] = result.metrics
        assert metrics.jobs == 12
        assert metrics.makespan > 0
        assert len(metrics.busy) == 2
        assert sum(metrics.busy) > 0


def test_the_default_plan_covers_every_worker_kind() -> None:
    plan = make_plan(BenchOptions(workloads=("noop",), executors=("all",)))
    assert {c.executor for c in plan.configs} == {"thread", "process", "async"}


def test_a_sync_only_function_skips_async_workers() -> None:
    plan = make_plan(BenchOptions(workloads=("json:dumps",), inputs="range:5"))
    assert "async" not in {c.executor for c in plan.configs}
    assert any("async workers skipped" in note for note in plan.notes)


def test_auto_runs_processes_only_where_they_help() -> None:
    plan = make_plan(BenchOptions(workloads=("noop", "cpu")))
    kinds = {(c.workload, c.executor) for c in plan.configs}
    assert ("noop", "process") not in kinds
    assert {("noop", "thread"), ("noop", "async"), ("cpu", "process")} <= kinds
    quick = make_plan(BenchOptions(workloads=("cpu",), quick=True))
    assert "process" not in {c.executor for c in quick.configs}


@pytest.mark.parametrize("like", ["thread", "async"])
def test_a_worker_kind_added_to_the_registry_is_benched_with_no_bench_edit(
    like: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The adapter reads the kind's front end and what jobs it takes from the
    # registry: a new name for an existing pool runs as its model does.
    from dataclasses import replace

    from dispatchkit.bench import adapters
    from dispatchkit.bench.config import Config
    from dispatchkit.bench.workloads import resolve_workload
    from dispatchkit.executors import registry

    # (The entry keeps its model's name: Settings checks ``executor`` against the
    # kinds known at import.)
    monkeypatch.setitem(registry.WORKER_KINDS, "spare", replace(registry.WORKER_KINDS[like]))
    workload = resolve_workload("io", 8, None)
    run = adapters.run_kind(workload, Config("io", "spare", "round_robin", 1, 2))
    assert adapters.available("spare")
    assert sorted(job.index for job in run.jobs) == list(range(8))
