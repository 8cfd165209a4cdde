"""Retry policies: how often a failed job is tried again, and after how long.

A job is retried *in place*: the worker that ran it waits out the backoff and
runs it again, so a retried job is still one job, counted once, and nothing
needs rescheduling at shutdown. A stop with cancellation interrupts the wait,
and the job ends cancelled without using up an attempt.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .core.attempts import Attempts
from .core.status import JobStatus

__all__ = ["RetryPolicy", "run_with_policy"]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Retry failed jobs with exponential backoff and jitter.

    Attributes:
        max_attempts: runs in all, the first included (1 = never retry).
        backoff: seconds before the second attempt.
        multiplier: each further wait is this many times longer.
        max_backoff: the longest wait, in seconds.
        jitter: a random fraction (0 to 1) of each wait added or taken off, so
            that jobs failing together do not retry together.
        retry_on: exception types worth retrying; others fail at once.
            ``WorkerLost`` and ``TimedOut`` (both ``Exception`` subclasses) are
            retried when they match, as they do by default.
        rng: the source of jitter; pass a seeded ``random.Random`` for
            repeatable delays.

    Raises:
        ValueError: a value out of range.
    """

    max_attempts: int = 3
    backoff: float = 0.1
    multiplier: float = 2.0
    max_backoff: float = 10.0
    jitter: float = 0.1
    retry_on: tuple[type[BaseException], ...] = (Exception,)
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def __post_init__(self) -> None:
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int):
            raise TypeError(f"max_attempts must be an integer, got {self.max_attempts!r}")
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {self.max_attempts}")
        for name in ("backoff", "max_backoff"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be 0 or more, got {getattr(self, name)}")
        if not self.multiplier >= 1:
            raise ValueError(f"multiplier must be at least 1, got {self.multiplier}")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"jitter must be between 0 and 1, got {self.jitter}")
        if not isinstance(self.retry_on, tuple) or not all(
            isinstance(t, type) and issubclass(t, BaseException) for t in self.retry_on
        ):
            raise TypeError("retry_on must be a tuple of exception types")

    def should_retry(self, error: BaseException, attempts: int) -> bool:
        """Whether a job that failed with ``error`` after ``attempts`` runs goes again."""
        return attempts < self.max_attempts and isinstance(error, self.retry_on)

    def delay(self, attempts: int) -> float:
        """Seconds to wait after the ``attempts``-th failed run."""
        base = min(self.max_backoff, self.backoff * self.multiplier ** (attempts - 1))
        if self.jitter:
            base *= 1 + self.jitter * self.rng.uniform(-1.0, 1.0)
        return max(0.0, base)


#: How a run under a policy ended: the one status vocabulary (:class:`JobStatus`).
SUCCEEDED, FAILED, CANCELLED = JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED


def run_with_policy(
    call: Callable[[], Any],
    policy: RetryPolicy | None,
    stop: threading.Event,
    first_attempt: int = 1,
) -> tuple[JobStatus, Any, int]:
    """Run ``call`` under ``policy``: ``(status, value or exception, attempts made)``.

    The blocking driver of :class:`~dispatchkit.core.Attempts`. The wait
    between attempts ends early when ``stop`` is set; the job is then
    ``CANCELLED`` and the interrupted wait uses up no attempt.
    """
    try:  # the first attempt needs no plan: most jobs succeed at once
        return SUCCEEDED, call(), first_attempt
    except BaseException as exc:  # the job's failure, whatever it is
        error = exc
    plan = Attempts(policy, first_attempt)
    while True:
        wait = plan.after_failure(error)
        if wait is None:
            return FAILED, error, plan.number
        if stop.wait(wait):
            return CANCELLED, error, plan.number
        plan.again()
        try:
            return SUCCEEDED, call(), plan.number
        except BaseException as exc:
            error = exc
