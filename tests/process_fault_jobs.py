"""Jobs for the process-fault tests: results and errors the dispatcher cannot load.

Each pickles without trouble in the worker process; the dispatcher's process
fails to unpickle it, in one of the two ways that happen in practice.
"""

from __future__ import annotations

import sys
import types
from typing import Any

#: A module that exists only in the worker process that ran a job below.
GHOST_MODULE = "dispatchkit_ghost_module"


def _refuse_to_load(name: str) -> None:
    raise RuntimeError(f"{name} refuses to be loaded")


class LoadBomb:
    """Pickles fine; unpickling calls a function that raises."""

    def __reduce__(self) -> tuple[Any, ...]:
        return _refuse_to_load, ("LoadBomb",)


def _ghost_module() -> types.ModuleType:
    module = sys.modules.get(GHOST_MODULE)
    if module is None:
        module = types.ModuleType(GHOST_MODULE)
        exec(  # defines classes the dispatcher's process cannot import
            "class Ghost:\n    pass\n\nclass GhostError(Exception):\n    pass\n",
            module.__dict__,
        )
        sys.modules[GHOST_MODULE] = module
    return module


def return_load_bomb(_: object = None) -> LoadBomb:
    return LoadBomb()


def return_ghost(_: object = None) -> object:
    return _ghost_module().Ghost()


def raise_ghost(_: object = None) -> None:
    raise _ghost_module().GhostError("haunted")


def ghost_on_two(x: int) -> object:
    """``x * 10``, except for 2, whose result cannot be loaded by the dispatcher."""
    return return_ghost() if x == 2 else x * 10


def raise_ghost_on_two(x: int) -> int:
    """``x``, except for 2, which raises an exception the dispatcher cannot load."""
    if x == 2:
        raise_ghost()
    return x


class Frozen(Exception):
    """An exception that refuses every attribute, ``__cause__`` and ``__traceback__`` too."""

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} takes no attributes")


def raise_frozen(_: object = None) -> None:
    raise Frozen("cold")
