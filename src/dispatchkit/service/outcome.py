"""How the drains of ``dispatchkit serve``'s worker processes ended, summed into one result.

Each worker process leaves its drain's outcome (payloads answered 202 that
could not be stored; whether the drain deadline cut it short) in a file of its
own, ``outcome-<n>.json``, in the directory :data:`OUTCOME_ENV` names. The main
process reads them all once granian has stopped and, with the workers' exit
codes, makes one result of them (:func:`result`): serve()'s return value, or
its error.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Final

from dispatchkit.errors import DispatchError

from .shutdown import DRAIN_DEADLINE_EXIT

__all__ = ["OUTCOME_ENV", "UnstoredPayloads", "read_reports", "result", "write_report"]

#: Environment variable naming the directory where each worker process leaves
#: how its drain ended (cut short by the deadline; payloads answered 202 that
#: could not be stored), in ``outcome-<n>.json``, for serve().
OUTCOME_ENV: Final = "DISPATCHKIT_SERVE_OUTCOME"


class UnstoredPayloads(DispatchError, RuntimeError):
    """Payloads answered 202 could not be stored (their fsync failed)."""

    def __init__(self, count: int) -> None:
        super().__init__(f"{count} payloads answered 202 could not be stored (fsync failed)")
        self.count = count


def write_report(process: int, unstored: int, cut_short: bool) -> None:
    """Leave worker process ``process``'s (1-based) outcome, when serve() asked for it."""
    directory = os.environ.get(OUTCOME_ENV)
    if directory is not None:  # absent when granian is run by hand
        report = {"unstored": unstored, "cut_short": cut_short}
        Path(directory, f"outcome-{process}.json").write_text(json.dumps(report))


def read_reports(directory: Path) -> list[dict[str, Any]]:
    """Every outcome the worker processes left in ``directory``."""
    return [json.loads(path.read_text()) for path in sorted(directory.glob("outcome-*.json"))]


def result(codes: list[int | None], reports: list[dict[str, Any]], processes: int) -> bool:
    """One result for every worker process: serve()'s return value, or its error.

    Raises:
        RuntimeError: a worker process failed.
        UnstoredPayloads: some payloads answered 202 are perhaps not on disk.
    """
    # A worker that reported its drain may end at the deadline or be reaped unseen.
    expected = (0, DRAIN_DEADLINE_EXIT, None) if len(reports) == processes else (0,)
    failed = [code for code in codes if code not in expected]
    if failed:
        raise RuntimeError(f"the server's worker process failed (exit code {failed[0]})")
    unstored = sum(report["unstored"] for report in reports)
    if unstored:
        raise UnstoredPayloads(unstored)
    return not any(report["cut_short"] for report in reports)
