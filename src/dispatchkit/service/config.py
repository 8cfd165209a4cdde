"""The settings of ``dispatchkit serve``, checked once."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final

from dispatchkit._durations import check_seconds
from dispatchkit._environ import available_cpus
from dispatchkit._limits import MAX_PROCESSES
from dispatchkit.executors.registry import kind_names
from dispatchkit.settings import DEFAULT_DRAIN_TIMEOUT, MAX_DRAIN_TIMEOUT

__all__ = [
    "ACK_MODES",
    "DEFAULT_DRAIN_TIMEOUT",
    "DEFAULT_FSYNC_INTERVAL",
    "DEFAULT_MAX_BODY",
    "DEFAULT_MAX_DEPTH",
    "DEFAULT_SEGMENT_BYTES",
    "EXECUTORS",
    "INTERFACES",
    "MAX_DRAIN_TIMEOUT",
    "MAX_FSYNC_INTERVAL",
    "MAX_MAX_DEPTH",
    "MAX_PROCESSES",
    "ServeConfig",
    "available_cpus",
]

#: Kinds of workers that run the payload jobs (``auto`` chooses: see ServeConfig).
EXECUTORS: Final = ("auto", *kind_names(in_process=True))

#: When a request stored by the sink is answered 202: once its lines are written
#: and fsynced (group commit), or once they are written (the OS has them; a
#: power loss or an OS crash may lose up to ``fsync_interval`` of them).
ACK_MODES: Final = ("durable", "buffered")

#: Server interfaces the service runs on: granian's own (faster here) or ASGI.
INTERFACES: Final = ("rsgi", "asgi")

#: Largest request body accepted, in bytes (1 MiB).
DEFAULT_MAX_BODY: Final = 1 << 20

#: Size in bytes at which the sink starts a new segment file (64 MiB).
DEFAULT_SEGMENT_BYTES: Final = 64 << 20

#: Seconds between two flushes of the sink to disk (write + fsync).
DEFAULT_FSYNC_INTERVAL: Final = 1.0

#: Longest flush interval accepted, in seconds (a day): beyond, a typo is likelier.
MAX_FSYNC_INTERVAL: Final = 86400.0

#: Deepest nesting of arrays and objects a request body may have by default:
#: the body's own object is level 1, ``payloads`` 2, a payload object 3.
DEFAULT_MAX_DEPTH: Final = 64

#: Highest ``max_depth`` accepted: the decoder must stay well within every
#: Python's recursion limit (3.11's gives up near 1,000), so that the limit is
#: the service's own and the same on every interpreter.
MAX_MAX_DEPTH: Final = 512


@dataclass(frozen=True, slots=True)
class ServeConfig:
    """How the ingest service runs.

    Attributes:
        sink: directory of the NDJSON segment files (created when missing);
            required unless a ``handler`` replaces the sink.
        host: address to bind; loopback unless told otherwise.
        port: TCP port to bind.
        workers: dispatcher workers running the payload jobs.
        executor: what the workers are: ``async``, tasks on the server's event
            loop (the cheapest for jobs that never block, such as the sink's
            append), ``thread``, threads (for a handler that blocks), or
            ``auto``: asyncio for the sink and for a coroutine handler,
            threads for a plain-function handler.
        queue_size: jobs one inbox holds (with ``redis``: payloads the stream
            holds, waiting or running); a request that does not fit gets 503.
        strategy: dispatcher strategy (auto, round_robin, batch, pull or key).
        handler: ``package.module:function`` called with each decoded payload
            instead of storing it (None: the sink stores payloads).
        token: bearer token required on ``POST /v1/payloads`` (None: no check).
        metrics_token: bearer token required on ``GET /metrics`` (None: open).
        max_depth: deepest nesting of arrays and objects in a request body (the
            body's object is level 1); deeper bodies get 400.
        max_body: largest request body in bytes; larger ones get 413.
        segment_bytes: size at which the sink rotates to a new segment file.
        fsync_interval: seconds between two flushes of the sink to disk by
            its flusher thread (with ``ack="durable"``, only a failed fsync
            waits for it, to be tried again).
        ack: with a sink: ``durable``, each request is answered 202 once its
            payloads are written and fsynced (requests written while an fsync
            runs share the next one); ``buffered``, once they are written (up
            to ``fsync_interval`` of them may be lost to a power loss or an
            OS crash). See :data:`ACK_MODES`.
        redis: hand each payload to remote workers through this Redis server
            (``redis://host:port/db``) instead of a sink or a handler here.
        queue: with ``redis``: the queue the workers read (``dispatchkit
            worker --queue``).
        namespace: with ``redis``: the first part of every key (as the workers').
        job: with ``redis``: the registered job the workers run with each payload.
        access_log: log one structured line per request (costs throughput).
        interface: how granian calls the application: ``rsgi`` (its own
            interface, the faster) or ``asgi``.
        drain_timeout: seconds SIGTERM or SIGINT waits for the open requests;
            then their connections are closed, and the payloads already
            accepted are still written.
        processes: server processes, each with its own dispatcher and its own
            series of sink segments, all accepting on one port (None: one per
            CPU this process may run on, :func:`available_cpus`).

    Raises:
        ValueError: a value out of range, with a message naming it.
        TypeError: a duration that is not a number.
    """

    sink: Path | None = None
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 2
    executor: str = "auto"
    queue_size: int = 4096
    strategy: str = "auto"
    handler: str | None = None
    token: str | None = None
    max_body: int = DEFAULT_MAX_BODY
    segment_bytes: int = DEFAULT_SEGMENT_BYTES
    fsync_interval: float = DEFAULT_FSYNC_INTERVAL
    access_log: bool = False
    interface: str = "rsgi"
    redis: str | None = None
    queue: str = "ingest"
    namespace: str = "dispatchkit"
    job: str = "dispatchkit.payload"
    drain_timeout: float = DEFAULT_DRAIN_TIMEOUT

    metrics_token: str | None = None
    max_depth: int = DEFAULT_MAX_DEPTH
    ack: str = "durable"
    processes: int | None = None

    def __post_init__(self) -> None:
        chosen = [self.sink is not None, self.handler is not None, self.redis is not None]
        if sum(chosen) != 1:
            raise ValueError(
                "where payloads go: give exactly one of a sink directory, a handler or Redis"
            )
        if self.redis is not None and not self.redis.startswith(
            ("redis://", "rediss://", "unix://")
        ):
            raise ValueError(
                f"redis must be a redis://, rediss:// or unix:// URL, got {self.redis!r}"
            )
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be between 0 and 65535, got {self.port}")
        if self.max_body < 1:
            raise ValueError(f"max_body must be at least 1 byte, got {self.max_body}")
        if self.segment_bytes < 1:
            raise ValueError(f"segment_bytes must be at least 1 byte, got {self.segment_bytes}")
        check_seconds("fsync_interval", self.fsync_interval, maximum=MAX_FSYNC_INTERVAL)
        check_seconds("drain_timeout", self.drain_timeout, zero_ok=True, maximum=MAX_DRAIN_TIMEOUT)
        if self.executor not in EXECUTORS:
            raise ValueError(
                f"executor must be one of {', '.join(EXECUTORS)}, got {self.executor!r}"
            )
        if self.processes is not None and not 1 <= self.processes <= MAX_PROCESSES:
            raise ValueError(
                f"processes must be between 1 and {MAX_PROCESSES}, got {self.processes}"
            )
        if self.ack not in ACK_MODES:
            raise ValueError(f"ack must be one of {', '.join(ACK_MODES)}, got {self.ack!r}")
        if self.interface not in INTERFACES:
            raise ValueError(
                f"interface must be one of {', '.join(INTERFACES)}, got {self.interface!r}"
            )
        if self.token is not None and not self.token:
            raise ValueError("token must not be empty")
        if self.metrics_token is not None and not self.metrics_token:
            raise ValueError("metrics_token must not be empty")
        # 3: the body's object, its payloads array and a payload object.
        if not 3 <= self.max_depth <= MAX_MAX_DEPTH:
            raise ValueError(
                f"max_depth must be between 3 and {MAX_MAX_DEPTH}, got {self.max_depth}"
            )
