"""Dispatcher settings, checked once, from arguments or from the environment.

As in the Go design, the limits can come from environment variables:

==========================  =====================================  =========
variable                    meaning                                default
==========================  =====================================  =========
``DISPATCHKIT_WORKERS``     number of workers                      ``os.cpu_count()``
``DISPATCHKIT_QUEUE_SIZE``  jobs an inbox holds before submit waits ``1024``
``DISPATCHKIT_STRATEGY``    round_robin, batch, pull or key        ``round_robin``
``DISPATCHKIT_CHUNK``       jobs per hand-off to a worker          ``1``
``DISPATCHKIT_BLOCK``       block size of the batch strategy       ``100``
``DISPATCHKIT_EXECUTOR``    thread or process workers              ``thread``
``DISPATCHKIT_JOB_TIMEOUT`` seconds one job may run (process)      no limit
==========================  =====================================  =========
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Final

from .strategies import DEFAULT_BLOCK, Strategy, parse_strategy

__all__ = ["ENV_PREFIX", "EXECUTORS", "Settings"]

#: Prefix of the environment variables read by :meth:`Settings.from_env`.
ENV_PREFIX: Final = "DISPATCHKIT_"

#: Where workers can run.
EXECUTORS: Final = ("thread", "process")

#: Jobs an inbox holds by default before ``submit`` waits.
DEFAULT_QUEUE_SIZE: Final = 1024

#: Upper bounds that catch typos (a worker count of 10**9) before they hurt.
MAX_WORKERS: Final = 100_000
MAX_QUEUE_SIZE: Final = 100_000_000


def _default_workers() -> int:
    return os.cpu_count() or 1


@dataclass(frozen=True, slots=True)
class Settings:
    """How a dispatcher is set up. Every field is checked on creation.

    Attributes:
        workers: number of workers.
        strategy: which worker gets which job.
        chunk: jobs per hand-off between the dispatcher and a worker (bulk
            ``dispatch`` and ``map``; ``submit`` always hands one job at once).
        queue_size: jobs one inbox holds (``queue_size * workers`` for the shared
            queue of ``pull``); an inbox holds at least one chunk.
        block: block size of the ``batch`` strategy.
        put_timeout: how long a submit waits for room before ``QueueFull``
            (None waits as long as it takes).
        executor: where workers run: ``thread`` or ``process``.
        job_timeout: seconds any one job may run before it is stopped and
            reported ``TimedOut`` (process workers; None: no limit).

    Raises:
        ValueError: a value out of range, or an unknown strategy.
        TypeError: a value of the wrong type.
    """

    workers: int = field(default_factory=_default_workers)
    strategy: Strategy | str = "round_robin"
    chunk: int = 1
    queue_size: int = DEFAULT_QUEUE_SIZE
    block: int = DEFAULT_BLOCK
    put_timeout: float | None = None
    executor: str = "thread"
    job_timeout: float | None = None

    def __post_init__(self) -> None:
        if self.executor not in EXECUTORS:
            raise ValueError(
                f"unknown executor {self.executor!r}: choose one of {', '.join(EXECUTORS)}"
            )
        if self.job_timeout is not None:
            if isinstance(self.job_timeout, bool) or not isinstance(self.job_timeout, int | float):
                raise TypeError(
                    f"job_timeout must be a number of seconds, not {self.job_timeout!r}"
                )
            if not self.job_timeout > 0:
                raise ValueError(f"job_timeout must be more than 0, got {self.job_timeout}")
            if self.executor == "thread":
                raise ValueError(
                    "job_timeout needs process workers: a running thread cannot be stopped"
                )
        _check_int("workers", self.workers, MAX_WORKERS)
        _check_int("chunk", self.chunk, MAX_QUEUE_SIZE)
        _check_int("queue_size", self.queue_size, MAX_QUEUE_SIZE)
        _check_int("block", self.block, MAX_QUEUE_SIZE)
        if self.put_timeout is not None:
            if isinstance(self.put_timeout, bool) or not isinstance(self.put_timeout, int | float):
                raise TypeError(
                    f"put_timeout must be a number of seconds, not {self.put_timeout!r}"
                )
            if not self.put_timeout >= 0:
                raise ValueError(f"put_timeout must be 0 or more, got {self.put_timeout}")
        object.__setattr__(self, "strategy", parse_strategy(self.strategy, block=self.block))

    @property
    def resolved_strategy(self) -> Strategy:
        assert isinstance(self.strategy, Strategy)
        return self.strategy

    @property
    def inbox_capacity(self) -> int:
        """Messages (hand-offs) one inbox holds: ``queue_size`` jobs, at least one chunk."""
        return max(1, -(-self.queue_size // self.chunk))

    @classmethod
    def merged(cls, base: Settings | None, **overrides: Any) -> Settings:
        """``base`` (or the defaults) with the ``overrides`` that are not None.

        Raises:
            ValueError, TypeError: an override is invalid.
        """
        given = {name: value for name, value in overrides.items() if value is not None}
        if base is None:
            return cls(**given)
        return base.replace(**given) if given else base

    def replace(self, **changes: Any) -> Settings:
        """A copy with some fields changed (and checked)."""
        if "block" in changes and "strategy" not in changes:
            changes["strategy"] = self.resolved_strategy.name
        return replace(self, **changes)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Settings from ``DISPATCHKIT_*`` variables; ``overrides`` that are not None win.

        Raises:
            ValueError: a variable holds something that is not a valid value; the
                message names the variable.
        """
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for name, parse in _ENV_FIELDS.items():
            variable = ENV_PREFIX + name.upper()
            raw = env.get(variable)
            if raw is None or raw.strip() == "" or overrides.get(name) is not None:
                continue
            try:
                values[name] = parse(raw.strip())
                cls(**{name: values[name]})  # check it alone, to name the variable
            except (ValueError, TypeError) as exc:
                raise ValueError(
                    f"{variable}={raw!r} is not valid: expected {_ENV_EXPECTED[name]}"
                ) from exc
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


_ENV_FIELDS: Final = {
    "workers": int,
    "queue_size": int,
    "strategy": str,
    "chunk": int,
    "block": int,
    "put_timeout": float,
    "executor": str,
    "job_timeout": float,
}
_ENV_EXPECTED: Final = {
    "workers": f"a whole number from 1 to {MAX_WORKERS}",
    "queue_size": f"a whole number from 1 to {MAX_QUEUE_SIZE}",
    "strategy": "round_robin, batch, pull or key",
    "chunk": f"a whole number from 1 to {MAX_QUEUE_SIZE}",
    "block": f"a whole number from 1 to {MAX_QUEUE_SIZE}",
    "put_timeout": "a number of seconds, 0 or more",
    "executor": "thread or process",
    "job_timeout": "a number of seconds, more than 0 (process workers only)",
}


def _check_int(what: str, value: object, maximum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an integer, not {type(value).__name__} ({value!r})")
    if value < 1:
        raise ValueError(f"{what} must be at least 1, got {value}")
    if value > maximum:
        raise ValueError(f"{what} must be at most {maximum}, got {value}")
