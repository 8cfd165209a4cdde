"""Named jobs: what a remote worker may run.

A job crosses the network as a *name* plus plainly encoded arguments, never as
pickled code. The module a worker imports (``dispatchkit worker --import
package.module``) registers its jobs with :func:`job`; the dispatcher names a
job by its registered function or by the name itself.

    # tasks.py, imported by the workers and by the dispatcher
    from dispatchkit.registry import job

    @job
    def resize(path: str, width: int) -> str: ...

    @job("billing.charge")
    def charge(account: int, cents: int) -> None: ...
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any, Final, TypeVar, overload

__all__ = ["DEFAULT_REGISTRY", "Registry", "job", "job_name"]

F = TypeVar("F", bound=Callable[..., Any])

#: Attribute a registered function carries with its registered name.
_NAME_ATTR: Final = "__dispatchkit_name__"


class Registry:
    """A mapping from job names to functions. Thread-safe to register into."""

    def __init__(self) -> None:
        self._jobs: dict[str, Callable[..., Any]] = {}
        self._lock = threading.Lock()

    def register(self, fn: F, name: str | None = None) -> F:
        """Register ``fn`` under ``name`` (default ``module.qualname``) and return it.

        Raises:
            TypeError: ``fn`` is not callable.
            ValueError: another function is already registered under that name.
        """
        if not callable(fn):
            raise TypeError(f"a job must be callable, not {type(fn).__name__}")
        name = name or f"{fn.__module__}.{fn.__qualname__}"
        with self._lock:
            known = self._jobs.get(name)
            if known is not None and known is not fn:
                raise ValueError(f"job name {name!r} is already registered to {known!r}")
            self._jobs[name] = fn
        # A plain attribute, so that submit(fn) finds the name without a lookup;
        # a builtin takes none, and is then submitted by its name.
        with contextlib.suppress(AttributeError, TypeError):
            setattr(fn, _NAME_ATTR, name)
        return fn

    def get(self, name: str) -> Callable[..., Any]:
        """The function registered as ``name``.

        Raises:
            KeyError: no job has that name.
        """
        try:
            return self._jobs[name]
        except KeyError:
            raise KeyError(f"no job is registered as {name!r}") from None

    def names(self) -> list[str]:
        """The registered names, sorted."""
        return sorted(self._jobs)

    def __contains__(self, name: object) -> bool:
        return name in self._jobs

    def __len__(self) -> int:
        return len(self._jobs)


#: The registry :func:`job` registers into and workers run from by default.
DEFAULT_REGISTRY: Final = Registry()


@overload
def job(fn: F, /) -> F: ...
@overload
def job(name: str | None = None, /, *, registry: Registry | None = None) -> Callable[[F], F]: ...


def job(fn_or_name: Any = None, /, *, registry: Registry | None = None) -> Callable[[F], F] | Any:
    """Register a function as a job that remote workers can run.

    Use bare (``@job``: named ``module.qualname``) or with a name
    (``@job("billing.charge")``).

    Raises:
        ValueError: the name is taken by another function.
    """
    target = DEFAULT_REGISTRY if registry is None else registry
    if callable(fn_or_name):
        return target.register(fn_or_name)

    def decorate(fn: F) -> F:
        return target.register(fn, fn_or_name)

    return decorate


def job_name(fn_or_name: Callable[..., Any] | str) -> str:
    """The registered name of a job given as a function or a name.

    Raises:
        ValueError: the function was never registered.
    """
    if isinstance(fn_or_name, str):
        return fn_or_name
    name = getattr(fn_or_name, _NAME_ATTR, None)
    if name is None:
        raise ValueError(
            f"{getattr(fn_or_name, '__qualname__', fn_or_name)!r} is not a registered job: "
            "decorate it with dispatchkit.registry.job, or submit its name"
        )
    return str(name)
