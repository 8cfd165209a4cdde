"""The conformance kit behind :mod:`dispatchkit.testing` (see there)."""

from __future__ import annotations

from .accounting import check_accounting
from .bulk import (
    check_chunked_map_counts,
    check_dispatch,
    check_map_options,
    check_window_validation,
)
from .face import Capabilities, Counts, FrontEnd, Target
from .lifecycle import (
    check_cancel,
    check_close_join_idempotent,
    check_stop_cancels_queued,
    check_stop_shutdown_idempotent,
)
from .local import AsyncTarget, LocalTarget
from .placement import (
    check_batch_blocks,
    check_error_isolation,
    check_key_order,
    check_map,
    check_pull_runs_each_job_once,
    check_round_robin_spread,
)
from .remote import (
    Cluster,
    RemoteTarget,
    ServerCluster,
    TargetUnavailable,
    redis_server_url,
    started,
)

__all__ = [
    "AsyncTarget",
    "Capabilities",
    "Cluster",
    "Counts",
    "FrontEnd",
    "LocalTarget",
    "RemoteTarget",
    "ServerCluster",
    "Target",
    "TargetUnavailable",
    "check_accounting",
    "check_batch_blocks",
    "check_cancel",
    "check_chunked_map_counts",
    "check_close_join_idempotent",
    "check_dispatch",
    "check_error_isolation",
    "check_key_order",
    "check_map",
    "check_map_options",
    "check_pull_runs_each_job_once",
    "check_round_robin_spread",
    "check_stop_cancels_queued",
    "check_stop_shutdown_idempotent",
    "check_window_validation",
    "redis_server_url",
    "started",
]
