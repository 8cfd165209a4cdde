"""The bounds that settings and the command line share, apart from the settings.

:mod:`dispatchkit.settings` re-exports each name; the command line takes them
from here, so that ``dispatchkit worker``, which makes no settings, does not load
the settings and the strategies they check.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "DEFAULT_DRAIN_TIMEOUT",
    "MAX_DRAIN_TIMEOUT",
    "MAX_PROCESSES",
    "MAX_QUEUE_SIZE",
    "MAX_WORKERS",
]

#: Upper bounds that catch typos (a worker count of 10**9) before they hurt.
MAX_WORKERS: Final = 100_000
MAX_QUEUE_SIZE: Final = 100_000_000
#: Most processes ``serve`` or ``worker`` starts: beyond, a typo is likelier than a
#: machine that size.
MAX_PROCESSES: Final = 1024

#: Seconds a signal waits for work in hand before ``serve`` and ``worker`` give up
#: on it (their --drain-timeout, ``DISPATCHKIT_DRAIN_TIMEOUT``).
DEFAULT_DRAIN_TIMEOUT: Final = 30.0
#: Longest drain deadline accepted, in seconds (a day).
MAX_DRAIN_TIMEOUT: Final = 86400.0
