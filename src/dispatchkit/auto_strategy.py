"""The ``auto`` strategy, the default: whichever worker is free takes the next chunk,
and the chunk's size adapts to what the workers measure.

Placement is the ``pull`` strategy's (one shared queue: no job waits behind a
slow one while another worker is idle); what ``adaptive`` adds is the hand-off
size, decided by :mod:`dispatchkit.core.adaptive` while a ``map`` runs instead
of fixed in advance. Pure: no I/O, no threads.
"""

from __future__ import annotations

from dataclasses import dataclass

from .strategies import Pull

__all__ = ["Auto"]


@dataclass(frozen=True, slots=True)
class Auto(Pull):
    """Pull's one shared queue, chunks sized from measured job times (``chunk="auto"``).

    A subclass of :class:`~.strategies.Pull` because the placement is the same,
    word for word; only the ``adaptive`` declaration differs.
    """

    name = "auto"
    adaptive = True
