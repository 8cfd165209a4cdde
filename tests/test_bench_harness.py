"""The harness through its Python API: workloads, adapters, peers, plans, charts."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from dispatchkit.bench import (
    BenchOptions,
    BenchUsageError,
    Config,
    adapters,
    draw_charts,
    make_plan,
    peers,
    resolve_workload,
    run_bench,
    to_json,
    workloads,
)


def test_cpu_job_is_calibrated_to_about_a_millisecond() -> None:
    workloads.calibrate_cpu()
    started = time.perf_counter()
    for i in range(20):
        workloads.cpu(i)
    per_job = (time.perf_counter() - started) / 20
    # Generous bounds: the machine is shared, but 10x off would be a bug.
    assert 0.0003 < per_job < 0.01


def test_skewed_has_one_slow_job_in_a_hundred_spread_over_workers() -> None:
    slow = [i for i in range(10_000) if workloads._is_slow(i)]
    assert 70 < len(slow) < 130
    # Round-robin on 8 workers must not send every slow job to the same few.
    assert len({i % 8 for i in slow}) == 8


def test_async_twins_return_what_the_sync_jobs_return() -> None:
    for name, (fn, afn, _, _) in workloads.BUILTIN.items():
        if name in ("io", "skewed", "mixed"):
            continue  # they sleep; noop and cpu are enough to check the pairing
        assert asyncio.run(afn(3)) == fn(3)


def test_a_user_function_and_its_errors() -> None:
    workload = resolve_workload("json:dumps", None, "range:5")
    assert workload.items == [0, 1, 2, 3, 4]
    assert workload.fn is not None
    assert workload.afn is None
    assert not workload.builtin
    with pytest.raises(BenchUsageError, match="must look like"):
        resolve_workload("json:", None, None)
    with pytest.raises(BenchUsageError, match="is not callable"):
        resolve_workload("json:__name__", None, None)


def test_jobs_limits_a_range_of_inputs() -> None:
    assert len(resolve_workload("json:dumps", 3, "range:10").items) == 3


def test_an_empty_inputs_file_is_an_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(BenchUsageError, match="holds no inputs"):
        resolve_workload("json:dumps", None, str(empty))
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{oops\n")
    with pytest.raises(BenchUsageError, match="line 1 is not JSON"):
        resolve_workload("json:dumps", None, str(bad))


def test_thread_adapter_times_every_job_on_a_real_worker() -> None:
    workload = resolve_workload("noop", 50, None)
    run = adapters.run_kind(workload, Config("noop", "thread", "round_robin", 1, 3))
    assert len(run.jobs) == 50
    assert {job.worker for job in run.jobs} == {0, 1, 2}
    assert sorted(job.index for job in run.jobs) == list(range(50))
    for job in run.jobs:
        assert 0 <= job.submitted <= job.started <= job.finished <= run.makespan


def test_key_strategy_runs_with_a_key_per_input() -> None:
    workload = resolve_workload("json:dumps", None, "range:20")
    run = adapters.run_kind(workload, Config("w", "thread", "key", 4, 2))
    assert len(run.jobs) == 20


def test_key_of_structured_inputs_is_stable() -> None:
    assert adapters.job_key({"b": 1, "a": 2}) == adapters.job_key({"a": 2, "b": 1})
    assert adapters.job_key(7) == 7


@pytest.mark.parametrize("peer", ["ThreadPoolExecutor", "asyncio"])
def test_in_process_peers_report_every_job(peer: str) -> None:
    workload = resolve_workload("noop", 30, None)
    run = peers.PEER_RUNNERS[peer](workload, Config("noop", peer, None, 1, 2))
    assert len(run.jobs) == 30
    assert run.workers >= 2
    assert all(0 <= job.started <= job.finished for job in run.jobs)


@pytest.mark.slow
# Python 3.12+ warns when forking with threads alive (pytest-timeout's timer is one).
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
@pytest.mark.parametrize("peer", ["ProcessPoolExecutor", "multiprocessing.Pool"])
def test_process_peers_report_every_job_and_child_cpu(peer: str) -> None:
    workload = resolve_workload("cpu", 20, None)
    run = peers.PEER_RUNNERS[peer](workload, Config("cpu", peer, None, 4, 2))
    assert len(run.jobs) == 20
    assert {job.worker for job in run.jobs} <= {0, 1}
    assert run.usage.cpu_seconds > 0.01  # the children's CPU time is counted


def test_plan_sweeps_and_quick_defaults() -> None:
    plan = make_plan(
        BenchOptions(workloads=("io",), strategies=("pull", "batch"), workers=(2, 4),
                     chunks=(1, 8), peers=True)
    )  # fmt: skip
    ours = [c for c in plan.configs if not c.is_peer and not c.is_defaults]
    # thread and async (auto leaves processes out of io) x 2 strategies x 2 worker
    # counts x 2 chunks
    assert len(ours) == 2 * 2 * 2 * 2
    # and what a user gets with no arguments, for each worker kind and count
    defaults = [c for c in plan.configs if c.is_defaults]
    assert {(c.executor, c.workers) for c in defaults} == {
        (e, n) for e in ("thread", "async") for n in (2, 4)
    }
    assert all(c.label.startswith("dispatchkit defaults") for c in defaults)
    assert {c.executor for c in plan.configs if c.is_peer} == set(peers.PEER_RUNNERS)
    quick = make_plan(BenchOptions(workloads=("io",), quick=True))
    assert quick.repeat == 2
    assert {c.chunk for c in quick.configs if not c.is_defaults} == {1}
    assert os.cpu_count() in BenchOptions().workers  # among the default worker counts
    assert (
        quick.workloads["io"].jobs < make_plan(BenchOptions(workloads=("io",))).workloads["io"].jobs
    )


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (BenchOptions(workers=()), "--workers needs at least one value"),
        (BenchOptions(chunks=()), "--chunk needs at least one value"),
        (BenchOptions(workers=(0,)), "--workers values must be at least 1"),
        (BenchOptions(strategies=("fifo",)), "unknown strategy"),
        (BenchOptions(executors=("gpu",)), "unknown executor 'gpu'"),
    ],
)
def test_plan_rejects_bad_options(options: BenchOptions, message: str) -> None:
    with pytest.raises(BenchUsageError, match=message):
        make_plan(options)


def test_run_bench_and_charts(tmp_path: Path) -> None:
    calls: list[tuple[int, int]] = []
    results = run_bench(
        BenchOptions(workloads=("skewed",), jobs=24, repeat=2, workers=(3,), chunks=(1,),
                     strategies=("batch", "round_robin"), executors=("thread",)),
        on_run=lambda done, total, _config: calls.append((done, total)),
    )  # fmt: skip
    # The two strategies and the defaults (what no arguments give), twice each.
    assert calls == [(i, 6) for i in range(6)]
    assert all(len(r.metrics) == 2 for r in results.results)
    data = to_json(results)
    assert data["repeat"] == 2
    [judged] = data["defaults"]
    assert judged.startswith("skewed: dispatchkit defaults thread x3 take ")
    assert "the time of the best configuration" in judged
    paths = draw_charts(results, tmp_path)
    assert [p.name for p in paths] == ["throughput.png", "latency.png", "timeline.png"]
    assert all(p.stat().st_size > 10_000 for p in paths)
