"""Durations in seconds, checked one way everywhere: a finite number in range.

A duration reaches a wait, a sleep or a deadline: ``nan`` compares false with
everything (a heartbeat loop that never sleeps), ``inf`` overflows the waits of
``threading``, and a negative number means nothing. The command line's flags, the
``DISPATCHKIT_*`` variables and the settings objects all check durations here.
"""

from __future__ import annotations

import math
from typing import Final

__all__ = ["MAX_SECONDS", "check_seconds", "parse_seconds", "seconds_problem"]

#: Longest duration accepted, in seconds (a year): beyond, a typo is likelier, and
#: the waits of ``threading`` overflow not far above.
MAX_SECONDS: Final = 365 * 86400.0


def seconds_problem(
    value: float, *, zero_ok: bool = False, maximum: float = MAX_SECONDS
) -> str | None:
    """What is wrong with ``value`` as a duration, as the end of a sentence; None if nothing.

    Args:
        value: the duration, in seconds.
        zero_ok: whether 0 is a valid value (e.g. "do not wait").
        maximum: the largest valid value.
    """
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero_ok):
        return f"must be a finite number of seconds {'>= 0' if zero_ok else '> 0'}"
    if value > maximum:
        return f"must be at most {maximum:,g} seconds"
    return None


def parse_seconds(text: str, *, zero_ok: bool = False, maximum: float = MAX_SECONDS) -> float:
    """``text`` read as a duration in seconds.

    Raises:
        ValueError: not a number, or not a valid duration; the message reads
            "must be a finite number of seconds > 0, not 'nan'".
    """
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    problem = seconds_problem(value, zero_ok=zero_ok, maximum=maximum)
    if problem is not None:
        raise ValueError(f"{problem}, not {text!r}")
    return value


def check_seconds(
    name: str, value: object, *, zero_ok: bool = False, maximum: float = MAX_SECONDS
) -> float:
    """Check a duration given to the API.

    Returns:
        ``value`` as a float.

    Raises:
        TypeError: ``value`` is not a number.
        ValueError: it is not a valid duration; the message names ``name``.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number of seconds, not {value!r}")
    problem = seconds_problem(value, zero_ok=zero_ok, maximum=maximum)
    if problem is not None:
        raise ValueError(f"{name} {problem}, not {value!r}")
    return float(value)
