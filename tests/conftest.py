from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

# Hypothesis examples here start real threads: allow them time, and keep the
# number of examples moderate so `make test` stays quick.
settings.register_profile(
    "dispatchkit",
    deadline=None,
    max_examples=60,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("dispatchkit")


def _worker_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if "-worker-" in t.name]


@pytest.fixture(autouse=True)
def no_leftover_threads() -> Iterator[None]:
    """Every test must leave no worker thread behind (the clean-shutdown promise)."""
    before = set(_worker_threads())
    yield
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        left = [t for t in _worker_threads() if t not in before and t.is_alive()]
        if not left:
            return
        time.sleep(0.01)
    pytest.fail(f"worker threads left running: {[t.name for t in left]}")
