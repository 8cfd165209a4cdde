"""Checks of the durations the remote dispatcher and worker take.

A NaN or an infinity given as a heartbeat or a timeout made the worker spin,
crash on every beat or lose its heartbeat thread: every duration is checked
once, where it is given, with an error naming the setting.
"""

from __future__ import annotations

import math
from typing import Final

__all__ = ["LONGEST", "check_duration"]

#: Seconds above which a duration is refused (about 31 years): threading's waits and
#: Redis's millisecond arguments overflow well before an infinity.
LONGEST: Final = 1e9


def check_duration(name: str, value: float, *, zero_ok: bool = False) -> float:
    """``value`` as a float, if it is a number of seconds above 0 (or 0 with ``zero_ok``).

    Raises:
        ValueError: it is not a number, not finite, negative, zero (unless
            ``zero_ok``) or above :data:`LONGEST`; the message names ``name``.
    """
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = math.nan
    low_ok = seconds >= 0 if zero_ok else seconds > 0
    if isinstance(value, bool) or not (low_ok and seconds <= LONGEST):
        bound = "at least 0" if zero_ok else "above 0"
        raise ValueError(
            f"{name} must be a number of seconds {bound} and at most {LONGEST:g}, got {value!r}"
        )
    return seconds
