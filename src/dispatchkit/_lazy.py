"""A package's names imported when first used, not when the package is.

    __getattr__ = lazy_getattr(__name__, globals(), {"Dispatcher": "dispatcher"})

Both :mod:`dispatchkit` and :mod:`dispatchkit.remote` keep their heavy halves
out of ``import`` this way, so that a remote worker does not start up the
dispatchers, nor a dispatcher the worker. Standard library only, and nothing
imported until a name is asked for.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Any

__all__ = ["lazy_getattr"]


def lazy_getattr(
    package: str,
    namespace: dict[str, Any],
    modules: Mapping[str, str],
    submodules: Collection[str] = (),
) -> Callable[[str], Any]:
    """A module ``__getattr__`` importing each of ``modules``' names on first use.

    ``modules`` maps a name to the submodule of ``package`` that defines it. The
    value is stored in ``namespace`` (the package's ``globals()``), so the
    import happens once and later lookups do not reach ``__getattr__``.
    ``submodules`` are those reached as attributes of the package
    (``package.strategies.Strategy``) that its ``import`` no longer loads.
    """

    def __getattr__(name: str) -> Any:
        if name in modules or name in submodules:
            import importlib

            module = importlib.import_module(f".{modules.get(name, name)}", package)
            value = module if name in submodules else getattr(module, name)
            namespace[name] = value
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
