"""What the checks share: the workers to open with, where a job ran, logs, gates."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from . import jobs
from .face import FrontEnd, Target


def workers_for(target: Target, wanted: int) -> int:
    """``wanted`` workers, or the target's own number if it does not choose per front end."""
    fixed = target.capabilities.fixed_workers
    return wanted if fixed is None else fixed


def is_value_error(error: BaseException | None) -> bool:
    """The error a ``ValueError`` raised by a job became (remote jobs name its type)."""
    return isinstance(error, ValueError) or str(getattr(error, "type_name", "")).endswith(
        "ValueError"
    )


def examples(
    max_examples: int, check: Callable[..., None], **strategies: Callable[[Any], Any]
) -> None:
    """Run ``check`` over ``max_examples`` examples drawn by hypothesis.

    Each of ``strategies`` is a function of the ``hypothesis.strategies``
    module giving the strategy of the argument of that name. Deadlines are off
    (examples start real workers) and nothing is stored between runs.

    Raises:
        RuntimeError: hypothesis is not installed (a dev dependency, not one of
            the library's).
    """
    try:
        from hypothesis import HealthCheck, given, settings
        from hypothesis import strategies as st
    except ImportError as exc:
        raise RuntimeError(f"this check needs hypothesis ({exc})") from None
    run = settings(
        max_examples=max_examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )(given(**{name: make(st) for name, make in strategies.items()})(check))
    run()


def worker_counts(target: Target, st: Any, most: int = 3) -> Any:
    """The hypothesis strategy of the number of workers to open ``target`` with."""
    fixed = target.capabilities.fixed_workers
    return st.just(fixed) if fixed else st.integers(min_value=1, max_value=most)


def error_of(call: Callable[[], object]) -> BaseException | None:
    """The exception ``call()`` raises, or None."""
    try:
        call()
    except Exception as exc:
        return exc
    return None


def placements(
    target: Target, front: FrontEnd, count: int, *, keyed: bool = False
) -> list[tuple[int, Hashable]]:
    """Run ``count`` jobs by ``submit``, then ``count`` by ``map``: ``(job id, worker)`` each.

    The worker is the outcome's index, or where the ``where`` job ran (then the
    job id is its position: each front end numbers its jobs from 0). With
    ``keyed``, each job's key is its item.
    """
    key = (lambda item: item) if keyed else None
    handles = [front.submit(jobs.where, i, key=i if keyed else None) for i in range(count)]
    if target.capabilities.identity == "index":
        submitted = [front.outcome(handle) for handle in handles]
        mapped = front.map(jobs.where, range(count), outcomes=True, key=key)
        came_back = [o.value[0] for o in [*submitted, *mapped] if o.ok]
        assert came_back == [*range(count), *range(count)], f"results out of order: {came_back}"
        return [(o.job_id, o.worker) for o in [*submitted, *mapped]]
    values = [front.result(handle) for handle in handles]
    values += front.map(jobs.where, range(count), key=key)
    came_back = [item for item, _ in values]
    assert came_back == [*range(count), *range(count)], f"results out of order: {came_back}"
    return [(position, pid) for position, (_, pid) in enumerate(values)]


@contextmanager
def scratch() -> Iterator[Path]:
    """A directory for the logs of one check.

    A job that cannot be recalled may still log while it goes (a published
    Redis job that a ``stop`` cancelled): that is no error of the check. The
    directory is renamed away before it is removed, so such a job cannot bring
    it back by logging meanwhile, and a held job still waiting for its gate
    (one its thread had no turn to see open) sees the directory gone and returns.
    """
    name = tempfile.mkdtemp(prefix="dkconf-")
    try:
        yield Path(name)
    finally:
        gone = f"{name}.gone"
        os.rename(name, gone)
        shutil.rmtree(gone, ignore_errors=True)


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.005)


@contextmanager
def held_workers(target: Target, front: FrontEnd, log: Path) -> Iterator[list[Any]]:
    """Every worker busy with a job that waits for a gate; the gate opens on leaving.

    Yields the held jobs' handles, once each has started (so jobs submitted
    inside the block stay queued behind them).
    """
    hold = jobs.hold_async if target.capabilities.async_jobs else jobs.hold
    path = str(log)
    handles = [front.submit(hold, [path, i]) for i in range(front.workers)]
    try:
        wait_until(lambda: len(jobs.read_log(path)) >= front.workers, "the held jobs started")
        yield handles
    finally:
        Path(f"{path}.open").touch()
