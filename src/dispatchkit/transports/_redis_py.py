"""redis-py, imported once for every module of the Redis transport (STYLE 1.7).

Each of them takes ``redis`` from here, so that a missing extra always gives
the one message that says what to install.
"""

from __future__ import annotations

from dispatchkit.errors import ExtraNotInstalled

try:
    import redis
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ExtraNotInstalled(
        "the Redis transport needs redis-py: install dispatchkit[redis]"
    ) from exc

__all__ = ["redis"]
