"""The sans-I/O dispatch core: no threads, no awaits, no sockets.

Both local front ends (:class:`~dispatchkit.Dispatcher` on threads or
processes, :class:`~dispatchkit.AsyncDispatcher` on asyncio tasks) drive it;
each adds only its own way of waiting.

    ledger.py     sequence numbers; submitted/succeeded/failed/cancelled/rejected
    placement.py  a block of jobs -> (queue, chunk) parts; offer's all-or-nothing check
    frontend.py   FrontEnd, the base of both dispatchers: properties, window, shutdown plan
    window.py     the map window: ordering, window validation, deliveries
    rows.py       ResultRow, the one result row, and what map yields for it
    status.py     JobStatus, the one job-status vocabulary
    attempts.py   the attempt planner: run again after N s, or give up
    adaptive.py   the chunk controller of chunk="auto": measured job times in, chunk sizes out
"""

from typing import TYPE_CHECKING

from dispatchkit._lazy import lazy_getattr

if TYPE_CHECKING:
    from .attempts import Attempts, retry_delay
    from .frontend import FrontEnd, shutdown_plan
    from .ledger import Ledger, WorkerState
    from .placement import MIN_BLOCK, Placement
    from .rows import ResultRow, RowBlock, cancelled_rows, map_result
    from .status import JobStatus
    from .window import MapRun, MapWindow, check_window

# Each name is imported when first used: a remote worker needs the job-status
# vocabulary and the attempt planner, not the dispatchers' ledger and placement.
__getattr__ = lazy_getattr(
    __name__,
    globals(),
    {
        "Attempts": "attempts",
        "retry_delay": "attempts",
        "FrontEnd": "frontend",
        "shutdown_plan": "frontend",
        "Ledger": "ledger",
        "WorkerState": "ledger",
        "MIN_BLOCK": "placement",
        "Placement": "placement",
        "ResultRow": "rows",
        "RowBlock": "rows",
        "cancelled_rows": "rows",
        "map_result": "rows",
        "JobStatus": "status",
        "MapRun": "window",
        "MapWindow": "window",
        "check_window": "window",
    },
)

__all__ = [
    "MIN_BLOCK",
    "Attempts",
    "FrontEnd",
    "JobStatus",
    "Ledger",
    "MapRun",
    "MapWindow",
    "Placement",
    "ResultRow",
    "RowBlock",
    "WorkerState",
    "cancelled_rows",
    "check_window",
    "map_result",
    "retry_delay",
    "shutdown_plan",
]
