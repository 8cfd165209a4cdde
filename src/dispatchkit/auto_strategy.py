"""The ``auto`` strategy, the default: whichever worker is free takes the next chunk,
and the chunk's size adapts to what the workers measure.

Placement is the ``pull`` strategy's (one shared queue: no job waits behind a
slow one while another worker is idle); what ``adaptive`` adds is the hand-off
size, decided by :mod:`dispatchkit.core.adaptive` while a ``map`` runs instead
of fixed in advance. Pure: no I/O, no threads.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from .strategies import SHARED, Keys, Parts, Strategy

__all__ = ["Auto"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Auto(Strategy):
    """One shared queue, chunks sized from measured job times (``chunk="auto"``)."""

    name = "auto"
    shared = True
    adaptive = True

    def assign(self, seq: int, key: Hashable, workers: int) -> int:
        return SHARED

    def split(
        self, items: Sequence[T], first_seq: int, workers: int, keys: Keys = None
    ) -> Parts[T]:
        return [(SHARED, list(items))] if items else []
