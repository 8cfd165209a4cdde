"""Which configuration is fastest per workload, and whether the margin is real.

A winner is *clear* when its slowest repeat still beat the runner-up's
fastest repeat (the ranges of the repeats do not overlap) and its median is
at least :data:`MIN_MARGIN` ahead. Otherwise the verdict is "no clear
winner", whatever the medians say.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from .runner import BenchResults, ConfigResult

__all__ = [
    "MIN_MARGIN",
    "Verdict",
    "best_per_strategy",
    "defaults_line",
    "defaults_lines",
    "judge",
    "recommend",
    "verdicts",
]

#: Smallest lead (a fraction of the runner-up's throughput) called a win: below
#: it, two configurations whose repeats happen not to overlap are still a tie.
MIN_MARGIN: Final = 0.05


@dataclass(frozen=True, slots=True)
class Verdict:
    """The fastest configuration of one workload and its margin.

    Attributes:
        workload: the workload's name.
        best: the configuration with the highest median throughput.
        runner_up: the next one (None if only one was measured).
        margin: how much higher the best's median throughput is, as a
            fraction (0.25 is 25% more jobs per second); None without a runner-up.
        clear: whether the repeats do not overlap; None with a single repeat
            or nothing to compare.
        slowest: the configuration with the lowest median throughput (None
            with fewer than three configurations).
    """

    workload: str
    best: ConfigResult
    runner_up: ConfigResult | None
    margin: float | None
    clear: bool | None
    slowest: ConfigResult | None = None

    def _slowest(self) -> str:
        if self.slowest is None:
            return ""
        ratio = self.best.median("throughput") / self.slowest.median("throughput")
        return f" Slowest: {self.slowest.config.label}, {ratio:.1f}x fewer jobs/s than the best."

    def line(self) -> str:
        """One sentence for the terminal and the report."""
        best = self.best.config.label
        rate = self.best.median("throughput")
        if self.runner_up is None or self.margin is None:
            return f"{self.workload}: only {best} was measured ({rate:,.0f} jobs/s)."
        other = self.runner_up.config.label
        if self.clear is False:
            return (
                f"{self.workload}: no clear winner: {best} and {other} are within noise "
                f"(medians {self.margin:.0%} apart; {self._why_tie()})." + self._slowest()
            )
        caveat = " (one repeat: noise not judged)" if self.clear is None else ""
        return (
            f"{self.workload}: fastest is {best}, {rate:,.0f} jobs/s, "
            f"{self.margin:.0%} more than {other}{caveat}." + self._slowest()
        )

    def _why_tie(self) -> str:
        if self.margin is not None and self.margin < MIN_MARGIN:
            return f"less than {MIN_MARGIN:.0%}"
        return "their repeats overlap"


def judge(workload: str, results: list[ConfigResult]) -> Verdict:
    """The verdict over the configurations measured on one workload.

    Raises:
        ValueError: no results.
    """
    if not results:
        raise ValueError(f"no results for workload {workload!r}")
    ranked = sorted(results, key=lambda r: r.median("throughput"), reverse=True)
    best = ranked[0]
    if len(ranked) == 1:
        return Verdict(workload, best, None, None, None)
    runner_up = ranked[1]
    margin = best.median("throughput") / runner_up.median("throughput") - 1
    slowest = ranked[-1] if len(ranked) > 2 else None
    return Verdict(workload, best, runner_up, margin, _clearly_ahead(best, runner_up), slowest)


def _clearly_ahead(best: ConfigResult, other: ConfigResult) -> bool | None:
    """Whether ``best`` beat ``other`` clearly: its slowest repeat beat the other's
    fastest, and its median leads by :data:`MIN_MARGIN`; None with a single repeat."""
    if len(best.metrics) < 2 or len(other.metrics) < 2:
        return None
    margin = best.median("throughput") / other.median("throughput") - 1
    worst_of_best = min(m.throughput for m in best.metrics)
    best_of_other = max(m.throughput for m in other.metrics)
    return worst_of_best > best_of_other and margin >= MIN_MARGIN


def verdicts(results: BenchResults) -> list[Verdict]:
    """One verdict per workload, in the order the workloads were given."""
    return [judge(name, group) for name, group in results.by_workload().items()]


def recommend(results: BenchResults, workload: str) -> str:
    """One line: which dispatchkit setting to use for ``workload``, and why.

    Compares dispatchkit's configurations only; a peer that beat them all is
    named after the recommendation.

    Raises:
        ValueError: no dispatchkit configuration was measured on ``workload``.
    """
    group = results.by_workload().get(workload, [])
    ours = [r for r in group if not r.config.is_peer]
    if not ours:
        raise ValueError(f"no dispatchkit configuration was measured on {workload!r}")
    verdict = judge(workload, ours)
    c = verdict.best.config
    line = (
        f"Recommendation for {workload}: strategy={c.strategy}, chunk={c.chunk}, "
        f"{c.executor} workers, workers={c.workers}"
    )
    if verdict.runner_up is None or verdict.margin is None:
        line += ": the only configuration measured."
    else:
        other = verdict.runner_up.config.label
        if verdict.clear is False:
            line += (
                f": {verdict.margin:.0%} ahead of {other}, within noise; "
                "any of the leading configurations will do."
            )
        else:
            line += f": {verdict.margin:.0%} more jobs/s than the next best, {other}."
    defaults = _best_defaults(group)
    if defaults is not None:
        ratio = verdict.best.median("throughput") / defaults.median("throughput")
        if ratio <= 1 + MIN_MARGIN:
            line += f" The defaults are already within {MIN_MARGIN:.0%} of it."
        elif _clearly_ahead(verdict.best, defaults) is False:
            line += (
                f" The defaults took {ratio:.2f}x its time, within noise (their repeats"
                " overlap): more inputs would tell."
            )
        else:
            line += f" The defaults take {ratio:.2f}x its time."
    peers = sorted(
        (r for r in group if r.config.is_peer),
        key=lambda r: r.median("throughput"),
        reverse=True,
    )
    if peers and peers[0].median("throughput") > verdict.best.median("throughput"):
        ratio = peers[0].median("throughput") / verdict.best.median("throughput") - 1
        line += f" (Note: {peers[0].config.label} was {ratio:.0%} faster still.)"
    return line


def _fastest(results: list[ConfigResult]) -> ConfigResult | None:
    return max(results, key=lambda r: r.median("throughput"), default=None)


def _best_defaults(group: list[ConfigResult]) -> ConfigResult | None:
    """The fastest "dispatchkit defaults" configuration (one per worker kind and count)."""
    return _fastest([r for r in group if r.config.is_defaults])


def defaults_line(workload: str, group: list[ConfigResult]) -> str | None:
    """How the defaults did on one workload: their time over the best configuration's
    and over the best stdlib peer's (None if the defaults were not measured)."""
    defaults = _best_defaults(group)
    if defaults is None:
        return None
    rate = defaults.median("throughput")
    best = _fastest([r for r in group if not r.config.is_peer])
    assert best is not None  # the defaults are among them
    line = (
        f"{workload}: {defaults.config.label} take "
        f"{best.median('throughput') / rate:.2f}x the time of the best configuration "
        f"({best.config.label})"
    )
    peer = _fastest([r for r in group if r.config.is_peer])
    if peer is not None:
        line += (
            f" and {peer.median('throughput') / rate:.2f}x that of the best stdlib peer "
            f"({peer.config.label})"
        )
    return line + "."


def defaults_lines(results: BenchResults) -> list[str]:
    """:func:`defaults_line` of every workload whose defaults were measured."""
    lines = (defaults_line(name, group) for name, group in results.by_workload().items())
    return [line for line in lines if line is not None]


def best_per_strategy(group: list[ConfigResult]) -> dict[str, ConfigResult]:
    """The fastest configuration of each strategy (peers under the name ``stdlib``).

    The seed asked "batch or round-robin?": this answers it with each
    strategy in its best chunk, worker kind and worker count.
    """
    best: dict[str, ConfigResult] = {}
    for result in group:
        name = result.config.strategy or "stdlib"
        if name not in best or result.median("throughput") > best[name].median("throughput"):
            best[name] = result
    return best
