"""The protocol every transport implements: put, fetch, ack, nack, requeue, close."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

__all__ = ["Delivery", "Transport"]


@dataclass(frozen=True, slots=True)
class Delivery:
    """One job entry handed to a worker.

    Attributes:
        stream: the queue (stream) it was read from.
        entry_id: its id there.
        attempts: how many times it has been delivered, this one included.
        payload: the encoded job, or None if the entry holds no job field.
    """

    stream: str
    entry_id: str
    attempts: int
    payload: bytes | None


class Transport(Protocol):
    """Moves encoded jobs to workers and their outcomes back, at least once."""

    def put(self, entries: Sequence[tuple[str, bytes]]) -> None:
        """Append ``(stream, payload)`` entries, in one round trip where possible."""

    def fetch(self, streams: Sequence[str], count: int, block: float) -> list[Delivery]:
        """Take up to ``count`` new entries from ``streams``, waiting up to ``block`` seconds."""

    def ack(self, deliveries: Sequence[Delivery], replies: Sequence[tuple[str, bytes]]) -> None:
        """Store ``(stream, payload)`` replies, then mark ``deliveries`` done, atomically."""

    def nack(self, delivery: Delivery, error: str) -> None:
        """Give up on ``delivery``: move it to the dead-letter queue with ``error``."""

    def requeue(self, deliveries: Sequence[Delivery]) -> None:
        """Give ``deliveries`` back, unstarted, for another worker to take."""

    def close(self) -> None:
        """Release connections. Safe to call more than once."""
