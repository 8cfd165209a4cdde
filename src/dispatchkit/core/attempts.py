"""The attempt planner: after a failed run, run again after N s, or give up.

Sans-I/O: it never sleeps or runs anything. The thread and process workers
drive it with a ``threading.Event`` wait (:func:`dispatchkit.retry.run_with_policy`),
the asyncio workers with ``asyncio.sleep``: one rule for every worker kind.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dispatchkit.retry import RetryPolicy

__all__ = ["Attempts", "retry_delay"]


def retry_delay(policy: RetryPolicy | None, error: BaseException, attempts: int) -> float | None:
    """Seconds to wait before running again a job that failed with ``error`` after
    ``attempts`` runs, or None: give up (no policy, out of attempts, or not retryable)."""
    if policy is None or not policy.should_retry(error, attempts):
        return None
    return policy.delay(attempts)


class Attempts:
    """The attempts of one job: which one this is, and what to do after a failure.

    A driver loops: run attempt ``number``; on failure ask :meth:`after_failure`;
    None means the job has failed for good, a float is the wait before
    :meth:`again`. A wait cut short by a stop uses up no attempt: the driver
    then reports the job cancelled after ``number`` attempts.
    """

    __slots__ = ("number", "policy")

    def __init__(self, policy: RetryPolicy | None, first: int = 1) -> None:
        self.policy = policy
        #: The attempt running or last run, from 1.
        self.number = first

    def after_failure(self, error: BaseException) -> float | None:
        """Seconds to wait before the next attempt, or None to give up."""
        return retry_delay(self.policy, error, self.number)

    def again(self) -> None:
        """The wait is over: the next attempt starts."""
        self.number += 1
