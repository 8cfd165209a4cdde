"""Running the ingest service: bind, serve until a signal, drain, flush.

Shutdown order on SIGTERM or SIGINT (STYLE.md, practice 3): the server stops
accepting connections and finishes the requests in flight; then the dispatcher
is joined, so every queued payload job runs; then the sink writes and fsyncs
what it buffers. Every payload answered 202 is then on disk.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import uvicorn

from dispatchkit.dispatcher import Dispatcher

from .app import IngestApp
from .config import ServeConfig
from .handler import HandlerJob, load_handler
from .metrics import ServiceMetrics
from .sink import SegmentSink

__all__ = ["ServeReport", "serve"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ServeReport:
    """What the service did, once it has stopped.

    Attributes:
        accepted: payloads answered 202.
        succeeded: payload jobs that ran.
        failed: payload jobs that raised.
        lines_written: lines in the sink's segments (0 with a handler).
    """

    accepted: int
    succeeded: int
    failed: int
    lines_written: int


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # uvicorn re-raises a captured signal once it has stopped, which would
        # turn a clean drain into an interrupt; a drained stop exits 0 here.
        signals = (signal.SIGINT, signal.SIGTERM)
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in signals}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def serve(
    config: ServeConfig, *, on_ready: Callable[[str, int], None] | None = None
) -> ServeReport:
    """Serve until SIGTERM or SIGINT, then drain the queue and flush the sink.

    Args:
        config: the settings.
        on_ready: called with the bound host and port once the socket listens.

    Returns:
        The final counts.

    Raises:
        ValueError: a handler that cannot be loaded, or a bad dispatcher setting.
        OSError: the address cannot be bound or the sink directory written.
    """
    job: Callable[[bytes], object]
    sink: SegmentSink | None = None
    if config.handler is not None:
        job = HandlerJob(load_handler(config.handler))
    dispatcher = Dispatcher(
        workers=config.workers,
        strategy=config.strategy,
        queue_size=config.queue_size,
        name="dispatchkit-serve",
    )
    try:
        if config.handler is None:
            assert config.sink is not None
            sink = SegmentSink(config.sink, config.segment_bytes, config.fsync_interval)
            job = sink.append
        sock = _bind(config.host, config.port)
    except BaseException:
        dispatcher.stop()
        if sink is not None:
            sink.close()
        raise
    host, port = sock.getsockname()[:2]
    metrics = ServiceMetrics(dispatcher)
    app = IngestApp(
        dispatcher,
        job,
        metrics,
        token=config.token,
        max_body=config.max_body,
        access_log=config.access_log,
    )
    server = _Server(
        uvicorn.Config(
            app,
            loop="uvloop",
            http="httptools",
            lifespan="off",
            access_log=False,
            log_config=None,
            server_header=False,
            date_header=False,
            # No X-Forwarded-* rewriting: it costs a wrapper call per request,
            # and the service trusts no proxy.
            proxy_headers=False,
        )
    )
    logger.info(
        "listening",
        extra={
            "host": host,
            "port": port,
            "workers": config.workers,
            "strategy": dispatcher.strategy.name,
            "queue_size": config.queue_size,
            "sink": None if config.sink is None else str(config.sink),
        },
    )
    if on_ready is not None:
        on_ready(host, port)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        logger.info("draining", extra={"queued": _queued(dispatcher)})
        dispatcher.join()
        if sink is not None:
            sink.close()
    stats = dispatcher.stats()
    report = ServeReport(
        accepted=metrics.payloads_accepted,
        succeeded=stats.succeeded,
        failed=stats.failed,
        lines_written=0 if sink is None else sink.lines_written,
    )
    logger.info("stopped", extra=_fields(report))
    return report


def _queued(dispatcher: Dispatcher) -> int:
    stats = dispatcher.stats()
    return stats.submitted - stats.succeeded - stats.failed - stats.cancelled


def _fields(report: ServeReport) -> dict[str, Any]:
    return {
        "accepted": report.accepted,
        "succeeded": report.succeeded,
        "failed": report.failed,
        "lines_written": report.lines_written,
    }
