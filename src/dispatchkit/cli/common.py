"""What every command of ``dispatchkit`` shares: the usage error, argument types, common flags.

The exit codes, and the other constants a caller may need, are in :mod:`.constants`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Final, NoReturn, TypeAlias

from dispatchkit._durations import MAX_SECONDS, parse_seconds
from dispatchkit._environ import ENV_PREFIX, env_value
from dispatchkit._limits import (
    DEFAULT_DRAIN_TIMEOUT,
    MAX_DRAIN_TIMEOUT,
    MAX_QUEUE_SIZE,
    MAX_WORKERS,
)
from dispatchkit.errors import DispatchError

from .commands import COMMANDS
from .constants import RET_DRAIN_DEADLINE, RET_USAGE

__all__ = [
    "Parser",
    "UsageError",
    "add_command",
    "add_drain_timeout",
    "add_list",
    "add_output_flags",
    "add_pool",
    "add_seconds",
    "chunks",
    "drain_timeout",
    "int_in",
    "int_list",
    "names",
    "non_negative_seconds",
    "one_strategy",
    "positive_seconds",
    "show_progress",
    "strategies",
]


class UsageError(DispatchError):
    """Bad input from the user: reported on one line, exit code 2."""


class Parser(argparse.ArgumentParser):
    """A parser whose errors are one line and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self._usage_error(self.prog, message)

    def _usage_error(self, prog: str, message: str) -> NoReturn:
        # One line, no usage dump: the message says what is wrong and --help how to fix it.
        self.exit(RET_USAGE, f"{prog}: error: {message} (see --help)\n")

    def parse_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> argparse.Namespace:
        """As argparse's, but flags a command does not know are named after that
        command (``dispatchkit run: error: ...``), whose --help lists the right ones."""
        parsed, extra = self.parse_known_args(args, namespace)
        if extra:
            command = getattr(parsed, "command", None)
            prog = f"{self.prog} {command}" if command else self.prog
            self._usage_error(prog, f"unrecognized arguments: {' '.join(extra)}")
        return parsed


if TYPE_CHECKING:
    #: The subcommands of the ``dispatchkit`` parser, where each command adds its own.
    Commands: TypeAlias = argparse._SubParsersAction[Parser]


# -- argument types ---------------------------------------------------------
# argparse puts "argument --flag: " before their messages: they do not name the flag.


def int_in(low: int, high: int) -> Callable[[str], int]:
    """An argparse type for a whole number from ``low`` to ``high``; ``_`` may group digits."""

    def parse(text: str) -> int:
        try:
            value = int(text.replace("_", ""))
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low:,} and {high:,}, got {value:,}")
        return value

    return parse


def _seconds(*, zero_ok: bool = False, maximum: float = MAX_SECONDS) -> Callable[[str], float]:
    """An argparse type for a duration: finite seconds, > 0 (>= 0 if ``zero_ok``), <= ``maximum``.

    Its error reads "argument --heartbeat: must be a finite number of seconds > 0, not 'nan'".
    """

    def parse(text: str) -> float:
        try:
            return parse_seconds(text, zero_ok=zero_ok, maximum=maximum)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return parse


#: The argparse type of every duration flag where 0 makes no sense (an interval, a timeout).
positive_seconds: Final = _seconds()
#: The argparse type of a duration flag where 0 means "do not wait".
non_negative_seconds: Final = _seconds(zero_ok=True)


def names(choices: Sequence[str] | None = None) -> Callable[[str], list[str]]:
    """An argparse type for a comma list of names, each one of ``choices`` if given."""

    def parse(text: str) -> list[str]:
        values = [part for part in text.replace(" ", "").split(",") if part]
        if not values:
            raise argparse.ArgumentTypeError("needs at least one value")
        for value in values:
            if choices is not None and value not in choices:
                raise argparse.ArgumentTypeError(
                    f"unknown value {value!r} (expected {', '.join(choices)})"
                )
        return values

    return parse


def int_list(low: int, high: int) -> Callable[[str], list[int]]:
    """An argparse type for a comma list of whole numbers from ``low`` to ``high``."""
    parse_one = int_in(low, high)

    def parse(text: str) -> list[int]:
        return [parse_one(part) for part in names()(text)]

    return parse


def strategies(text: str) -> list[str]:
    """An argparse type for a comma list of strategies, by their canonical names."""
    # Imported here: only run and bench take strategies, and the worker should not load them.
    from dispatchkit.strategies import parse_strategy

    found = [part for part in text.replace(" ", "").split(",") if part]
    if not found:
        raise argparse.ArgumentTypeError("needs at least one strategy")
    try:
        return [parse_strategy(name).name for name in found]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def one_strategy(text: str) -> str:
    """An argparse type for one strategy, by its canonical name."""
    found = strategies(text)
    if len(found) != 1:
        raise argparse.ArgumentTypeError(f"takes only one strategy, got {len(found)}")
    return found[0]


def chunks(text: str) -> list[int | str]:
    """A comma list of chunks: whole numbers, ``auto`` (the library's adaptive
    chunk) or ``even`` (a fixed share of the job count), in any case."""
    values: list[int | str] = []
    parse = int_in(1, MAX_QUEUE_SIZE)
    for part in text.replace(" ", "").lower().split(","):
        if not part:
            continue
        if part in ("auto", "even"):
            values.append(part)
        elif part.replace("_", "").lstrip("+-").isdigit():
            values.append(parse(part))
        else:
            raise argparse.ArgumentTypeError(
                f"must be a whole number from 1 to {MAX_QUEUE_SIZE:,}, 'auto' or 'even', "
                f"got {part!r}"
            )
    if not values:
        raise argparse.ArgumentTypeError("needs at least one value")
    return values


# -- commands and the flags more than one command takes -----------------------


def add_command(
    commands: Commands,
    name: str,
    handler: Callable[[argparse.Namespace], int],
    *,
    description: str,
    raw: bool = True,
) -> argparse.ArgumentParser:
    """Add the parser of a command that ``handler`` runs; its line in --help is in COMMANDS.

    Args:
        description: its ``--help`` text: shown as written (``raw``), or rewrapped.
    """
    parser = commands.add_parser(
        name,
        help=COMMANDS[name],
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter if raw else argparse.HelpFormatter,
    )
    parser.set_defaults(handler=handler)
    return parser


def add_seconds(
    parser: argparse.ArgumentParser,
    flag: str,
    default: float | None,
    help_text: str,
    *,
    zero_ok: bool = False,
    metavar: str | None = "SECONDS",
) -> None:
    """Add a duration flag: finite seconds, > 0 (>= 0 if ``zero_ok``)."""
    parse = non_negative_seconds if zero_ok else positive_seconds
    parser.add_argument(flag, type=parse, default=default, metavar=metavar, help=help_text)


def add_pool(
    parser: argparse.ArgumentParser,
    *,
    workers: tuple[int | None, str],
    queue_size: tuple[int | None, str],
    executor: tuple[Sequence[str], str | None, str],
) -> None:
    """Add --workers, --queue-size and --executor: the pool a command runs its jobs on.

    Args:
        workers: the default and the help of --workers.
        queue_size: the default and the help of --queue-size.
        executor: the choices, the default and the help of --executor.
    """
    add = parser.add_argument
    add("--workers", type=int_in(1, MAX_WORKERS), default=workers[0], help=workers[1])
    add("--queue-size", type=int_in(1, MAX_QUEUE_SIZE), default=queue_size[0], help=queue_size[1])
    add("--executor", choices=executor[0], default=executor[1], help=executor[2])


def add_list(
    parser: argparse.ArgumentParser,
    flag: str,
    parse: Callable[[str], Sequence[object]],
    help_text: str,
    default: Sequence[object] | None = None,
) -> None:
    """Add a flag that takes a comma-separated list."""
    parser.add_argument(flag, type=parse, default=default, metavar="LIST", help=help_text)


def add_output_flags(parser: argparse.ArgumentParser, json_help: str) -> None:
    """Add --json and --no-progress, for the commands that report results."""
    parser.add_argument("--json", action="store_true", help=json_help)
    parser.add_argument("--no-progress", action="store_true", help="do not show a progress bar")


def show_progress(args: argparse.Namespace) -> bool:
    """Whether to draw a progress bar: on a terminal, unless --json or --no-progress."""
    return not args.json and not args.no_progress and sys.stderr.isatty()


def add_drain_timeout(parser: argparse.ArgumentParser, what: str) -> None:
    """Add --drain-timeout: how long SIGTERM or SIGINT waits for ``what``."""
    parser.add_argument(
        "--drain-timeout",
        type=_seconds(zero_ok=True, maximum=MAX_DRAIN_TIMEOUT),
        default=None,
        metavar="SECONDS",
        help=f"seconds SIGTERM or SIGINT waits for {what}, then gives up on them and "
        f"exits {RET_DRAIN_DEADLINE} (default {ENV_PREFIX}DRAIN_TIMEOUT or "
        f"{DEFAULT_DRAIN_TIMEOUT:g})",
    )


def drain_timeout(args: argparse.Namespace) -> float:
    """--drain-timeout, else its environment variable, else the default.

    Raises:
        UsageError: the environment variable is not a valid number of seconds.
    """
    if args.drain_timeout is not None:
        value: float = args.drain_timeout
        return value
    variable = ENV_PREFIX + "DRAIN_TIMEOUT"
    try:
        text = env_value(variable, "a number of seconds")
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if text is None:
        return DEFAULT_DRAIN_TIMEOUT
    try:
        return parse_seconds(text, zero_ok=True, maximum=MAX_DRAIN_TIMEOUT)
    except ValueError as exc:
        raise UsageError(f"{variable} {exc}") from None
