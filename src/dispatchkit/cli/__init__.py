"""The ``dispatchkit`` command. It parses arguments and calls public functions; no logic.

One module per command (run, worker, bench, serve), each adding its parser and
running it; what they share (the usage error, argument types, common flags) is
in :mod:`.common`. A command imports what it runs only when it runs, so that
``dispatchkit --help`` stays quick. The exit codes are listed in :mod:`.constants`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Callable, Sequence
from types import FrameType

from dispatchkit import __version__
from dispatchkit.demo import Interrupted

from . import bench, constants, run, serve, worker
from .common import Parser, UsageError
from .constants import *  # noqa: F403 - each of its names is the package's too
from .constants import RET_INTERRUPTED, RET_USAGE

__all__ = ["UsageError", "main"]
__all__ += constants.__all__  # the exit codes, and the choices and bounds --help shows


def _build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="dispatchkit",
        description="Dispatch jobs to a pool of workers with the strategy you choose, "
        "and measure which strategy is faster.",
    )
    parser.add_argument("--version", action="version", version=f"dispatchkit {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    commands.required = True
    for module in (run, worker, bench, serve):  # the order --help lists them in
        module.add_parser(commands)
    return parser


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    # SIGTERM does what Ctrl-C does: Python's handler raises KeyboardInterrupt;
    # under asyncio.run, asyncio's handler cancels the main task instead, since
    # a KeyboardInterrupt raised inside an asyncio job only fails that job.
    on_sigint = signal.getsignal(signal.SIGINT)
    if callable(on_sigint):
        on_sigint(signal.SIGINT, frame)
        return
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # no event loop here
        raise KeyboardInterrupt from None
    # SIGINT is ignored, so asyncio.run installed no handler of its own: cancel
    # its tasks, as it does itself when it ends.
    for task in asyncio.all_tasks(loop):
        task.cancel()


def _look_in_current_directory() -> None:
    """Find modules named on the command line in the current directory too.

    As with ``python -m dispatchkit``, for --handler, --import and a bench
    function. Appended, not put first: a ``redis.py`` lying there must not shadow the
    packages dispatchkit itself imports.
    """
    with contextlib.suppress(OSError):  # the current directory was deleted
        here = os.getcwd()
        if here not in sys.path and "" not in sys.path:
            sys.path.append(here)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    _look_in_current_directory()
    # SIGTERM stops a run the way Ctrl-C does: queued jobs cancelled, counts reported.
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        handler: Callable[[argparse.Namespace], int] = args.handler
        return handler(args)
    except UsageError as exc:
        print(f"dispatchkit {args.command}: error: {exc}", file=sys.stderr)
        return RET_USAGE
    except Interrupted as exc:
        print(f"dispatchkit {args.command}: {exc}", file=sys.stderr)
        return RET_INTERRUPTED
    except KeyboardInterrupt:
        print(f"dispatchkit {args.command}: interrupted", file=sys.stderr)
        return RET_INTERRUPTED
    finally:
        signal.signal(signal.SIGTERM, previous)
