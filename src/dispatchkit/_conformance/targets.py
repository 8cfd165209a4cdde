"""Every conformance target by name, and every check: the two axes of the suite."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

from . import accounting, bulk, lifecycle, placement
from .face import Target
from .local import AsyncTarget, LocalTarget
from .remote import MemoryCluster, ServerCluster, redis_server_url, started

__all__ = ["CHECKS", "TARGETS", "TargetEntry"]


@dataclass(frozen=True)
class TargetEntry:
    """How to open one target, and what it is, known before it is opened.

    Calling the entry gives a context manager that yields the target ready
    (its workers running, for a remote one) and releases it on leaving; it
    raises ``TargetUnavailable`` when the target cannot run here.

    Attributes:
        front_end: the class the target drives (the known divergences of a
            front end apply to every target on it).
        needs_server: the target needs a server (a test run may skip it).
    """

    opener: Callable[[], AbstractContextManager[Target]]
    front_end: str
    needs_server: bool = False

    def __call__(self) -> AbstractContextManager[Target]:
        return self.opener()


#: Each target by name. A new worker kind or transport is one more entry.
TARGETS: dict[str, TargetEntry] = {
    "thread": TargetEntry(lambda: nullcontext(LocalTarget("thread")), "Dispatcher"),
    "process": TargetEntry(lambda: nullcontext(LocalTarget("process")), "Dispatcher"),
    "async": TargetEntry(lambda: nullcontext(AsyncTarget()), "AsyncDispatcher"),
    "redis-memory": TargetEntry(
        lambda: started(MemoryCluster(), "redis-memory", identity="none"), "RedisDispatcher"
    ),
    "redis": TargetEntry(
        lambda: started(ServerCluster(redis_server_url()), "redis"),
        "RedisDispatcher",
        needs_server=True,
    ),
}

#: Every check of the kit; each takes a target (``check_accounting`` also a
#: ``max_examples``).
CHECKS: tuple[Callable[[Target], None], ...] = (
    accounting.check_accounting,
    placement.check_round_robin_spread,
    placement.check_batch_blocks,
    placement.check_key_order,
    placement.check_pull_runs_each_job_once,
    placement.check_map,
    bulk.check_map_options,
    bulk.check_window_validation,
    bulk.check_dispatch,
    bulk.check_chunked_map_counts,
    placement.check_error_isolation,
    lifecycle.check_cancel,
    lifecycle.check_stop_cancels_queued,
    lifecycle.check_close_join_idempotent,
    lifecycle.check_stop_shutdown_idempotent,
)
