"""Conformance targets of ``RedisDispatcher``: remote workers, and where they run.

A :class:`Cluster` is what a remote target needs besides the face: a way to
make a dispatcher on its queue and to start and stop its workers.
:class:`ServerCluster` runs ``dispatchkit worker`` processes (started with the
CLI, as on other hosts) against a real Redis server, in a namespace of its own.
:class:`MemoryCluster` runs ``RedisWorker`` threads over the in-memory
transport, in this process. A cluster over another transport is one more class
of the same shape and one more entry in :data:`dispatchkit.testing.TARGETS`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from dispatchkit.errors import DispatchError

from . import jobs
from .blocking import HandleFront
from .face import Capabilities, Counts, FrontEnd

__all__ = ["Cluster", "MemoryCluster", "RemoteTarget", "ServerCluster", "TargetUnavailable"]

#: The module every remote worker of a conformance cluster imports.
JOBS_MODULE = jobs.__name__


class TargetUnavailable(DispatchError):
    """A target cannot run here (its server cannot be reached, say)."""


class Cluster(Protocol):
    """Remote workers on one queue, and dispatchers that reach them."""

    workers: int
    concurrency: int

    def dispatcher(self, strategy: str, block: int) -> Any:
        """A fresh ``RedisDispatcher`` (or one of its shape) on the cluster's queue."""
        ...

    def start(self) -> None:
        """Start the workers; return once each takes jobs."""
        ...

    def stop(self) -> None:
        """Stop the workers and drop whatever the cluster left behind."""
        ...


class RemoteFront(HandleFront):
    """A ``RedisDispatcher`` as a front end.

    As every option is (see :class:`.blocking.HandleFront`), one the dispatcher
    lacks is passed only when a check asks for it, so the divergence shows as the
    dispatcher's own ``TypeError``; the key strategy sends one job per entry, so
    ``chunk`` applies to the other strategies only.
    """

    def __init__(self, dispatcher: Any, workers: int, chunk: int) -> None:
        super().__init__(dispatcher)
        self._workers = workers
        self._chunk = chunk

    @property
    def workers(self) -> int:
        return self._workers

    def map(self, fn: Callable[..., Any], items: Iterable[Any], **options: Any) -> list[Any]:
        return super().map(fn, items, chunk=self._chunk_for(options), **options)

    def dispatch(self, fn: Callable[..., Any], items: Iterable[Any], **options: Any) -> int:
        return super().dispatch(fn, items, chunk=self._chunk_for(options), **options)

    def _chunk_for(self, options: dict[str, Any]) -> int:
        keyed = options.get("key") is not None or self.dispatcher.strategy.needs_key
        return 1 if keyed else self._chunk

    def counts(self) -> Counts:
        stats = self.dispatcher.stats()
        return Counts(stats.submitted, stats.succeeded, stats.failed, stats.cancelled)

    def stop(self, cancel: bool = True) -> Counts:
        self.dispatcher.stop(cancel=cancel)
        return self.counts()


REMOTE_CAPABILITIES = Capabilities(
    identity="pid",
    recall=False,
    key_pins_worker=False,
)


@dataclass
class RemoteTarget:
    """``RedisDispatcher`` over a :class:`Cluster` whose workers it starts once."""

    cluster: Cluster
    name: str = "redis"
    capabilities: Capabilities = field(default=REMOTE_CAPABILITIES)

    def __post_init__(self) -> None:
        self.capabilities = replace(self.capabilities, fixed_workers=self.cluster.workers)

    @contextmanager
    def open(
        self, workers: int, *, strategy: str, chunk: int = 1, block: int = 4, steal: bool = True
    ) -> Iterator[FrontEnd]:
        # ``steal`` is moot: remote workers read their own streams, nothing is stolen.
        dispatcher = self.cluster.dispatcher(strategy, block)
        try:
            # Its ``workers`` are the jobs that run at once (what holding them all takes).
            yield RemoteFront(dispatcher, self.cluster.workers * self.cluster.concurrency, chunk)
        finally:
            dispatcher.join(30)
            dispatcher.shutdown(wait=False)


@dataclass
class ServerCluster:
    """``dispatchkit worker`` processes on a real Redis server, in a fresh namespace.

    Args:
        url: the server, ``redis://HOST:PORT/DB``.
        workers: worker processes.
        concurrency: jobs each worker runs at once.
    """

    url: str
    workers: int = 2
    concurrency: int = 2
    queue: str = "conformance"
    namespace: str = field(default_factory=lambda: f"dkconf-{uuid.uuid4().hex[:10]}")
    _procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def dispatcher(self, strategy: str, block: int) -> Any:
        from dispatchkit.remote import RedisDispatcher

        return RedisDispatcher(
            self.url, self.queue, strategy=strategy, block=block, namespace=self.namespace
        )

    def start(self) -> None:
        try:
            import redis
        except ImportError as exc:
            raise TargetUnavailable(f"the redis extra is not installed ({exc})") from None
        try:
            redis.Redis.from_url(self.url, socket_connect_timeout=1).ping()
        except redis.RedisError as exc:
            raise TargetUnavailable(f"no Redis server at {self.url} ({exc})") from None
        command = [
            *(sys.executable, "-m", "dispatchkit", "worker", "--redis", self.url),
            *("--queue", self.queue, "--namespace", self.namespace),
            *("--concurrency", str(self.concurrency), "--import", JOBS_MODULE),
            *("--heartbeat", "0.2"),
        ]
        for _ in range(self.workers):
            self._procs.append(
                subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            )
        self._wait_until_every_worker_takes_jobs()

    def _wait_until_every_worker_takes_jobs(self, timeout: float = 30) -> None:
        """Round-robin probes until each worker process has answered one (public API only)."""
        deadline = time.monotonic() + timeout
        while True:
            dead = [p for p in self._procs if p.poll() is not None]
            if dead:
                _, err = dead[0].communicate()
                raise RuntimeError(f"a worker exited at start: {err.decode(errors='replace')}")
            probe = self.dispatcher("round_robin", 1)
            try:
                seen = {place for _, place in probe.map(jobs.where, range(4 * self.workers))}
            finally:
                probe.shutdown(wait=False)
            if len(seen) == self.workers:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{len(seen)} of {self.workers} workers took jobs in time")
            time.sleep(0.2)

    def stop(self) -> None:
        if not self._procs:
            return  # never started (no server, say): nothing to stop or delete
        for proc in self._procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self._procs:
            try:
                proc.communicate(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
        self._procs.clear()
        import redis

        client = redis.Redis.from_url(self.url)
        try:
            keys = list(client.scan_iter(match=f"{self.namespace}:*", count=1000))
            if keys:
                client.delete(*keys)
        finally:
            client.close()


@dataclass
class MemoryCluster:
    """``RedisWorker`` threads over one in-memory broker: Redis's protocol, no server.

    Args:
        workers: workers, each ``run()`` in a thread of its own.
        concurrency: jobs each worker runs at once.
    """

    workers: int = 2
    concurrency: int = 2
    queue: str = "conformance"
    _broker: Any = None
    _running: list[tuple[Any, threading.Thread]] = field(default_factory=list)

    def _transport(self, consumer: str = "") -> Any:
        from dispatchkit.transports.memory import MemoryBroker, MemoryTransport

        if self._broker is None:
            self._broker = MemoryBroker()
        return MemoryTransport(self._broker, queue=self.queue, consumer=consumer)

    def dispatcher(self, strategy: str, block: int) -> Any:
        from dispatchkit.remote import RedisDispatcher

        return RedisDispatcher(transport=self._transport(), strategy=strategy, block=block)

    def start(self) -> None:
        from dispatchkit.registry import DEFAULT_REGISTRY
        from dispatchkit.remote import RedisWorker

        for i in range(self.workers):
            worker = RedisWorker(
                transport=self._transport(f"conformance-{i}"),
                registry=DEFAULT_REGISTRY,
                concurrency=self.concurrency,
                heartbeat=0.2,
            )
            thread = threading.Thread(target=worker.run, name=f"memory-cluster-{i}", daemon=True)
            thread.start()
            self._running.append((worker, thread))
        # Registered, every worker reads its stream: a round-robin probe then
        # comes back from each of them.
        deadline = time.monotonic() + 30
        workers_key = self._transport().keys.workers
        while len(self._broker.members(workers_key)) < self.workers:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the {self.workers} workers did not register in time")
            time.sleep(0.02)
        probe = self.dispatcher("round_robin", 1)
        try:
            handles = [probe.submit(jobs.square, i) for i in range(2 * self.workers)]
            if [h.result(timeout=30) for h in handles] != [i * i for i in range(len(handles))]:
                raise RuntimeError("the workers gave wrong results to a probe")
        finally:
            probe.shutdown(wait=False)

    def stop(self) -> None:
        # As SIGTERM does: each reads no more, finishes what it holds, and returns.
        for worker, _ in self._running:
            worker.stop()
        for _, thread in self._running:
            thread.join(15)
        self._running.clear()


@contextmanager
def started(cluster: Cluster, name: str, **capabilities: Any) -> Iterator[RemoteTarget]:
    """A remote target whose cluster runs for the block.

    ``capabilities`` override those of a Redis target (``identity="none"`` for
    workers that share one process, say).
    """
    try:
        cluster.start()
        yield RemoteTarget(cluster, name, replace(REMOTE_CAPABILITIES, **capabilities))
    finally:
        cluster.stop()


def redis_server_url() -> str:
    """The test server: ``DISPATCHKIT_TEST_REDIS``, else the local default."""
    return os.environ.get("DISPATCHKIT_TEST_REDIS", "redis://127.0.0.1:6379/0")
