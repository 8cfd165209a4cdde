"""Running the ingest service on granian: bind, serve until a signal, drain, flush.

    dispatchkit serve (granian's main process) ── fork ──▶ worker processes 1..N
        checks the settings, the handler           create_app(): Dispatcher, sink, IngestApp
        and the address; on SIGTERM/SIGINT         HTTP I/O in granian's Rust threads,
        stops the workers and waits for them,      the app on the worker's event loop;
        at most --drain-timeout (shutdown.py);     dies with the main process
        sums their outcomes: one exit code         counters: its row of counters.bin

``--processes N`` (default: one per CPU this process may run on) gives N worker
processes, granian's own ``workers``: each binds the port for itself with
SO_REUSEPORT, so the kernel spreads connections over them, and each has its own
dispatcher and its own series of sink segments (``segment-p1-*``, ...: no file
is shared). Their counters live in one shared file (board.py), so ``/metrics``
on any of them reports the sum; each leaves its drain's outcome in a file of
its own, which :func:`serve` sums into one exit code (outcome.py). The checks
made before the fork are preflight.py's.

granian was chosen by measurement (README): its HTTP I/O runs outside the GIL,
and its own interface, RSGI, costs less per request than ASGI. Shutdown order
(STYLE.md, practice 3): granian stops accepting; then the RSGI ``__rsgi_del__``
hook (or the ASGI lifespan shutdown) joins the dispatcher, so every queued
payload job runs, and closes the sink, which fsyncs what it wrote. Every
payload answered 202 is then on disk, or the worker says how many are not
(an fsync failed): :func:`serve` then raises :class:`UnstoredPayloads`.
granian runs that hook only once every open connection has ended: a client
that never finishes its request would hold the service forever, so past
``--drain-timeout`` the main process tells the worker to drain at once
(deadline_server.py, shutdown.py); the worker writes what it accepted and
exits, which closes the connections.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import tempfile
import threading
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from granian.constants import HTTPModes, Interfaces, Loops

from dispatchkit.async_dispatcher import AsyncDispatcher
from dispatchkit.dispatcher import Dispatcher
from dispatchkit.settings import Settings

from .app import IngestApp
from .board import PUBLISH_INTERVAL, CounterBoard
from .config import ServeConfig, available_cpus
from .deadline_server import DeadlineServer
from .group_commit import GroupCommit
from .handler import handler_job, load_handler
from .interfaces import Receive, Scope, Send
from .logs import configure_logging
from .metrics import ServiceMetrics
from .outcome import OUTCOME_ENV, UnstoredPayloads, read_reports, result, write_report
from .preflight import check_redis, check_sink, choose_executor, on_loop, probe
from .shutdown import (
    DRAIN_DEADLINE_EXIT,
    DRAIN_NOW,
    FLUSH_GRACE,
    die_with_parent,
    open_connections,
)
from .sink import SegmentSink

if TYPE_CHECKING:
    from .redis_queue import RedisPayloadQueue

__all__ = ["UnstoredPayloads", "create_app", "serve"]

logger = logging.getLogger(__name__)

#: Environment variable that carries the settings to the worker process.
CONFIG_ENV: Final = "DISPATCHKIT_SERVE_CONFIG"
#: Environment variable that carries the main process's pid to the worker.
PARENT_ENV: Final = "DISPATCHKIT_SERVE_PARENT"

#: Environment variable naming the file of every worker process's counters.
COUNTERS_ENV: Final = "DISPATCHKIT_SERVE_COUNTERS"

#: Environment variable giving a worker process its index (0-based), set by
#: DeadlineServer as it starts each one.
PROCESS_ENV: Final = "DISPATCHKIT_SERVE_PROCESS"


#: How granian runs the service: one worker process, uvloop, HTTP/1.1, RSGI
#: unless told otherwise. The load benchmark's single-queue baseline runs with
#: the same options.
GRANIAN_OPTIONS: Final[dict[str, Any]] = {
    "interface": Interfaces.RSGI,
    "workers": 1,
    "loop": Loops.uvloop,
    "http": HTTPModes.http1,
    "websockets": False,
    "factory": True,
    "log_enabled": False,
    "backlog": 2048,
}


def serve(config: ServeConfig) -> bool:
    """Serve until SIGTERM or SIGINT, then drain the queue and flush the sink.

    The settings, the handler and the address are checked here, before the
    worker process starts, so that mistakes get a clear error.

    Returns:
        True after a clean drain; False when requests were still open at the
        drain deadline and their connections were closed (the payloads
        accepted are written all the same).

    Raises:
        ValueError: a handler that cannot be loaded, a bad dispatcher setting, or a
            sink directory that cannot be created or written.
        OSError: the address cannot be bound.
        UnstoredPayloads: some payloads answered 202 are perhaps not on disk.
        RuntimeError: the worker process died, or failed to drain.
    """
    choose_executor(config)
    # Checked without starting threads: granian forks this process.
    Settings(workers=config.workers, strategy=config.strategy, queue_size=config.queue_size)
    if config.redis is not None:
        check_redis(config.redis)
    if config.sink is not None:
        check_sink(config.sink)
    # Bind once here: a busy port is one clear error, and port 0 gets a free port.
    port = probe(config.host, config.port)
    processes = config.processes if config.processes is not None else available_cpus()
    settings = {
        **asdict(config),
        "port": port,
        "sink": None if config.sink is None else str(config.sink),
        "processes": processes,
    }
    os.environ[CONFIG_ENV] = json.dumps(settings)
    os.environ[PARENT_ENV] = str(os.getpid())
    server = DeadlineServer(
        f"{__name__}:create_app",
        drain_timeout=config.drain_timeout,
        process_env=PROCESS_ENV,
        address=config.host,
        port=port,
        **{**GRANIAN_OPTIONS, "interface": Interfaces(config.interface), "workers": processes},
    )
    with tempfile.TemporaryDirectory(prefix="dispatchkit-serve-") as scratch:
        counters = Path(scratch) / "counters.bin"
        CounterBoard.create(counters, processes)
        os.environ[COUNTERS_ENV] = str(counters)
        os.environ[OUTCOME_ENV] = scratch
        try:
            server.serve()
        except SystemExit as exc:
            if exc.code:
                raise RuntimeError(
                    f"the server's worker process failed (exit code {exc.code})"
                ) from None
        codes = server.worker_exit_codes()
        # Each worker's own word on its drain; its exit code alone can be
        # unknown (None) when granian reaped it first.
        reports = read_reports(Path(scratch))
    return result(codes, reports, processes)


def _log_worker_crash(owner: asyncio.Task[None]) -> None:
    if not owner.cancelled() and owner.exception() is not None:
        # Workers do not fail on a job's error: this is a bug, and the service
        # now answers 503 "closing". Say so loudly.
        logger.critical("payload workers crashed", exc_info=owner.exception())


def create_app() -> _Service:
    """Build the service in granian's worker process, from :data:`CONFIG_ENV`."""
    configure_logging()
    if PARENT_ENV in os.environ:  # set by serve(); absent when granian is run by hand
        die_with_parent(int(os.environ[PARENT_ENV]))
    settings: dict[str, Any] = json.loads(os.environ[CONFIG_ENV])
    if settings["sink"] is not None:
        settings["sink"] = Path(settings["sink"])
    config = ServeConfig(**settings)
    processes = config.processes or 1
    index = int(os.environ.get(PROCESS_ENV, "0"))
    counters = os.environ.get(COUNTERS_ENV)
    board = CounterBoard(processes, None if counters is None else Path(counters))
    return _Service(config, board, index)


class _Service:
    """The ingest app plus its lifespan: start-up log, ordered drain at shutdown.

    Served through RSGI (``__rsgi__`` and its ``__rsgi_init__``/``__rsgi_del__``
    hooks) or ASGI (``__call__`` with the lifespan protocol).
    """

    def __init__(self, config: ServeConfig, board: CounterBoard, index: int) -> None:
        self._config = config
        #: This process among the server's (0-based), and how many there are.
        self._index = index
        self._processes = board.rows
        self._publisher: asyncio.TimerHandle | None = None
        self._sink: SegmentSink | None = None
        self._commit: GroupCommit | None = None
        self._executor = "remote" if config.redis is not None else choose_executor(config)
        job: Any = None
        if config.handler is not None:
            job = handler_job(load_handler(config.handler), on_thread=not on_loop(self._executor))
        elif config.sink is not None:
            durable = config.ack == "durable"
            self._sink = SegmentSink(
                config.sink,
                config.segment_bytes,
                config.fsync_interval,
                durable=durable,
                # Each process its own series: no segment is shared or interleaved.
                series=f"p{index + 1}" if board.rows > 1 else "",
            )
            job = self._sink.append
            if durable:
                sink = self._sink
                # The commit's thread writes each group's lines, then fsyncs them.
                self._commit = GroupCommit(
                    sink.flush, lambda: sink.failed_flushes, sink.write_lines
                )
        # Where payload jobs go: a local dispatcher, or (--redis) remote workers.
        self._dispatcher: AsyncDispatcher | Dispatcher | None = None
        self._remote: RedisPayloadQueue | None = None
        if config.redis is not None:
            from .redis_queue import RedisPayloadQueue  # needs the redis extra

            self._remote = RedisPayloadQueue(
                config.redis, config.queue, config.namespace, config.job, config.queue_size
            )
        elif on_loop(self._executor):
            self._dispatcher = AsyncDispatcher(
                workers=config.workers, strategy=config.strategy, queue_size=config.queue_size
            )
        else:
            self._dispatcher = Dispatcher(
                workers=config.workers,
                strategy=config.strategy,
                queue_size=config.queue_size,
                name="dispatchkit-serve",
            )
        target = self._remote if self._dispatcher is None else self._dispatcher
        assert target is not None
        #: The task that holds the AsyncDispatcher's ``async with`` open.
        self._owner: asyncio.Task[None] | None = None
        self._stopping: asyncio.Event | None = None
        #: Set once a drain began: the ordinary one, or :meth:`_drain_now`.
        self._drain_begun = False
        self._drain_now_task: asyncio.Task[None] | None = None
        self._metrics = ServiceMetrics(target, self._sink, board=board, process=index)
        if self._sink is not None:
            self._sink.on_flush = self._metrics.observe_fsync
        self._app = IngestApp(
            target,
            job,
            self._metrics,
            sink=self._sink,
            commit=self._commit,
            token=config.token,
            metrics_token=config.metrics_token,
            max_body=config.max_body,
            max_depth=config.max_depth,
            access_log=config.access_log,
        )
        # The app's own method, not a wrapper: one coroutine less per request.
        self.__rsgi__ = self._app.__rsgi__

    def __rsgi_init__(self, loop: asyncio.AbstractEventLoop) -> None:
        # Before granian runs its loop: the workers are up before any request.
        loop.run_until_complete(self._start_workers())
        loop.add_signal_handler(DRAIN_NOW, self._on_drain_now)
        self._log_listening()

    def __rsgi_del__(self, loop: asyncio.AbstractEventLoop) -> None:
        # granian calls this once its loop stopped serving; requests that still
        # reach the app while the asyncio workers finish get 503 "closing".
        if self._drain_now_task is not None:
            loop.run_until_complete(self._drain_now_task)  # it ends the process
            return
        self._drain_begun = True
        self._log_draining()
        try:
            loop.run_until_complete(self._stop_workers())
        finally:
            self._drain()  # whatever became of the workers, the sink is flushed

    def _publish(self) -> None:
        # The other processes sum this one's job and sink counts from its row.
        self._metrics.publish()
        self._publisher = asyncio.get_running_loop().call_later(PUBLISH_INTERVAL, self._publish)

    async def _start_workers(self) -> None:
        if self._processes > 1:
            self._publish()
        if self._remote is not None:
            await self._remote.ping()
        if isinstance(self._dispatcher, AsyncDispatcher):
            started = asyncio.Event()
            self._stopping = asyncio.Event()
            self._owner = asyncio.get_running_loop().create_task(
                self._hold_workers(self._dispatcher, started)
            )
            self._owner.add_done_callback(_log_worker_crash)
            await started.wait()

    async def _hold_workers(self, dispatcher: AsyncDispatcher, started: asyncio.Event) -> None:
        assert self._stopping is not None
        async with dispatcher:  # the worker tasks live in its TaskGroup
            started.set()
            await self._stopping.wait()
        # Leaving the block closed the dispatcher and waited for every queued job.

    async def _stop_workers(self) -> None:
        if self._publisher is not None:
            self._publisher.cancel()
        if self._remote is not None:
            await self._remote.close()  # every 202 is in Redis already
        owner = self._owner
        if owner is not None and self._stopping is not None:
            self._stopping.set()
            # A crash was logged as it happened (_log_worker_crash); draining goes on.
            await asyncio.wait([owner])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        else:
            await self._app(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self._start_workers()
                asyncio.get_running_loop().add_signal_handler(DRAIN_NOW, self._on_drain_now)
                self._log_listening()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._drain_now_task is not None:
                    await self._drain_now_task  # it ends the process
                    return
                self._drain_begun = True
                self._log_draining()
                try:
                    await self._stop_workers()
                finally:
                    # In a thread: the loop stays free while thread workers finish.
                    await asyncio.to_thread(self._drain)
                await send({"type": "lifespan.shutdown.complete"})
                return

    def _log_listening(self) -> None:
        config = self._config
        where: dict[str, Any]
        if self._remote is not None:  # the URL is not logged: it may hold a password
            where = {"queue": config.queue, "namespace": config.namespace, "job": config.job}
        else:
            assert self._dispatcher is not None
            where = {
                "workers": config.workers,
                "strategy": self._dispatcher.strategy.name,
                "sink": None if config.sink is None else str(config.sink),
                **({} if config.sink is None else {"ack": config.ack}),
            }
        logger.info(
            "listening",
            extra={
                "host": config.host,
                "port": config.port,
                "interface": config.interface,
                "executor": self._executor,
                "queue_size": config.queue_size,
                "processes": self._processes,
                "server_process": self._index + 1,
                **where,
            },
        )

    def _on_drain_now(self) -> None:
        # DRAIN_NOW: the drain deadline passed, or the main process died.
        if not self._drain_begun:  # else the ordinary drain runs: no connection is left
            self._drain_begun = True
            self._drain_now_task = asyncio.get_running_loop().create_task(self._drain_now())

    async def _drain_now(self) -> None:
        """Write what was accepted, then exit: that closes the open connections."""
        closed = open_connections(self._config.port)
        orphaned = os.getppid() != int(os.environ.get(PARENT_ENV, os.getppid()))
        self._log_draining()
        watchdog = threading.Timer(FLUSH_GRACE, self._give_up)
        watchdog.daemon = True
        watchdog.start()
        try:
            await self._stop_workers()
            await asyncio.to_thread(
                self._drain, "main process gone" if orphaned else "drain deadline passed", closed
            )
        except BaseException:
            logger.critical("the drain failed", exc_info=True)
            os._exit(1)
        os._exit(DRAIN_DEADLINE_EXIT)

    def _give_up(self) -> None:
        logger.critical(
            "accepted payloads still unwritten %g s after the drain deadline; exiting",
            FLUSH_GRACE,
            extra={"queued": self._queued()},
        )
        os._exit(1)

    def _queued(self) -> int:
        if self._dispatcher is None:
            return 0  # the remote workers have them
        stats = self._dispatcher.stats()
        return stats.submitted - stats.succeeded - stats.failed - stats.cancelled

    def _log_draining(self) -> None:
        logger.info("draining", extra={"queued": self._queued()})

    def _drain(self, cut_short: str | None = None, closed: int | None = None) -> None:
        """Run what is queued, close the sink, log the final line.

        Args:
            cut_short: why the drain did not wait for the open requests (None: it did).
            closed: how many connections were then closed (None: not known).
        """
        if isinstance(self._dispatcher, Dispatcher):
            self._dispatcher.join()
        if self._sink is not None:
            self._sink.close()  # first: no write, so no wait for a flush, comes after
        if self._commit is not None:
            self._commit.close()
        counts: dict[str, int] = {}
        if self._dispatcher is not None and self._sink is None:
            # With a sink the requests store their own lines: no payload job runs.
            stats = self._dispatcher.stats()
            counts = {"succeeded": stats.succeeded, "failed": stats.failed}
        if self._sink is not None:
            counts["lines_written"] = self._sink.lines_written
            counts["unstored"] = self._sink.unstored
            if self._sink.unstored:
                logger.error("payloads answered 202 could not be stored", extra=counts)
        self._metrics.publish()  # the final counts, for the processes still scraped
        # For serve() in the main process.
        write_report(self._index + 1, counts.get("unstored", 0), cut_short is not None)
        facts: dict[str, Any] = {
            "accepted": self._metrics.payloads_accepted,
            **counts,
            "server_process": self._index + 1,
        }
        if cut_short is None:
            logger.info("stopped", extra=facts)
            return
        logger.warning(
            "%s: %s connections closed",
            cut_short,
            "the open" if closed is None else closed,
            extra={**facts, "connections_closed": closed, "exit_code": DRAIN_DEADLINE_EXIT},
        )
