"""What a caller of the ``dispatchkit`` command may need to know: its exit codes, and
the choices and bounds its --help shows (the exit codes live in
:mod:`dispatchkit.exit_codes`). :mod:`dispatchkit.cli` exports every name here.

Only a clean stop returns 0.
"""

from __future__ import annotations

from typing import Final

from dispatchkit._limits import DEFAULT_DRAIN_TIMEOUT, MAX_DRAIN_TIMEOUT
from dispatchkit.executors.registry import kind_names
from dispatchkit.exit_codes import (
    RET_DRAIN_DEADLINE,
    RET_FAILED,
    RET_INTERRUPTED,
    RET_OK,
    RET_UNSTORED,
    RET_USAGE,
)

__all__ = [
    "DEFAULT_DRAIN_TIMEOUT",
    "EXECUTOR_CHOICES",
    "MAX_DRAIN_TIMEOUT",
    "RET_DRAIN_DEADLINE",
    "RET_FAILED",
    "RET_INTERRUPTED",
    "RET_OK",
    "RET_UNSTORED",
    "RET_USAGE",
]

#: Worker kinds every command that runs jobs accepts with --executor.
EXECUTOR_CHOICES: Final = kind_names()
