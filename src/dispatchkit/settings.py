"""Dispatcher settings, checked once, from arguments or from the environment.

As in the Go design, the limits can come from environment variables:

==========================  =====================================  =========
variable                    meaning                                default
==========================  =====================================  =========
``DISPATCHKIT_WORKERS``     number of workers                      ``os.cpu_count()``
``DISPATCHKIT_QUEUE_SIZE``  jobs an inbox holds before submit waits ``1024``
``DISPATCHKIT_STRATEGY``    auto, round_robin, batch, pull or key  ``auto``
``DISPATCHKIT_CHUNK``       jobs per hand-off to a worker, or auto ``auto``
``DISPATCHKIT_BLOCK``       block size of the batch strategy       ``100``
``DISPATCHKIT_PUT_TIMEOUT`` seconds a submit waits for room       no limit
``DISPATCHKIT_EXECUTOR``    thread or process workers              ``thread``
``DISPATCHKIT_JOB_TIMEOUT`` seconds one job may run (process)      no limit
==========================  =====================================  =========

An argument wins over its variable. A variable that is set but empty is an error
(not "unset"), as is a duration that is not a finite number of seconds in range.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Final, Literal, TypeAlias, TypedDict, cast

from ._durations import MAX_SECONDS, check_seconds
from ._environ import ENV_PREFIX, env_value
from ._limits import DEFAULT_DRAIN_TIMEOUT, MAX_DRAIN_TIMEOUT, MAX_QUEUE_SIZE, MAX_WORKERS
from .executors.registry import kind_names
from .strategies import DEFAULT_BLOCK, Strategy, parse_strategy

__all__ = [
    "AUTO",
    "DEFAULT_DRAIN_TIMEOUT",
    "ENV_PREFIX",
    "EXECUTORS",
    "MAX_DRAIN_TIMEOUT",
    "MAX_QUEUE_SIZE",
    "MAX_WORKERS",
    "ChunkSetting",
    "DispatcherOptions",
    "PoolOptions",
    "Settings",
    "check_options",
    "env_fields",
    "env_value",
    "front_end_settings",
]

#: Where workers can run.
#: Worker kinds a :class:`~dispatchkit.Dispatcher` runs (the registry's).
EXECUTORS: Final = kind_names(front_end="Dispatcher")

#: The ``chunk`` that adapts to measured job times.
AUTO: Final = "auto"

#: A ``chunk`` setting: a number of jobs per hand-off, or ``"auto"``.
ChunkSetting: TypeAlias = int | Literal["auto"]

#: Jobs an inbox holds by default before ``submit`` waits.
DEFAULT_QUEUE_SIZE: Final = 1024


def _default_workers() -> int:
    return os.cpu_count() or 1


@dataclass(frozen=True, slots=True)
class Settings:
    """How a dispatcher is set up. Every field is checked on creation.

    Attributes:
        workers: number of workers.
        strategy: which worker gets which job.
        chunk: jobs per hand-off between the dispatcher and a worker (bulk
            ``dispatch`` and ``map``; ``submit`` always hands one job at once),
            or ``"auto"``: sized from measured job times by the ``auto``
            strategy, one job a hand-off with the others.
        queue_size: jobs one inbox holds (``queue_size * workers`` for the shared
            queue of ``pull``); an inbox holds at least one chunk.
        block: block size of the ``batch`` strategy.
        put_timeout: how long a submit waits for room before ``QueueFull``
            (None waits as long as it takes).
        executor: where workers run: ``thread`` or ``process``.
        job_timeout: seconds any one job may run before it is stopped and
            reported ``TimedOut`` (process workers; None: no limit).
        steal: let an idle worker take queued jobs from a busy worker's inbox,
            where the strategy allows it (``round_robin``, ``batch``: see
            :attr:`~dispatchkit.strategies.Strategy.steals`); False keeps every
            job with the worker its strategy chose.

    Raises:
        ValueError: a value out of range, or an unknown strategy.
        TypeError: a value of the wrong type.
    """

    workers: int = field(default_factory=_default_workers)
    strategy: Strategy | str = "auto"
    chunk: ChunkSetting = "auto"
    queue_size: int = DEFAULT_QUEUE_SIZE
    block: int = DEFAULT_BLOCK
    put_timeout: float | None = None
    executor: str = "thread"
    job_timeout: float | None = None
    steal: bool = True

    def __post_init__(self) -> None:
        for name in _FIELD_ORDER:
            _check_field(name, getattr(self, name))
        if _needs_process(self.executor, self.job_timeout):
            raise ValueError(
                "job_timeout needs process workers: a running thread cannot be stopped"
            )
        object.__setattr__(self, "strategy", parse_strategy(self.strategy, block=self.block))

    @property
    def resolved_strategy(self) -> Strategy:
        assert isinstance(self.strategy, Strategy)
        return self.strategy

    @property
    def stealing(self) -> bool:
        """Whether idle workers take queued jobs from busy ones: ``steal``, a strategy
        that allows it, and more than one worker."""
        strategy = self.resolved_strategy
        return self.steal and strategy.steals and not strategy.shared and self.workers > 1

    @property
    def fixed_chunk(self) -> int:
        """Jobs per hand-off when it does not adapt: ``chunk``, 1 for ``"auto"``."""
        return 1 if self.chunk == AUTO else int(self.chunk)

    @property
    def adaptive_chunk(self) -> bool:
        """Whether the hand-off size adapts: ``chunk="auto"`` with an adaptive strategy."""
        return self.chunk == AUTO and self.resolved_strategy.adaptive

    @property
    def inbox_capacity(self) -> int:
        """Messages (hand-offs) one inbox holds: ``queue_size`` jobs, at least one chunk."""
        return max(1, -(-self.queue_size // self.fixed_chunk))

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

        Every value is read first, each checked on its own, then the whole combination
        once (a job timeout from the environment is valid with ``executor="process"``
        given as an argument).

        Raises:
            ValueError: a variable is empty or holds something that is not a valid
                value, or the values do not go together; the message names the
                variable or the argument at fault.
        """
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {name: v for name, v in overrides.items() if v is not None}
        from_variables: dict[str, str] = {}
        for name, parse in _ENV_FIELDS.items():
            if name in values:  # an argument wins: the variable is not read
                continue
            variable = ENV_PREFIX + name.upper()
            raw = env_value(variable, _ENV_EXPECTED[name], env)
            if raw is None:
                continue
            try:
                values[name] = parse(raw)
                _check_field(name, values[name])
            except (ValueError, TypeError) as exc:
                raise ValueError(
                    f"{variable}={raw!r} is not valid: expected {_ENV_EXPECTED[name]}"
                ) from exc
            from_variables[name] = f"{variable}={raw!r}"
        if _needs_process(values.get("executor", "thread"), values.get("job_timeout")):

            def origin(name: str) -> str:
                if name in from_variables:
                    return from_variables[name]
                if name in values:
                    return f"{name}={values[name]!r}"
                return f"{name} is {getattr(cls(), name)!r} (the default)"

            raise ValueError(
                f"{origin('job_timeout')} needs process workers, but {origin('executor')}: "
                "a running thread cannot be stopped"
            )
        return cls(**values)


class PoolOptions(TypedDict, total=False):
    """The settings every dispatcher takes as keywords, ``concurrent.futures``' pools too.

    None (or leaving one out) keeps the default; :class:`Settings` says what each means.
    """

    strategy: str | Strategy | None
    chunk: ChunkSetting | None
    queue_size: int | None
    job_timeout: float | None


class DispatcherOptions(PoolOptions, total=False):
    """The settings a :class:`~dispatchkit.Dispatcher` or
    :class:`~dispatchkit.AsyncDispatcher` takes as keywords; ``settings``: a ready
    :class:`Settings` that the others override."""

    block: int | None
    put_timeout: float | None
    steal: bool | None
    settings: Settings | None


def front_end_settings(
    owner: str, workers: int | None, options: DispatcherOptions, **fixed: Any
) -> Settings:
    """The settings of a dispatcher made with ``owner(workers, **options)``.

    ``options["settings"]`` (or the defaults) with ``workers``, the other
    options and ``fixed`` (what the owner takes beyond them) that are not None.
    The owner's constructor is written once this way: its keywords are checked
    here, as Python checks an explicit signature.

    Raises:
        TypeError: an option that is not one of :class:`DispatcherOptions` (the
            message is Python's own), or a value of the wrong type.
        ValueError: a value out of range.
    """
    check_options(owner, options, DispatcherOptions.__optional_keys__)
    given: dict[str, Any] = dict(options)
    base = given.pop("settings", None)
    return Settings.merged(base, workers=workers, **given, **fixed)


def check_options(owner: str, options: Mapping[str, object], allowed: frozenset[str]) -> None:
    """Check the keywords given to ``owner(**options)`` as Python checks a signature's.

    Raises:
        TypeError: one that is not ``allowed`` (Python's message).
    """
    unknown = options.keys() - allowed
    if unknown:
        raise TypeError(f"{owner}() got an unexpected keyword argument {min(unknown)!r}")


def env_fields(environ: Mapping[str, str] | None = None) -> frozenset[str]:
    """The names of the settings a ``DISPATCHKIT_*`` variable gives (set, even if empty)."""
    env = os.environ if environ is None else environ
    return frozenset(name for name in _ENV_FIELDS if ENV_PREFIX + name.upper() in env)


def _needs_process(executor: object, job_timeout: object) -> bool:
    """Whether a job timeout is asked of thread workers, which cannot be stopped."""
    return job_timeout is not None and executor == "thread"


def _check_field(name: str, value: object) -> None:
    """Check one setting on its own (what it goes with is checked afterwards).

    Raises:
        ValueError, TypeError: the value is not valid for ``name``.
    """
    if name == "executor":
        if value not in EXECUTORS:
            hint = " (asyncio workers: AsyncDispatcher)" if value == "async" else ""
            raise ValueError(
                f"unknown executor {value!r}: choose one of {', '.join(EXECUTORS)}{hint}"
            )
    elif name == "strategy":
        parse_strategy(cast("Strategy | str", value))  # it raises TypeError for others
    elif name == "chunk" and value == AUTO:
        pass
    elif name == "chunk" and isinstance(value, str):
        raise TypeError(f"chunk must be an integer or {AUTO!r}, not str ({value!r})")
    elif name == "steal":
        if not isinstance(value, bool):
            raise TypeError(f"steal must be True or False, not {type(value).__name__} ({value!r})")
    elif name in _INT_LIMITS:
        _check_int(name, value, _INT_LIMITS[name])
    elif value is not None:  # put_timeout, job_timeout: None means no limit
        check_seconds(name, value, zero_ok=name == "put_timeout")


def _parse_chunk(raw: str) -> int | str:
    """``DISPATCHKIT_CHUNK``: ``auto`` or a whole number."""
    return AUTO if raw.lower() == AUTO else int(raw)


#: The order in which the fields are checked (the first error is reported).
_FIELD_ORDER: Final = (
    "executor",
    "job_timeout",
    "workers",
    "chunk",
    "queue_size",
    "block",
    "put_timeout",
    "steal",
    "strategy",
)

_INT_LIMITS: Final = {
    "workers": MAX_WORKERS,
    "chunk": MAX_QUEUE_SIZE,
    "queue_size": MAX_QUEUE_SIZE,
    "block": MAX_QUEUE_SIZE,
}

_ENV_FIELDS: Final[dict[str, Callable[[str], Any]]] = {
    "workers": int,
    "queue_size": int,
    "strategy": str,
    "chunk": _parse_chunk,
    "block": int,
    "put_timeout": float,
    "executor": str,
    "job_timeout": float,
}
_ENV_EXPECTED: Final = {
    "workers": f"a whole number from 1 to {MAX_WORKERS}",
    "queue_size": f"a whole number from 1 to {MAX_QUEUE_SIZE}",
    "strategy": "auto, round_robin, batch, pull or key",
    "chunk": f"auto or a whole number from 1 to {MAX_QUEUE_SIZE}",
    "block": f"a whole number from 1 to {MAX_QUEUE_SIZE}",
    "put_timeout": f"a finite number of seconds from 0 to {MAX_SECONDS:,g}",
    "executor": "thread or process",
    "job_timeout": f"a finite number of seconds > 0, at most {MAX_SECONDS:,g} "
    "(process workers only)",
}


def _check_int(what: str, value: object, maximum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an integer, not {type(value).__name__} ({value!r})")
    if value < 1:
        raise ValueError(f"{what} must be at least 1, got {value}")
    if value > maximum:
        raise ValueError(f"{what} must be at most {maximum}, got {value}")
