"""What every front end is, whatever it waits with: the base of both dispatchers.

Sans-I/O, like the rest of the core: settings, numbering and placement (the
:class:`~dispatchkit.core.placement.Placement` it extends), the properties,
the ``map`` window and the ``shutdown`` plan. A front end adds its queues,
its workers and its way of waiting (threads block, the event loop awaits).
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Literal

from .placement import Placement
from .window import MapWindow, check_window

if TYPE_CHECKING:
    from dispatchkit.retry import RetryPolicy
    from dispatchkit.settings import Settings
    from dispatchkit.strategies import Strategy

__all__ = ["FrontEnd", "shutdown_plan"]


def shutdown_plan(
    wait: bool, cancel_futures: bool
) -> tuple[Literal["stop", "join", "close"], float | None]:
    """What ``shutdown(wait, cancel_futures=...)`` does, as ``concurrent.futures`` says:
    ``("stop", timeout)`` (cancel what is queued), ``("join", None)`` or ``("close", None)``."""
    if cancel_futures:
        return "stop", None if wait else 0
    return ("join" if wait else "close"), None


class FrontEnd(Placement):
    """Settings, ledger and placement of one dispatcher, and its public properties."""

    settings: Settings
    _closed: bool
    _retry: RetryPolicy | None

    def _open_front_end(
        self,
        settings: Settings,
        retry: RetryPolicy | None,
        lock: AbstractContextManager[Any] | None = None,
    ) -> None:
        """Raises TypeError: ``retry`` is not a RetryPolicy."""
        from dispatchkit.retry import RetryPolicy  # retry.py builds on this package

        if retry is not None and not isinstance(retry, RetryPolicy):
            raise TypeError(f"retry must be a RetryPolicy, not {type(retry).__name__}")
        self.settings = settings
        self._retry = retry
        self._closed = False
        self._open_ledger(lock)
        self._open_placement(settings)

    @property
    def workers(self) -> int:
        return self._n

    @property
    def strategy(self) -> Strategy:
        return self._strategy

    @property
    def closed(self) -> bool:
        return self._closed

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return (
            f"<{type(self).__name__} {state} workers={self._n} "
            f"strategy={self._strategy.name} chunk={self._chunk}>"
        )

    def _map_window(self, window: int | None, ordered: bool) -> MapWindow:
        """The window of a ``map`` call; by default what all queues hold.

        Raises:
            ValueError: not a whole number of at least 1.
        """
        default = max(self._n * self._queue_size, self._n * self._chunk)
        return MapWindow(check_window(window, default), ordered)
