"""Tables and verdict lines for the terminal, drawn with rich."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Final

from .demo import SeedResult

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["print_seed_results", "table_console"]

#: Columns of a table written to a file or a pipe, where no terminal says how
#: wide it may be (rich would take 80 and cut the cells).
PIPED_WIDTH: Final = 160


def table_console() -> Console:
    """A console for tables on stdout: as wide as the terminal, or PIPED_WIDTH when piped."""
    from rich.console import Console

    console = Console()
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(width=PIPED_WIDTH)
    return console


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 0.01:
        return f"{value * 1000:.1f} ms"
    return f"{value:.3f} s"


def _chunk(chunk: int | str) -> str:
    return f"{chunk:,}" if isinstance(chunk, int) else chunk


def print_seed_results(
    results: list[SeedResult], verdict: tuple[SeedResult, float | None, float | None]
) -> None:
    """Print the seed runs as a table, then one line naming the fastest."""
    from rich.table import Table

    console = table_console()
    first = results[0]
    table = Table(
        title=f"{first.jobs:,} jobs on {first.workers} workers",
        title_justify="left",
    )
    for name in ("strategy", "chunk", "jobs", "completed", "failed", "seconds", "jobs/s"):
        table.add_column(name, justify="left" if name == "strategy" else "right")
    table.add_column("first-start spread", justify="right")
    best = verdict[0]
    for r in results:
        style = "bold green" if r is best else None
        table.add_row(
            r.strategy,
            _chunk(r.chunk),
            f"{r.jobs:,}",
            f"{r.completed:,}",
            f"{r.failed:,}",
            f"{r.seconds:.3f}",
            f"{r.jobs_per_second:,.0f}",
            _seconds(r.first_start_spread),
            style=style,
        )
    console.print(table)
    best, runner_up, slowest = verdict
    line = (
        f"Fastest here: [bold]{best.strategy}[/bold], chunk {_chunk(best.chunk)}, "
        f"{_seconds(best.seconds)}"
    )
    if runner_up is not None and slowest is not None:
        line += (
            f": {runner_up:.2f}x faster than the next best, {slowest:.2f}x faster than the slowest."
        )
    console.print(line)
