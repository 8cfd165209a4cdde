"""The membership of a remote worker: registration, heartbeats, dead peers, partition leases.

    heartbeat thread, every ``heartbeat`` seconds:
        transport.heartbeat ──▶ peers (live, dead, draining, worker streams)
        touch held entries     (so no one claims them)
        renew leases ─▶ reap dead peers ─▶ adopt departed workers' streams
        ─▶ claim idle entries ─▶ balance partition leases
        claimed entries ──▶ DataPath.accept

Streams read: the shared ``pull`` stream, the worker's own stream (round_robin
and batch), the streams of departed workers (adopted), and the partitions whose
lease it holds (key); :meth:`Membership.streams` says which, for the fetch loop.
A lease being given up is read no more, and released once its entries are done.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import threading
from collections.abc import Iterable

from dispatchkit.errors import TransportError
from dispatchkit.transports.base import Delivery, Transport

from ._outage import Outage
from .datapath import DataPath

#: Jitter and lease order come from a generator of their own: drawing from the
#: global one in the heartbeat thread would disturb programs (and property-based
#: tests) that seed or replay it.
_random = random.Random()
if hasattr(os, "register_at_fork"):  # forked workers (--processes) draw apart
    os.register_at_fork(after_in_child=_random.seed)

__all__ = ["Membership"]

logger = logging.getLogger(__name__)


class Membership:
    """Keeps one worker known to its peers, and takes over what dead peers held.

    Args:
        name: the worker's name.
        transport: the worker's transport.
        path: the worker's data path (held entries; claimed ones go to it).
        heartbeat: seconds between heartbeats.
        dead_after: seconds without a heartbeat after which a peer is dead.
        visibility_timeout: seconds an entry may stay untouched before it is claimed.
        partitions: partitions of the key strategy.
        outage: the worker's record of failed calls.
    """

    def __init__(
        self,
        *,
        name: str,
        transport: Transport,
        path: DataPath,
        heartbeat: float,
        dead_after: float,
        visibility_timeout: float,
        partitions: int,
        outage: Outage,
    ) -> None:
        self.name = name
        self._transport = transport
        self.keys = transport.keys
        self._path = path
        self._lock = path.lock
        self._heartbeat = heartbeat
        self._dead_after = dead_after
        self._visibility = visibility_timeout
        self._partitions = partitions
        self._outage = outage
        self._own = self.keys.worker_stream(name)
        self._leases: set[str] = set()  # partition streams whose lease we hold
        self._releasing: set[str] = set()  # leases to give up once their entries are done
        self._adopted: set[str] = set()  # streams of departed workers
        #: Set to end the heartbeat loop.
        self.beat_stop = threading.Event()
        self.claimed = 0
        path.streams = self.streams
        path.on_missing_stream = self.restart

    def streams(self) -> list[str]:
        """The streams to read now."""
        with self._lock:
            live_leases = sorted(self._leases - self._releasing)
            return [self._own, self.keys.pull, *sorted(self._adopted), *live_leases]

    # -- registration --------------------------------------------------------------

    def register(self) -> None:
        """Open the worker's streams and announce it.

        Raises:
            TransportError: the server failed.
        """
        t = self._transport
        for stream in (self._own, self.keys.pull):
            t.open_stream(stream)
        t.register(self.name, self._own)

    def restart(self) -> None:
        """A stream read went away: forget the adopted ones and register afresh."""
        with self._lock:
            self._adopted.clear()
        with contextlib.suppress(TransportError):  # retried on the next error
            self.register()

    def unregister(self) -> None:
        """Give up the leases, leave the registry and delete what is no longer used."""
        t = self._transport
        try:
            for stream in list(self._leases):
                t.release_lease(_partition(stream), self.name)
            t.unregister(self.name)
            # Our stream, if jobs were still added to it, is adopted by the others.
            t.delete_stream_if_empty(self._own)
            for stream in {self._own, self.keys.pull, *self._leases, *self._adopted}:
                t.delete_consumer(stream, self.name)
        except TransportError:
            logger.warning("worker %s: could not unregister cleanly", self.name, exc_info=True)

    def abandon(self) -> None:
        """Leave at the drain deadline: the held entries stay pending, for others to claim.

        The worker stays in the registry with its last heartbeat, so the others
        take it for dead and claim its entries, and its partitions' leases are
        given up, so their new holders take those at once.
        """
        try:
            for stream in list(self._leases):
                self._transport.release_lease(_partition(stream), self.name)
            self._transport.unregister(self.name, forget=False)
        except TransportError:
            logger.warning("worker %s: could not give up its leases", self.name, exc_info=True)

    # -- heartbeats, claims, leases (heartbeat thread) --------------------------------

    def beat_loop(self) -> None:
        while not self.beat_stop.wait(self._heartbeat * _random.uniform(0.8, 1.0)):
            try:
                self._beat()
                self._outage.reached()
            except TransportError as exc:
                self._outage.failed(exc)
                logger.warning("worker %s: heartbeat failed", self.name, exc_info=True)
            except Exception:
                logger.critical("worker %s: heartbeat crashed", self.name, exc_info=True)

    def _beat(self) -> None:
        t = self._transport
        draining = self._path.stopping.is_set()
        peers = t.heartbeat(self.name, draining=draining, dead_after=self._dead_after)
        with self._lock:
            held = {s: list(ids) for s, ids in self._path.held.items() if ids}
        t.touch(held)  # our entries are not idle, whoever looks
        self._renew_leases()
        if draining:
            self._release_leases(all_of_them=True)
            return
        for worker in peers.dead:
            self._reap(worker)
        self._adopt(peers.streams, peers.live)
        self._claim_idle()
        active = len(peers.live - peers.draining) or 1
        self._balance_leases(math.ceil(self._partitions / active))

    def _reap(self, worker: str) -> None:
        """Claim what a dead worker held, then forget it.

        Of the partitions, only those whose lease this worker holds: the others'
        entries are left to whoever holds or takes their lease (``_claim_idle``,
        ``_acquire_leases``), since here they could run beside the partition's
        later entries on another worker.
        """
        t = self._transport
        partitions = [self.keys.partition(i) for i in range(self._partitions)]
        with self._lock:
            leased = sorted(self._leases - self._releasing)
        claimable = [self.keys.pull, *sorted(t.worker_streams()), *leased]
        total = 0
        for stream in claimable:
            claimed = t.claim_from(stream, worker, self._dead_after)
            total += len(claimed)
            self._take_claimed(claimed)
        left = 0
        # A consumer that still has pending entries is kept (delete_consumer says
        # so): the worker is forgotten once the partitions' new holders took them.
        for stream in [*claimable, *(p for p in partitions if p not in leased)]:
            if not t.delete_consumer(stream, worker):
                left += 1
        if left == 0:
            t.forget_worker(worker)
        if total:
            logger.warning(
                "worker %s: claimed %d entries of dead worker %s", self.name, total, worker
            )

    def _adopt(self, streams: Iterable[str], live: Iterable[str]) -> None:
        """Read the streams of departed workers until they are empty, then delete them."""
        prefix = self.keys.worker_stream("")
        live = set(live)
        for stream in streams:
            owner = stream[len(prefix) :]
            if owner in live or stream == self._own:
                continue
            with self._lock:
                busy = bool(self._path.held.get(stream))
            if not busy and self._transport.delete_stream_if_empty(stream):
                with self._lock:
                    self._adopted.discard(stream)
                continue
            if stream not in self._adopted:
                self._transport.open_stream(stream)
                with self._lock:
                    self._adopted.add(stream)

    def _claim_idle(self) -> None:
        with self._lock:
            streams = [self._own, self.keys.pull, *self._adopted, *self._leases]
        for stream in streams:
            self._take_claimed(self._transport.claim_idle(stream, self._visibility))

    def _take_claimed(self, claimed: list[Delivery]) -> None:
        if claimed:
            self.claimed += len(claimed)
            self._path.accept(claimed)

    def _renew_leases(self) -> None:
        with self._lock:
            leases = list(self._leases)
        for stream in leases:
            if not self._transport.renew_lease(_partition(stream), self.name, self._dead_after):
                with self._lock:
                    self._leases.discard(stream)
                    self._releasing.discard(stream)

    def _balance_leases(self, share: int) -> None:
        with self._lock:
            held = len(self._leases - self._releasing)
        if held > share:
            with self._lock:
                extra = sorted(self._leases - self._releasing)[: held - share]
                self._releasing.update(extra)
        elif held < share:
            self._acquire_leases(share - held)
        self._release_leases(all_of_them=False)

    def _acquire_leases(self, wanted: int) -> None:
        t = self._transport
        order = list(range(self._partitions))
        _random.shuffle(order)
        for index in order:
            if wanted == 0:
                return
            stream = self.keys.partition(index)
            if stream in self._leases:
                continue
            if not t.take_lease(index, self.name, self._dead_after):
                continue
            t.open_stream(stream)
            # The previous holder died or left: what it held runs first, in order.
            self._take_claimed(t.claim_idle(stream, 0, everything=True))
            with self._lock:
                self._leases.add(stream)
            wanted -= 1

    def _release_leases(self, all_of_them: bool) -> None:
        with self._lock:
            if all_of_them:
                self._releasing |= self._leases
            idle = [s for s in self._releasing if not self._path.held.get(s)]
        for stream in idle:
            self._transport.release_lease(_partition(stream), self.name)
            with self._lock:
                self._leases.discard(stream)
                self._releasing.discard(stream)


def _partition(stream: str) -> int:
    """The index of a partition stream."""
    return int(stream.rsplit(":", 1)[1])
