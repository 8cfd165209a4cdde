"""The ``dispatchkit`` command. It parses arguments and calls public functions; no logic.

One module per command (run, worker, bench, serve), each adding its parser and
running it; what they share (the usage error, argument types, common flags) is
in :mod:`.common`. Only the chosen command's module is imported (the others are
listed in --help from the table in :mod:`.commands`), and a command imports what
it runs only when it runs, so that ``dispatchkit --help`` stays quick and
``dispatchkit worker`` reaches its first job soon. The exit codes are listed in
:mod:`.constants`.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import signal
import sys
from collections.abc import Callable, Sequence
from types import FrameType

from dispatchkit import __version__
from dispatchkit.errors import Interrupted

from . import constants
from .commands import COMMANDS
from .common import Parser, UsageError
from .constants import *  # noqa: F403 - each of its names is the package's too
from .constants import RET_INTERRUPTED, RET_USAGE

__all__ = ["UsageError", "main"]
__all__ += constants.__all__  # the exit codes, and the choices and bounds --help shows


def _chosen(argv: Sequence[str]) -> str | None:
    """The command ``argv`` names: its first word that is not a flag (the top level's
    flags, --help and --version, take no value)."""
    return next((arg for arg in argv if not arg.startswith("-")), None)


def _build_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    """The parser of ``argv``: the command it names in full, the others by name and help."""
    parser = Parser(
        prog="dispatchkit",
        description="Dispatch jobs to a pool of workers with the strategy you choose, "
        "and measure which strategy is faster.",
    )
    parser.add_argument("--version", action="version", version=f"dispatchkit {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    commands.required = True
    chosen = _chosen(argv)
    for name, summary in COMMANDS.items():  # in the order --help lists them
        if name == chosen:
            importlib.import_module(f".{name}", __name__).add_parser(commands)
        else:  # listed, never parsed: the command line names another one
            commands.add_parser(name, help=summary)
    return parser


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    # SIGTERM does what Ctrl-C does: Python's handler raises KeyboardInterrupt;
    # under asyncio.run, asyncio's handler cancels the main task instead, since
    # a KeyboardInterrupt raised inside an asyncio job only fails that job.
    on_sigint = signal.getsignal(signal.SIGINT)
    if callable(on_sigint):
        on_sigint(signal.SIGINT, frame)
        return
    # Looked up, not imported (a command that runs no loop may never load asyncio).
    asyncio = sys.modules.get("asyncio")
    loop = None
    if asyncio is not None:
        with contextlib.suppress(RuntimeError):  # no event loop in this thread
            loop = asyncio.get_running_loop()
    if asyncio is None or loop is None:
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
    if argv is None:
        argv = sys.argv[1:]
    parser = _build_parser(argv)
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
