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

from .attempts import Attempts, retry_delay
from .frontend import FrontEnd, shutdown_plan
from .ledger import Ledger, WorkerState
from .placement import MIN_BLOCK, Placement
from .rows import ResultRow, RowBlock, cancelled_rows, map_result
from .status import JobStatus
from .window import MapRun, MapWindow, check_window

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
