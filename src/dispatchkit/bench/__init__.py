"""``dispatchkit bench``: measure strategies, worker kinds and the standard
library's pools on a workload, and say which is faster.

Built on the public API only. Charts need matplotlib (``dispatchkit[bench]``).

    >>> from dispatchkit.bench import BenchOptions, run_bench, verdicts
    >>> results = run_bench(BenchOptions(workloads=("io",), jobs=40, repeat=1))  # doctest: +SKIP
"""

from typing import TYPE_CHECKING

from dispatchkit._lazy import lazy_getattr

if TYPE_CHECKING:
    from .charts import charts_available, draw_charts, require_charts
    from .config import EXECUTORS, PEERS, Config
    from .errors import BenchUsageError, ExecutorUnavailable
    from .metrics import JobRecord, RunMetrics, RunRecord, Usage, compute_metrics, percentile
    from .output import print_table, to_json, write_report, write_results
    from .progress import BenchProgress
    from .runner import (
        DEFAULT_CHUNKS,
        DEFAULT_REPEAT,
        DEFAULT_STRATEGIES,
        DEFAULT_WORKERS,
        DEFAULT_WORKLOADS,
        BenchOptions,
        BenchResults,
        ConfigResult,
        Plan,
        make_plan,
        run_bench,
    )
    from .verdict import Verdict, best_per_strategy, judge, recommend, verdicts
    from .workloads import BUILTIN, Workload, resolve_workload

# Each name is imported when first used: a worker process unpickling a workload's
# job imports only .workloads, not the runner, the charts or the report.
__getattr__ = lazy_getattr(
    __name__,
    globals(),
    {
        "charts_available": "charts",
        "draw_charts": "charts",
        "require_charts": "charts",
        "EXECUTORS": "config",
        "PEERS": "config",
        "Config": "config",
        "BenchUsageError": "errors",
        "ExecutorUnavailable": "errors",
        "JobRecord": "metrics",
        "RunMetrics": "metrics",
        "RunRecord": "metrics",
        "Usage": "metrics",
        "compute_metrics": "metrics",
        "percentile": "metrics",
        "print_table": "output",
        "to_json": "output",
        "write_report": "output",
        "write_results": "output",
        "BenchProgress": "progress",
        "DEFAULT_CHUNKS": "runner",
        "DEFAULT_REPEAT": "runner",
        "DEFAULT_STRATEGIES": "runner",
        "DEFAULT_WORKERS": "runner",
        "DEFAULT_WORKLOADS": "runner",
        "BenchOptions": "runner",
        "BenchResults": "runner",
        "ConfigResult": "runner",
        "Plan": "runner",
        "make_plan": "runner",
        "run_bench": "runner",
        "Verdict": "verdict",
        "best_per_strategy": "verdict",
        "judge": "verdict",
        "recommend": "verdict",
        "verdicts": "verdict",
        "BUILTIN": "workloads",
        "Workload": "workloads",
        "resolve_workload": "workloads",
    },
)

__all__ = [
    "BUILTIN",
    "DEFAULT_CHUNKS",
    "DEFAULT_REPEAT",
    "DEFAULT_STRATEGIES",
    "DEFAULT_WORKERS",
    "DEFAULT_WORKLOADS",
    "EXECUTORS",
    "PEERS",
    "BenchOptions",
    "BenchProgress",
    "BenchResults",
    "BenchUsageError",
    "Config",
    "ConfigResult",
    "ExecutorUnavailable",
    "JobRecord",
    "Plan",
    "RunMetrics",
    "RunRecord",
    "Usage",
    "Verdict",
    "Workload",
    "best_per_strategy",
    "charts_available",
    "compute_metrics",
    "draw_charts",
    "judge",
    "make_plan",
    "percentile",
    "print_table",
    "recommend",
    "require_charts",
    "resolve_workload",
    "run_bench",
    "to_json",
    "verdicts",
    "write_report",
    "write_results",
]
