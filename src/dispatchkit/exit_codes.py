"""The exit codes of the ``dispatchkit`` command, in one place: the CLI returns them and
the HTTP service's worker process exits with them. Only a clean stop returns 0."""

from __future__ import annotations

from typing import Final

__all__ = [
    "RET_DRAIN_DEADLINE",
    "RET_FAILED",
    "RET_INTERRUPTED",
    "RET_OK",
    "RET_UNSTORED",
    "RET_USAGE",
]

#: Success, or a stop on a signal that drained everything in time.
RET_OK: Final = 0
#: A failure while running.
RET_FAILED: Final = 1
#: Bad input: a wrong flag, setting or environment variable.
RET_USAGE: Final = 2
#: ``serve`` or ``worker`` stopped at its drain deadline (--drain-timeout) with work still open.
RET_DRAIN_DEADLINE: Final = 3
#: ``serve``: payloads answered 202 could not be stored (an fsync failed).
RET_UNSTORED: Final = 4
#: Interrupted (Ctrl-C, or SIGTERM where it does what Ctrl-C does).
RET_INTERRUPTED: Final = 130
