"""What the checks share: the workers to open with, where a job ran, logs, gates."""

from __future__ import annotations

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

    The worker is the outcome's index, or the pid that ran the job (then the
    job id is its position: each front end numbers its jobs from 0). With
    ``keyed``, each job's key is its item.
    """
    key = (lambda item: item) if keyed else None
    handles = [front.submit(jobs.where, i, key=i if keyed else None) for i in range(count)]
    if target.capabilities.identity == "index":
        submitted = [front.outcome(handle) for handle in handles]
        mapped = front.map(jobs.where, range(count), outcomes=True, key=key)
        return [(o.job_id, o.worker) for o in [*submitted, *mapped]]
    values = [front.result(handle) for handle in handles]
    values += front.map(jobs.where, range(count), key=key)
    return [(position, pid) for position, (_, pid) in enumerate(values)]


@contextmanager
def scratch() -> Iterator[Path]:
    """A directory for the logs of one check."""
    with tempfile.TemporaryDirectory(prefix="dkconf-") as name:
        yield Path(name)


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
