"""The results as JSON, as a terminal table, and as a Markdown report."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .runner import BenchResults, ConfigResult
from .verdict import MIN_MARGIN, best_per_strategy, defaults_lines, recommend, verdicts

__all__ = ["print_table", "to_json", "write_report", "write_results"]

#: (column title, RunMetrics field, format of the median)
_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("makespan", "makespan", "s"),
    ("jobs/s", "throughput", "n"),
    ("p50", "latency_p50", "s"),
    ("p95", "latency_p95", "s"),
    ("p99", "latency_p99", "s"),
    ("last 1st job", "max_idle_before_first", "s"),
    ("util", "utilisation", "%"),
    ("imbalance", "imbalance", "x"),
    ("CPU", "cpu_seconds", "s"),
    ("vol csw", "voluntary_switches", "n"),
    ("invol csw", "involuntary_switches", "n"),
)


def _fmt(value: float, kind: str) -> str:
    if kind == "%":
        return f"{value:.0%}"
    if kind == "x":
        return f"{value:.2f}x"
    if kind == "n":
        return f"{value:,.0f}"
    if value < 0.001:
        return f"{value * 1e6:.0f} µs"
    if value < 1:
        return f"{value * 1000:.1f} ms"
    return f"{value:.2f} s"


def _row(result: ConfigResult) -> list[str]:
    return [_fmt(result.median(field), kind) for _, field, kind in _COLUMNS]


def to_json(results: BenchResults) -> dict[str, Any]:
    """Everything measured: the machine, the options, every raw repeat, the verdicts."""
    configs = []
    for result in results.results:
        configs.append(
            {
                "config": result.config.to_dict(),
                "median": {field: result.median(field) for _, field, _ in _COLUMNS},
                "repeats": [
                    {**asdict(m), "max_idle_before_first": m.max_idle_before_first}
                    for m in result.metrics
                ],
            }
        )
    return {
        "command": results.command,
        "started": results.started,
        "seconds": results.seconds,
        "machine": results.machine,
        "options": asdict(results.options),
        "repeat": results.plan.repeat,
        "workloads": {
            name: {"jobs": w.jobs, "description": w.description, "builtin": w.builtin}
            for name, w in results.plan.workloads.items()
        },
        "notes": results.plan.notes,
        "configs": configs,
        "verdicts": [v.line() for v in verdicts(results)],
        "defaults": defaults_lines(results),
        "best_per_strategy": {
            name: {s: r.config.label for s, r in best_per_strategy(group).items()}
            for name, group in results.by_workload().items()
        },
        "recommendations": _recommendations(results),
    }


def _recommendations(results: BenchResults) -> list[str]:
    lines = []
    for name, workload in results.plan.workloads.items():
        if not workload.builtin and any(
            not r.config.is_peer for r in results.by_workload().get(name, [])
        ):
            lines.append(recommend(results, name))
    return lines


def write_results(results: BenchResults, out: Path) -> Path:
    """Write ``results.json`` into ``out`` (created if needed); return its path.

    Raises:
        OSError: the directory or file cannot be written.
    """
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.json"
    path.write_text(json.dumps(to_json(results), indent=2) + "\n", encoding="utf-8")
    return path


def _ms(value: float) -> str:
    return f"{value * 1000:,.1f}" if value < 10 else f"{value * 1000:,.0f}"


def _terminal_row(r: ConfigResult) -> list[str]:
    # Compact: every time in ms, latencies in one cell, so it fits 120 columns.
    return [
        _ms(r.median("makespan")),
        f"{r.median('throughput'):,.0f}",
        "/".join(_ms(r.median(f"latency_p{q}")) for q in (50, 95, 99)),
        _ms(r.median("max_idle_before_first")),
        f"{r.median('utilisation'):.0%}",
        f"{r.median('imbalance'):.2f}",
        _ms(r.median("cpu_seconds")),
        f"{r.median('voluntary_switches'):,.0f}/{r.median('involuntary_switches'):,.0f}",
    ]


def print_table(results: BenchResults) -> None:
    """One table per workload (medians), then the verdicts and recommendations."""
    from rich import box
    from rich.table import Table

    from dispatchkit._render import table_console

    console = table_console()
    winners = {v.workload: v.best for v in verdicts(results)}
    for name, group in results.by_workload().items():
        workload = results.plan.workloads[name]
        table = Table(
            title=f"{name}: {workload.jobs:,} jobs, {workload.description} "
            f"(medians of {results.plan.repeat}; times in ms)",
            title_justify="left",
            box=box.SIMPLE_HEAD,
        )
        table.add_column("configuration", no_wrap=True)
        for title in _TERMINAL_COLUMNS:
            table.add_column(title, justify="right")
        for result in sorted(group, key=lambda r: r.median("throughput"), reverse=True):
            style = "bold green" if result is winners[name] else None
            table.add_row(result.config.label, *_terminal_row(result), style=style)
        console.print(table)
    for note in results.plan.notes:
        console.print(f"[dim]Note: {note}[/dim]")
    for verdict in verdicts(results):
        console.print(verdict.line())
    for line in defaults_lines(results):
        console.print(line)
    for line in _recommendations(results):
        console.print(f"[bold]{line}[/bold]")


_TERMINAL_COLUMNS = (
    "makespan",
    "jobs/s",
    "p50/p95/p99",
    "last 1st job",
    "util",
    "imbal.",
    "CPU",
    "csw vol/invol",
)


def write_report(results: BenchResults, out: Path, charts: list[Path]) -> Path:
    """Write ``report.md`` beside the charts in ``out``; return its path.

    The report links the charts by file name, so the directory (report,
    charts, results.json) moves as one piece.

    Raises:
        OSError: the file cannot be written.
    """
    m = results.machine
    lines = [
        "# dispatchkit bench: which is faster?",
        "",
        f"Measured {results.started} in {results.seconds:.0f} s with:",
        "",
        "```console",
        f"$ {results.command or 'dispatchkit bench'}",
        "```",
        "",
        f"Machine: {m.get('cpu_count')} CPUs ({m.get('usable_cpus')} usable), "
        f"{m.get('implementation')} {m.get('python')}, {m.get('platform')}; "
        f"dispatchkit {m.get('dispatchkit')}; load average {_load(m)} when it started. "
        "Every figure is the median of "
        f"{results.plan.repeat} repeats; `results.json` holds every repeat.",
        "",
        "## Verdicts",
        "",
        *[f"- {v.line()}" for v in verdicts(results)],
        *[f"- {line}" for line in defaults_lines(results)],
        *[f"- **{line}**" for line in _recommendations(results)],
        *[f"- Note: {note}" for note in results.plan.notes],
        "",
        "A winner is *clear* when its slowest repeat beat the runner-up's fastest one "
        f"and its median leads by at least {MIN_MARGIN:.0%}.",
        "",
    ]
    lines += _strategy_table(results)
    for chart in charts:
        lines += [f"![{chart.stem}]({chart.name})", ""]
    lines += ["## Measurements", "", _GLOSSARY, ""]
    for name, group in results.by_workload().items():
        workload = results.plan.workloads[name]
        lines += [f"### {name}: {workload.jobs:,} jobs, {workload.description}", ""]
        lines.append("| configuration | " + " | ".join(t for t, _, _ in _COLUMNS) + " |")
        lines.append("|---|" + "---:|" * len(_COLUMNS))
        for result in sorted(group, key=lambda r: r.median("throughput"), reverse=True):
            lines.append(f"| {result.config.label} | " + " | ".join(_row(result)) + " |")
        lines.append("")
    out.mkdir(parents=True, exist_ok=True)
    path = out / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def _load(machine: dict[str, object]) -> str:
    load = machine.get("load_average_1_5_15_min")
    if not isinstance(load, list) or not load:
        return "unknown"
    return f"{load[0]:.1f} (a load above the CPU count means every figure is pessimistic)"


def _strategy_table(results: BenchResults) -> list[str]:
    """Batch or round-robin? Each strategy at its best, per workload."""
    groups = results.by_workload()
    bests = {name: best_per_strategy(group) for name, group in groups.items()}
    columns = list(dict.fromkeys(s for best in bests.values() for s in best))
    lines = [
        "## Batch or round-robin? Each strategy at its best",
        "",
        "Jobs per second of each strategy's fastest configuration (its best chunk, worker "
        "kind and count), and its share of the workload's best; `stdlib` is the fastest "
        "standard-library pool.",
        "",
        "| workload | " + " | ".join(columns) + " |",
        "|---|" + "---:|" * len(columns),
    ]
    for name, best in bests.items():
        top = max(r.median("throughput") for r in best.values())
        cells = []
        for column in columns:
            result = best.get(column)
            if result is None:
                cells.append("-")
                continue
            rate = result.median("throughput")
            cells.append(f"{rate:,.0f} ({rate / top:.0%})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return [*lines, ""]


_GLOSSARY = """\
Configurations read `strategy cCHUNK kind xWORKERS` (`pull c32 thread x8`: the pull
strategy, 32 jobs per hand-off, 8 thread workers); the standard library's pools read
`name xWORKERS`. *makespan*: from handing over the first job until every result is back;
*p50/p95/p99*: latency from submission to finish; *last 1st job*: how long the last
worker waited before its first job started (the seed's "receivers are idle until ...");
*util*: busy time over workers * makespan; *imbalance*: the busiest worker's busy time
over the mean; *CPU*: user + system time of the process and its worker processes;
*vol/invol csw*: voluntary and involuntary context switches (`getrusage`)."""
