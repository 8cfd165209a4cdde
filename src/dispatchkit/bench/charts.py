"""PNG charts of a bench, drawn with matplotlib (the ``bench`` extra) on the Agg backend.

* ``throughput.png``: jobs per second of every configuration, per workload;
* ``latency.png``: the distribution of submit-to-finish latency, per workload;
* ``timeline.png``: which worker ran which job when, one panel per strategy,
  for one run of one workload: idle workers show as empty rows.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from .errors import BenchUsageError
from .runner import BenchResults, ConfigResult

if TYPE_CHECKING:
    from .metrics import RunRecord

__all__ = ["TIMELINE_WORKLOADS", "charts_available", "draw_charts", "require_charts"]

#: Workloads whose timeline shows most, in order of preference.
TIMELINE_WORKLOADS: Final = ("skewed", "io", "mixed", "cpu")

_STRATEGY_COLOURS: Final = {
    "auto": "#ff7f0e",
    "round_robin": "#1f77b4",
    "batch": "#d62728",
    "pull": "#2ca02c",
    "key": "#9467bd",
}
_PEER_COLOUR: Final = "#7f7f7f"
_IDLE_COLOUR: Final = "#f4c7c3"


def charts_available() -> bool:
    """Whether matplotlib is installed."""
    return importlib.util.find_spec("matplotlib") is not None


def require_charts() -> None:
    """Raises:
    BenchUsageError: matplotlib is missing (with what to install).
    """
    if not charts_available():
        raise BenchUsageError(
            "charts need matplotlib: install dispatchkit[bench] (pip install 'dispatchkit[bench]')"
        )


def _pyplot() -> Any:
    require_charts()
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    return plt


def _colour(result: ConfigResult) -> str:
    strategy = result.config.strategy
    return _PEER_COLOUR if strategy is None else _STRATEGY_COLOURS.get(strategy, "#333333")


def _ranked(group: list[ConfigResult]) -> list[ConfigResult]:
    # Fastest at the top of a horizontal chart.
    return sorted(group, key=lambda r: r.median("throughput"))


def draw_charts(results: BenchResults, out: Path) -> list[Path]:
    """Draw every chart into ``out``; return the files written.

    Raises:
        BenchUsageError: matplotlib is not installed.
        OSError: a file cannot be written.
    """
    plt = _pyplot()
    out.mkdir(parents=True, exist_ok=True)
    paths = [_throughput(plt, results, out / "throughput.png")]
    paths.append(_latency(plt, results, out / "latency.png"))
    timeline = _timeline(plt, results, out / "timeline.png")
    if timeline is not None:
        paths.append(timeline)
    return paths


#: One panel of a chart: its axes, the workload's name and the workload's results.
_Panel = tuple[Any, str, list[ConfigResult]]


def _workload_panels(plt: Any, results: BenchResults) -> tuple[Any, list[_Panel]]:
    """A figure of one panel per workload, each as tall as its bars need.

    Returns the figure and, for each panel, its axes, the workload's name and
    its results ranked (the fastest last: at the top of a horizontal chart).
    """
    groups = results.by_workload()
    heights = [max(1.6, 0.32 * len(g) + 0.8) for g in groups.values()]
    fig, axes = plt.subplots(
        len(groups),
        1,
        figsize=(10, sum(heights) + 1),
        squeeze=False,
        gridspec_kw={"height_ratios": heights},
    )
    panels = zip(axes[:, 0], groups.items(), strict=True)
    return fig, [(ax, name, _ranked(group)) for ax, (name, group) in panels]


def _save_panels(plt: Any, fig: Any, title: str, path: Path) -> Path:
    """Add the legend and ``title`` to a figure of :func:`_workload_panels`, and write it."""
    _legend(fig)
    fig.suptitle(title, fontsize=12, x=0.01, ha="left")
    # Keep a fixed strip of about half an inch on top for the title and the legend.
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.5 / fig.get_figheight()))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _throughput(plt: Any, results: BenchResults, path: Path) -> Path:
    fig, panels = _workload_panels(plt, results)
    for ax, name, ranked in panels:
        medians = [r.median("throughput") for r in ranked]
        low = [
            m - min(x.throughput for x in r.metrics) for m, r in zip(medians, ranked, strict=True)
        ]
        high = [
            max(x.throughput for x in r.metrics) - m for m, r in zip(medians, ranked, strict=True)
        ]
        y = range(len(ranked))
        ax.barh(y, medians, xerr=[low, high], color=[_colour(r) for r in ranked], capsize=3)
        ax.set_yticks(list(y), [r.config.label for r in ranked], fontsize=8)
        # Label each bar past its whisker, so number and whisker never overlap.
        tops = [max(x.throughput for x in r.metrics) for r in ranked]
        for i, (value, top) in enumerate(zip(medians, tops, strict=True)):
            ax.text(top, i, f"  {value:,.0f}", va="center", fontsize=8)
        ax.set_xlim(0, max(tops) * 1.18)
        workload = results.plan.workloads[name]
        ax.set_title(
            f"{name}: {workload.jobs:,} jobs, {workload.description}", fontsize=10, loc="left"
        )
        ax.set_xlabel("jobs per second (median; whiskers: fastest and slowest repeat)", fontsize=8)
        ax.grid(axis="x", alpha=0.3)
    return _save_panels(plt, fig, "Throughput per configuration: longer is faster", path)


def _legend(fig: Any) -> None:
    from matplotlib.patches import Patch

    handles = [Patch(color=c, label=s) for s, c in _STRATEGY_COLOURS.items()]
    handles.append(Patch(color=_PEER_COLOUR, label="standard library"))
    fig.legend(
        handles=handles, loc="upper right", bbox_to_anchor=(1, 1), fontsize=8, ncol=len(handles)
    )


def _latency(plt: Any, results: BenchResults, path: Path) -> Path:
    from matplotlib.ticker import FuncFormatter

    fig, panels = _workload_panels(plt, results)
    for ax, name, ranked in panels:
        data = [[job.latency * 1000 for job in r.median_run().jobs] for r in ranked]
        boxes = ax.boxplot(
            data,
            orientation="horizontal",
            whis=(1, 99),
            showfliers=False,
            patch_artist=True,
            widths=0.6,
        )
        for box, result in zip(boxes["boxes"], ranked, strict=True):
            box.set_facecolor(_colour(result))
            box.set_alpha(0.6)
        ax.set_yticks(range(1, len(ranked) + 1), [r.config.label for r in ranked], fontsize=8)
        ax.set_xscale("log")
        # Plain numbers (2, 5, 10, 20 ms) rather than powers of ten.
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
        ax.xaxis.set_minor_formatter(FuncFormatter(_minor_label))
        ax.set_title(f"{name}", fontsize=10, loc="left")
        ax.set_xlabel(
            "ms from submission to finish (box: p25-p75, whiskers: p1-p99; log scale)", fontsize=8
        )
        ax.grid(axis="x", alpha=0.3, which="both")
    return _save_panels(plt, fig, "Latency (median run): further left is better", path)


def _minor_label(value: float, _pos: int) -> str:
    mantissa = round(value / 10 ** math.floor(math.log10(value)))
    return f"{value:g}" if mantissa in (2, 5) else ""


def _timeline_runs(results: BenchResults) -> tuple[str, list[tuple[ConfigResult, RunRecord]]]:
    groups = results.by_workload()
    names: list[str] = [n for n in TIMELINE_WORKLOADS if n in groups] or list(groups)
    name = names[0]
    ours = [r for r in groups[name] if not r.config.is_peer]
    if not ours:
        return name, []
    # The strategies asked for, side by side; the defaults' row (a baseline) only alone.
    swept = [r for r in ours if not r.config.is_defaults]
    first = (swept or ours)[0].config
    panels = [
        r
        for r in ours
        if (r.config.executor, r.config.workers, r.config.chunk)
        == (first.executor, first.workers, first.chunk)
    ]
    return name, [(r, r.median_run()) for r in panels]


def _timeline(plt: Any, results: BenchResults, path: Path) -> Path | None:
    name, panels = _timeline_runs(results)
    if not panels:
        return None
    workers = max(run.workers for _, run in panels)
    end = max(run.makespan for _, run in panels)
    jobs = max(max(j.index for j in run.jobs) for _, run in panels) + 1
    cmap = plt.get_cmap("turbo")
    fig, axes = plt.subplots(
        len(panels),
        1,
        figsize=(11, len(panels) * (0.28 * workers + 1.2) + 1),
        squeeze=False,
        sharex=True,
        layout="constrained",
    )
    for ax, (result, run) in zip(axes[:, 0], panels, strict=True):
        first_start = [end] * run.workers
        busy = [0.0] * run.workers
        for job in run.jobs:
            colour = cmap(job.index / max(1, jobs - 1)) if job.index >= 0 else "#555555"
            ax.broken_barh(
                [(job.started * 1000, (job.finished - job.started) * 1000)],
                (job.worker - 0.4, 0.8),
                facecolors=colour,
                edgecolor="none",
            )
            first_start[job.worker] = min(first_start[job.worker], job.started)
            busy[job.worker] += job.finished - job.started
        for w in range(run.workers):
            # Before its first job a worker waited: shade it so idleness is seen, not inferred.
            ax.broken_barh([(0, first_start[w] * 1000)], (w - 0.4, 0.8), facecolors=_IDLE_COLOUR)
            ax.text(
                end * 1000 * 1.005, w, f"busy {busy[w] / run.makespan:.0%}", va="center", fontsize=7
            )
        ax.axvline(run.makespan * 1000, color="black", linewidth=1)
        ax.set_yticks(range(run.workers), [f"worker {w}" for w in range(run.workers)], fontsize=7)
        ax.set_ylim(run.workers - 0.5, -0.5)
        c = result.config
        ax.set_title(
            f"{c.strategy}, chunk {c.chunk}, {c.executor} workers: "
            f"done in {run.makespan * 1000:,.0f} ms",
            fontsize=10,
            loc="left",
        )
    axes[-1, 0].set_xlim(0, end * 1000 * 1.09)
    axes[-1, 0].set_xlabel("ms since the first job was handed over (black line: run done)")
    sm = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(0, jobs - 1))
    fig.colorbar(
        sm, ax=axes[:, 0].tolist(), label="job index (input order)", fraction=0.03, pad=0.06
    )
    fig.suptitle(
        f"Who ran which job when: {name}, {workers} workers "
        "(pink: waiting for a first job; white: idle)",
        fontsize=11,
    )
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
