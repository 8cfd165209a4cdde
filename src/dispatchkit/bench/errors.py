"""The errors of the benchmark harness."""

from __future__ import annotations

from dispatchkit.errors import DispatchError

__all__ = ["BenchUsageError", "ExecutorUnavailable"]


class BenchUsageError(DispatchError, ValueError):
    """A bad benchmark request: an unknown workload, bad inputs, an empty sweep.

    The CLI prints its message on one line and exits with code 2.
    """


class ExecutorUnavailable(BenchUsageError):
    """The worker kind asked for does not exist in this version of dispatchkit."""

    def __init__(self, executor: str) -> None:
        super().__init__(f"executor {executor!r} is not available in this version")
        self.executor = executor
