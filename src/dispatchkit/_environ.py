"""Reading one ``DISPATCHKIT_*`` variable, for the settings and the command line alike.

Standard library only: :mod:`dispatchkit.settings` re-exports both names, and a
command that makes no settings (``dispatchkit worker``) reads its variables here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Final

__all__ = ["ENV_PREFIX", "available_cpus", "env_value"]

#: Prefix of the environment variables read by :meth:`Settings.from_env`.
ENV_PREFIX: Final = "DISPATCHKIT_"


def env_value(variable: str, expected: str, environ: Mapping[str, str] | None = None) -> str | None:
    """The value of an environment variable, stripped; None when it is not set.

    An empty value is an error rather than "unset": a setting that is silently
    ignored is worse than one refused.

    Args:
        variable: its name, e.g. ``DISPATCHKIT_WORKERS``.
        expected: what a valid value is, for the message ("a whole number ...").
        environ: where to look (default ``os.environ``).

    Raises:
        ValueError: the variable is set but empty (or only blanks).
    """
    raw = (os.environ if environ is None else environ).get(variable)
    if raw is None:
        return None
    if not raw.strip():
        raise ValueError(f"{variable} is empty: unset it or give {expected}")
    return raw.strip()


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity; ``taskset`` narrows it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
