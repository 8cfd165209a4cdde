"""The conformance kit of ``dispatchkit.testing``: every check on every target.

A (target, check) pair marked ``xfail`` is a divergence of that front end
today, recorded exactly: the mark is strict, so fixing the front end turns it
into a failure here until the mark is removed.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator

import pytest

from dispatchkit.testing import (
    CHECKS,
    TARGETS,
    Target,
    TargetUnavailable,
    check_accounting,
    check_batch_blocks,
    check_round_robin_spread,
)

#: Hypothesis examples of the checks that take ``max_examples``, per target
#: (each example opens a front end: process workers and Redis cost more).
EXAMPLES: dict[Callable[..., None], dict[str, int]] = {
    check_accounting: {"thread": 100, "async": 100, "process": 25, "redis": 10},
    check_round_robin_spread: {"thread": 50, "async": 50, "process": 12, "redis": 6},
    check_batch_blocks: {"thread": 50, "async": 50, "process": 12, "redis": 6},
}

#: What each front end does differently today, (front end, check) -> why; it
#: applies to every target on that front end.
DIVERGENCES: dict[tuple[str, Callable[[Target], None]], str] = {}


def _cases() -> Iterator[object]:
    for target, entry in TARGETS.items():
        # A target that needs a server is skipped without one, except in CI.
        marks = [pytest.mark.redis] if entry.needs_server else []
        for check in CHECKS:
            why = DIVERGENCES.get((entry.front_end, check))
            xfail = [pytest.mark.xfail(strict=True, reason=why)] if why else []
            yield pytest.param(
                target, check, marks=[*marks, *xfail], id=f"{target}-{check.__name__}"
            )


@pytest.fixture
def target(request: pytest.FixtureRequest) -> Iterator[Target]:
    name = request.param
    try:
        with TARGETS[name]() as ready:
            yield ready
    except TargetUnavailable as exc:
        if os.environ.get("CI"):
            pytest.fail(f"target {name}: {exc}")
        pytest.skip(f"target {name}: {exc}")


@pytest.mark.parametrize(("target", "check"), list(_cases()), indirect=["target"])
def test_conformance(target: Target, check: Callable[..., None]) -> None:
    if check in EXAMPLES:
        check(target, max_examples=EXAMPLES[check].get(target.name, 10))
    else:
        check(target)


def test_every_divergence_names_a_front_end_and_a_check() -> None:
    assert {name for name, _ in DIVERGENCES} <= {entry.front_end for entry in TARGETS.values()}
    assert {check for _, check in DIVERGENCES} <= set(CHECKS)


def test_a_late_job_neither_keeps_the_scratch_directory_nor_a_held_job_waiting() -> None:
    # A remote job that cannot be recalled may log while the check's directory
    # is removed, and a held job's thread may not have had a turn to see its gate
    # open: the directory must go all the same, and the held job must return.
    from dispatchkit._conformance import jobs
    from dispatchkit._conformance.common import scratch

    writing = threading.Event()
    stop_writing = threading.Event()
    held: list[int] = []

    def keep_logging(log: str) -> None:
        while not stop_writing.is_set():
            with contextlib.suppress(FileNotFoundError):  # once the directory is gone
                jobs.note([log, 0])
            writing.set()

    with scratch() as tmp:
        log, gate = str(tmp / "log"), str(tmp / "held")
        writer = threading.Thread(target=keep_logging, args=(log,), name="late-job")
        holder = threading.Thread(target=lambda: held.append(jobs.hold([gate, 7])), name="held")
        writer.start()
        holder.start()
        writing.wait(10)
    try:
        # The gate never opened: only the directory's going ends the held job.
        holder.join(jobs.HOLD_LIMIT / 2)
        assert held == [7], "the held job still waits for a gate whose directory is gone"
        assert not tmp.exists(), "a job logging meanwhile kept the scratch directory"
    finally:
        stop_writing.set()
        writer.join()
        holder.join()
