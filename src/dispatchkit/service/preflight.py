"""The checks ``dispatchkit serve`` makes before granian forks its worker processes.

A mistake found here is one clear error in the main process, not a worker
process that dies at start-up: the handler and the executor it needs
(:func:`choose_executor`, which the worker processes use too), the remote
queue's Redis answering (:func:`check_redis`), the sink's directory taking files
(:func:`check_sink`), the address free to bind (:func:`probe`). None of them
starts a thread: granian forks this process.
"""

from __future__ import annotations

import socket
from pathlib import Path

from dispatchkit._directories import check_writable
from dispatchkit.errors import TransportError
from dispatchkit.executors.registry import kind_names, worker_kind

from .config import ServeConfig
from .handler import is_coroutine_handler, load_handler
from .sink import describe_os_error

__all__ = ["check_redis", "check_sink", "choose_executor", "on_loop", "probe"]


def choose_executor(config: ServeConfig) -> str:
    """The kind of workers that will run the payload jobs: ``async`` or ``thread``.

    ``auto`` takes asyncio workers for the sink (an append in memory never
    blocks the event loop) and for a coroutine handler, and threads for a
    plain-function handler, which may block.

    Raises:
        ValueError: the handler cannot be loaded, or is a coroutine function
            and threads were asked for.
    """
    handler = None if config.handler is None else load_handler(config.handler)
    coroutine = handler is not None and is_coroutine_handler(handler)
    loop_kind = _in_process_kind("AsyncDispatcher")
    if config.executor != "auto" and not on_loop(config.executor) and coroutine:
        raise ValueError(
            f"handler {config.handler!r} is a coroutine function: it needs the {loop_kind} executor"
        )
    if config.executor != "auto":
        return config.executor
    return loop_kind if handler is None or coroutine else _in_process_kind("Dispatcher")


def _in_process_kind(front_end: str) -> str:
    """The worker kind that runs jobs in this process behind ``front_end``."""
    return kind_names(front_end=front_end, in_process=True)[0]


def on_loop(executor: str) -> bool:
    """Whether the workers of ``executor`` are tasks on the server's event loop."""
    return worker_kind(executor).takes_coroutines


def check_redis(url: str) -> None:
    """Fail early, with a clear error, when the remote queue's Redis does not answer.

    Raises:
        ValueError: the redis extra is not installed.
        OSError: Redis cannot be reached.
    """
    try:
        from dispatchkit.transports.redis import RedisTransport, redacted_url
    except ImportError:  # TransportUnavailable too: the extra is missing
        raise ValueError(
            "--redis needs the redis extra: pip install 'dispatchkit[redis]'"
        ) from None
    transport = RedisTransport(url, queue="", socket_timeout=5)
    try:
        transport.ping()
    except TransportError as exc:
        reason = exc.__cause__ if exc.__cause__ is not None else exc
        raise OSError(f"cannot reach Redis at {redacted_url(url)}: {reason}") from None
    finally:
        transport.close()


def check_sink(directory: Path) -> None:
    """Create the sink's directory if need be, and fail early, with a clear error, when
    segments cannot be written there (each worker process would die opening its first).

    Raises:
        ValueError: the directory cannot be created, is not a directory, or refuses a
            file.
    """
    try:
        check_writable(directory)
    except OSError as exc:
        reason = describe_os_error(exc)
        raise ValueError(f"--sink {directory}: cannot write segments there: {reason}") from None


def probe(host: str, port: int) -> int:
    """Bind ``host:port`` once, to fail early with a clear error; the port bound.

    Raises:
        OSError: the address cannot be bound (named in the message).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise OSError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        bound: int = sock.getsockname()[1]
        return bound
