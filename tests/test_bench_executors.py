"""The process and async adapters against stand-ins with the announced API.

This version of dispatchkit has thread workers only. These tests check that
the adapters detect and drive ``Dispatcher(..., executor="process")`` and
``AsyncDispatcher`` as announced, so that they work as soon as those exist.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from time import perf_counter
from types import TracebackType
from typing import Any

import pytest

import dispatchkit
from dispatchkit import Dispatcher, JobStatus, Outcome
from dispatchkit.bench import BenchOptions, Config, adapters, make_plan, resolve_workload, run_bench


class _ProcessCapableDispatcher(Dispatcher):
    """Takes ``executor="process"`` and runs on threads: enough to test the adapter."""

    seen: list[str] = []  # noqa: RUF012 (a record for the test, shared on purpose)

    def __init__(self, workers: int | None = None, *, executor: str = "thread", **kw: Any) -> None:
        self.seen.append(executor)
        super().__init__(workers, **kw)


class _FakeAsyncDispatcher:
    """Runs coroutines one after another, attributing them round-robin."""

    def __init__(self, workers: int, *, strategy: str, chunk: int) -> None:
        self.workers = workers

    async def __aenter__(self) -> _FakeAsyncDispatcher:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None

    def map(
        self,
        fn: Callable[[Any], Any],
        items: list[Any],
        *,
        outcomes: bool,
        key: Callable[[Any], Any] | None = None,
    ) -> AsyncIterator[Outcome[Any]]:
        async def run() -> AsyncIterator[Outcome[Any]]:
            submitted = perf_counter()
            for seq, item in enumerate(items):
                started = perf_counter()
                value = await fn(item)
                yield Outcome(
                    job_id=seq,
                    status=JobStatus.SUCCEEDED,
                    value=value,
                    worker=seq % self.workers,
                    submitted_at=submitted,
                    started_at=started,
                    finished_at=perf_counter(),
                    attempts=1,
                )

        return run()


def test_process_adapter_asks_for_process_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(adapters, "Dispatcher", _ProcessCapableDispatcher)
    assert adapters.available("process")
    workload = resolve_workload("noop", 40, None)
    run = adapters.run_process(workload, Config("noop", "process", "pull", 4, 2))
    assert _ProcessCapableDispatcher.seen[-1] == "process"
    assert len(run.jobs) == 40
    plan = make_plan(BenchOptions(workloads=("noop",), executors=("all",)))
    assert "process" in {c.executor for c in plan.configs}


def test_async_adapter_drives_an_async_dispatcher(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dispatchkit, "AsyncDispatcher", _FakeAsyncDispatcher, raising=False)
    assert adapters.available("async")
    results = run_bench(
        BenchOptions(
            workloads=("io",), executors=("async",), strategies=("round_robin", "key"),
            jobs=12, repeat=1, chunks=(1,), workers=(3,),
        )
    )  # fmt: skip
    for result in results.results:
        assert result.config.executor == "async"
        [metrics] = result.metrics
        assert metrics.jobs == 12
        assert metrics.busy[0] > 0


def test_a_sync_only_function_skips_async_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dispatchkit, "AsyncDispatcher", _FakeAsyncDispatcher, raising=False)
    plan = make_plan(BenchOptions(workloads=("json:dumps",), inputs="range:5"))
    assert {c.executor for c in plan.configs} == {"thread"}
    assert any("async workers skipped" in note for note in plan.notes)
