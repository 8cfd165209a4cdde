"""``dispatchkit serve``: the HTTP ingest service, until a signal drains it."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Final

from dispatchkit._limits import MAX_PROCESSES
from dispatchkit.executors.registry import kind_names
from dispatchkit.settings import ENV_PREFIX, env_value

from .common import (
    UsageError,
    add_command,
    add_drain_timeout,
    add_pool,
    add_seconds,
    drain_timeout,
    int_in,
    one_strategy,
)
from .constants import RET_DRAIN_DEADLINE, RET_FAILED, RET_OK, RET_UNSTORED

if TYPE_CHECKING:
    from .common import Commands

__all__ = ["add_parser", "command"]

_HELP: Final = f"""\
Serve the HTTP ingest service of the Go article on a dispatcher.

POST /v1/payloads takes {{"version", "token", "request_id", "payloads": [object, ...]}}
and answers 202 with the number of payloads accepted: written to NDJSON segment
files in --sink and fsynced before the answer (--ack buffered: written before
it, fsynced within --fsync-interval), or each queued as a job that calls
--handler. A full queue or a sink that cannot write answers 503 with
Retry-After; all payloads of a request are accepted together or not at all.
GET /healthz (503 with the reason when no work can be taken) and GET /metrics
(Prometheus; open unless --metrics-token) too. --processes (default: one per
CPU) server processes share the port; /metrics sums them.
SIGTERM or SIGINT stops intake, drains the queue, fsyncs the sink and exits 0;
requests still open after --drain-timeout have their connections closed, the
queue is drained all the same, and it exits {RET_DRAIN_DEADLINE}. It exits
{RET_UNSTORED} if payloads answered 202 could not be stored (an fsync failed).
The bearer tokens may come from {ENV_PREFIX}TOKEN and {ENV_PREFIX}METRICS_TOKEN.
"""


#: The flags whose value is the ``ServeConfig`` field of the same name, as given.
_AS_GIVEN: Final = (
    *("host", "port", "interface", "access_log"),
    *("workers", "executor", "queue_size", "strategy"),
    *("max_depth", "max_body", "segment_bytes", "fsync_interval", "ack", "processes"),
    *("redis", "queue", "namespace", "job"),
)


def add_parser(commands: Commands) -> None:
    """Add ``serve`` and its flags."""
    serve = add_command(commands, "serve", command, description=_HELP)
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int_in(0, 65535), default=8080, help="port (default 8080)")
    add_pool(
        serve,
        workers=(2, "workers (default 2)"),
        queue_size=(4096, "payload jobs an inbox holds before requests get 503 (default 4096)"),
        executor=(
            ("auto", *kind_names(in_process=True)),
            "auto",
            "workers: async (tasks on the server's loop), thread (for a blocking handler), "
            "or auto: async for the sink and coroutine handlers, thread for plain handlers "
            "(default auto)",
        ),
    )
    serve.add_argument(
        "--strategy",
        type=one_strategy,
        default="auto",
        help="auto, round_robin, batch, pull or key (default auto: idle workers take the next job)",
    )
    serve.add_argument("--sink", default=None, metavar="DIR", help="directory of NDJSON segments")
    serve.add_argument(
        "--handler",
        dest="job_handler",
        default=None,
        metavar="MODULE:FUNCTION",
        help="call this function with each decoded payload instead of storing it "
        "(modules are found in the current directory too)",
    )
    serve.add_argument(
        "--token", default=None, help=f"bearer token required to post ({ENV_PREFIX}TOKEN)"
    )
    serve.add_argument(
        "--metrics-token",
        default=None,
        help=f"bearer token required on GET /metrics ({ENV_PREFIX}METRICS_TOKEN; "
        "default: /metrics is open)",
    )
    serve.add_argument(
        "--max-depth",
        type=int_in(3, 512),  # the service's MAX_MAX_DEPTH
        default=64,
        metavar="LEVELS",
        help="deepest nesting of arrays and objects in a request body, the body's own "
        "object counting 1; deeper bodies get 400 (default 64, at most 512)",
    )
    _add_size(serve, "--max-body", 1 << 20, 1 << 30, "largest request body")
    _add_size(
        serve, "--segment-bytes", 64 << 20, 1 << 40, "size at which a new segment file starts"
    )
    serve.add_argument(
        "--ack",
        choices=("durable", "buffered"),  # the service's ACK_MODES
        default="durable",
        help="with --sink, when a request is answered 202: durable, once its payloads are "
        "written and fsynced (requests arriving during an fsync share the next one); "
        "buffered, once written (the OS has them: a power loss or an OS crash may lose up "
        "to --fsync-interval of them) (default durable)",
    )
    add_seconds(
        serve,
        "--fsync-interval",
        1.0,
        "seconds between two background flushes of the sink to disk; with --ack durable, "
        "how soon a failed fsync is tried again (default 1)",
    )
    serve.add_argument(
        "--redis",
        default=None,
        metavar="URL",
        help="hand each payload to remote workers (dispatchkit worker) through this Redis "
        "server instead of a sink or handler here; needs dispatchkit[redis]",
    )
    serve.add_argument(
        "--queue", default="ingest", help="with --redis: the workers' --queue (default ingest)"
    )
    serve.add_argument(
        "--namespace",
        default="dispatchkit",
        help="with --redis: the workers' --namespace (default dispatchkit)",
    )
    serve.add_argument(
        "--job",
        default="dispatchkit.payload",
        metavar="NAME",
        help="with --redis: the registered job the workers run with each payload "
        "(default dispatchkit.payload)",
    )
    serve.add_argument("--access-log", action="store_true", help="log every request (slower)")
    serve.add_argument(
        "--interface",
        choices=("rsgi", "asgi"),
        default="rsgi",
        help="how the server calls the app: rsgi, granian's own (faster), or asgi (default rsgi)",
    )
    serve.add_argument(
        "--processes",
        type=_processes,
        default=None,
        metavar="N",
        help="server processes, each with its own workers and its own series of sink "
        "segments, all on one port (SO_REUSEPORT); /metrics sums them; auto: one per CPU "
        "this command may run on (default auto)",
    )
    add_drain_timeout(serve, "open requests")


def _add_size(
    parser: argparse.ArgumentParser, flag: str, default: int, most: int, what: str
) -> None:
    """Add a flag of a size in bytes, from 1 to ``most``; its help gives the default in MiB."""
    parser.add_argument(
        flag,
        type=int_in(1, most),
        default=default,
        metavar="BYTES",
        help=f"{what} (default {default / (1 << 20):g} MiB)",
    )


def command(args: argparse.Namespace) -> int:
    """Serve as ``args`` say, until a signal drained the service; the exit code."""
    try:
        from dispatchkit import service
    except ImportError as exc:
        raise UsageError(str(exc)) from None
    chosen = [
        flag
        for flag, value in (
            ("--sink", args.sink),
            ("--handler", args.job_handler),
            ("--redis", args.redis),
        )
        if value is not None
    ]
    if not chosen:
        raise UsageError("--sink DIR is required (or --handler MODULE:FUNCTION, or --redis URL)")
    if len(chosen) > 1:
        raise UsageError(f"choose one of {', '.join(chosen)}: where payloads go")
    try:
        config = service.ServeConfig(
            sink=None if args.sink is None else Path(args.sink),
            handler=args.job_handler,
            token=args.token if args.token is not None else _token_from_env(),
            metrics_token=args.metrics_token
            if args.metrics_token is not None
            else _token_from_env("METRICS_TOKEN"),
            drain_timeout=drain_timeout(args),
            **{name: getattr(args, name) for name in _AS_GIVEN},
        )
        service.configure_logging()
        clean = service.serve(config)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    except service.UnstoredPayloads as exc:
        print(f"dispatchkit serve: error: {exc}", file=sys.stderr)
        return RET_UNSTORED
    except (OSError, RuntimeError) as exc:
        print(f"dispatchkit serve: error: {exc}", file=sys.stderr)
        return RET_FAILED
    # The worker logged the final line: stopped, or what the deadline cut short.
    return RET_OK if clean else RET_DRAIN_DEADLINE


def _processes(text: str) -> int | None:
    """``--processes``: a whole number from 1 to 1,024, or ``auto`` (None)."""
    return None if text == "auto" else int_in(1, MAX_PROCESSES)(text)


def _token_from_env(name: str = "TOKEN") -> str | None:
    try:
        return env_value(ENV_PREFIX + name, "a bearer token")
    except ValueError as exc:
        raise UsageError(str(exc)) from None
