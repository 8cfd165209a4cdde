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

__all__ = ["driver_options", "redis"]


def driver_options() -> dict[str, object]:
    """What a client names itself to the server with (CLIENT SETINFO), given once.

    redis-py 7.2 and later, unless given ``driver_info``, work out their own version
    for every connection a pool opens, with ``importlib.metadata`` (which reads the
    installed distributions' files: a few ms of a worker's start, and again for each
    of its connections). The same name and version, from the package itself, are
    given here instead. Older redis-py take the version once, when imported.
    """
    driver_info = getattr(redis, "DriverInfo", None)
    if driver_info is None:  # pragma: no cover - depends on the installed redis-py
        return {}
    return {"driver_info": driver_info(lib_version=redis.__version__)}
