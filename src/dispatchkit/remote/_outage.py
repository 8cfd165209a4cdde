"""Since when a remote worker's calls to its transport fail for want of a server."""

from __future__ import annotations

import time

from dispatchkit.errors import TransportError, TransportRejected

__all__ = ["Outage"]


class Outage:
    """Since when the worker's calls to the server fail for want of a server.

    Every thread reports: a call that reached the server (even one it refused)
    ends the outage, one that could not reach it (or found it busy) starts it.

    Args:
        limit: seconds of outage after which the worker gives up.
    """

    def __init__(self, limit: float) -> None:
        self.limit = limit
        self._since: float | None = None

    def reached(self) -> None:
        self._since = None

    def missed(self) -> None:
        if self._since is None:
            self._since = time.monotonic()

    def failed(self, exc: TransportError) -> None:
        """A call failed: a refusal came from the server, anything else did not."""
        if isinstance(exc, TransportRejected):
            self.reached()
        else:
            self.missed()

    def over(self) -> bool:
        since = self._since
        return since is not None and time.monotonic() - since >= self.limit
