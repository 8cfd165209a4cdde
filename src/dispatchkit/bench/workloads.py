"""The built-in workloads, and the user's own job function with its inputs.

Every job function here is a module-level function of one argument (the job's
index), so that worker processes can unpickle it. Each has an ``async`` twin
for asyncio workers, which waits with ``asyncio.sleep`` where the sync one
sleeps.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from .errors import BenchUsageError

__all__ = [
    "BUILTIN",
    "Workload",
    "calibrate_cpu",
    "cpu",
    "cpu_loops",
    "io",
    "load_inputs",
    "mixed",
    "noop",
    "resolve_workload",
    "set_cpu_loops",
    "skewed",
]

#: Seconds of pure-Python arithmetic one ``cpu`` job does.
CPU_JOB_SECONDS: Final = 0.001
#: Seconds one ``io`` job waits.
IO_JOB_SECONDS: Final = 0.005
#: How many times longer the slow jobs of ``skewed`` take.
SKEW_FACTOR: Final = 50
#: One job in this many is slow in ``skewed``.
SKEW_ONE_IN: Final = 100

# Loop count of one cpu job; set by calibrate_cpu(), or by set_cpu_loops() in
# a worker process (otherwise it calibrates on its first job).
_cpu_loops: int | None = None


def _spin(loops: int) -> int:
    acc = 0
    for k in range(loops):
        acc = (acc * 31 + k) % 1_000_003
    return acc


def calibrate_cpu(target_seconds: float = CPU_JOB_SECONDS) -> int:
    """Find the loop count that makes one ``cpu`` job last ``target_seconds``.

    Takes the fastest of several timings, so a busy moment does not make
    every later job shorter than intended.
    """
    global _cpu_loops
    probe = 20_000
    best = min(_timed_spin(probe) for _ in range(5))
    _cpu_loops = max(1, round(probe * target_seconds / max(best, 1e-9)))
    return _cpu_loops


def _timed_spin(loops: int) -> float:
    started = time.perf_counter()
    _spin(loops)
    return time.perf_counter() - started


def cpu_loops() -> int:
    """The loop count of one ``cpu`` job (calibrated on first use)."""
    return _cpu_loops if _cpu_loops is not None else calibrate_cpu()


def set_cpu_loops(loops: int) -> None:
    """Use a loop count calibrated elsewhere (in a worker process: the caller's)."""
    global _cpu_loops
    _cpu_loops = loops


def _mix(index: int) -> int:
    # Hashing a tuple of ints is deterministic across processes and spreads
    # well: a rule like ``index % 100 == 0`` would pin every slow job to one
    # residue, and round-robin would send them all to the same worker.
    return hash((index, 0x5EED)) & 0xFFFFFFFF


def _is_slow(index: int) -> bool:
    return _mix(index) % SKEW_ONE_IN == 0


def _is_cpu_half(index: int) -> bool:
    return (_mix(index) >> 8) % 2 == 0


def noop(index: int) -> int:
    """Do nothing: measures the dispatching alone."""
    return index


def cpu(index: int) -> int:
    """About 1 ms of pure-Python arithmetic (holds the GIL)."""
    return _spin(cpu_loops()) + index


def io(index: int) -> int:
    """Wait 5 ms, as a network or disk call would (releases the GIL)."""
    time.sleep(IO_JOB_SECONDS)
    return index


def mixed(index: int) -> int:
    """Half the jobs are ``cpu``, half ``io``, spread evenly over the input."""
    return cpu(index) if _is_cpu_half(index) else io(index)


def skewed(index: int) -> int:
    """An ``io`` job, except one in 100 that waits 50 times longer."""
    time.sleep(IO_JOB_SECONDS * (SKEW_FACTOR if _is_slow(index) else 1))
    return index


async def anoop(index: int) -> int:
    """Async twin of :func:`noop`."""
    return index


async def acpu(index: int) -> int:
    """Async twin of :func:`cpu` (blocks the event loop, as CPU work does)."""
    return cpu(index)


async def aio(index: int) -> int:
    """Async twin of :func:`io`."""
    await asyncio.sleep(IO_JOB_SECONDS)
    return index


async def amixed(index: int) -> int:
    """Async twin of :func:`mixed`."""
    return cpu(index) if _is_cpu_half(index) else await aio(index)


async def askewed(index: int) -> int:
    """Async twin of :func:`skewed`."""
    await asyncio.sleep(IO_JOB_SECONDS * (SKEW_FACTOR if _is_slow(index) else 1))
    return index


@dataclass(frozen=True, slots=True)
class Workload:
    """A job function and its inputs.

    Attributes:
        name: shown in tables and charts.
        fn: the sync job function (None if the user's function is a coroutine function).
        afn: the coroutine function for asyncio workers (None if there is none).
        items: the inputs, one per job.
        builtin: whether it is one of the built-in workloads.
        description: one line saying what a job does.
    """

    name: str
    fn: Callable[[Any], Any] | None
    afn: Callable[[Any], Any] | None
    items: list[Any] = field(repr=False)
    builtin: bool = True
    description: str = ""

    @property
    def jobs(self) -> int:
        return len(self.items)

    def sync_job(self, who: str) -> Callable[[Any], Any]:
        """The sync job function.

        Raises:
            BenchUsageError: the workload has only a coroutine function (``who`` cannot run it).
        """
        if self.fn is None:
            raise BenchUsageError(f"{self.name} is a coroutine function: {who}")
        return self.fn

    def async_job(self) -> Callable[[Any], Any]:
        """The coroutine function.

        Raises:
            BenchUsageError: the workload has no coroutine function.
        """
        if self.afn is None:
            raise BenchUsageError(f"{self.name} is not a coroutine function: asyncio cannot run it")
        return self.afn


#: name -> (sync job, async job, default job count, description)
BUILTIN: Final[dict[str, tuple[Callable[[int], int], Callable[[int], Any], int, str]]] = {
    "noop": (noop, anoop, 10_000, "returns its input: the cost of dispatching alone"),
    "cpu": (cpu, acpu, 400, "about 1 ms of pure-Python arithmetic"),
    "io": (io, aio, 300, "waits 5 ms (time.sleep / asyncio.sleep)"),
    "mixed": (mixed, amixed, 400, "half the jobs cpu, half io"),
    "skewed": (skewed, askewed, 200, "io, but 1% of jobs take 50x longer"),
}


def resolve_workload(spec: str, jobs: int | None, inputs: str | None) -> Workload:
    """A built-in workload by name, or the user's ``package.module:function``.

    Args:
        spec: ``noop``, ``cpu``, ``io``, ``mixed``, ``skewed`` or ``module:function``.
        jobs: the number of jobs (None: the workload's default, or all the inputs).
        inputs: for the user's function, ``range:N`` or a file of JSON lines.

    Raises:
        BenchUsageError: an unknown workload, a module that cannot be imported,
            an attribute that is missing or not callable, or bad inputs.
    """
    if spec in BUILTIN:
        fn, afn, default_jobs, description = BUILTIN[spec]
        if inputs is not None:
            raise BenchUsageError(
                "--inputs applies to your own function, not to built-in workloads"
            )
        return Workload(spec, fn, afn, list(range(jobs or default_jobs)), True, description)
    if ":" not in spec:
        raise BenchUsageError(
            f"unknown workload {spec!r}: expected one of {', '.join(BUILTIN)} "
            "or package.module:function"
        )
    target = _import_function(spec)
    items = load_inputs(inputs, jobs)
    is_async = inspect.iscoroutinefunction(target)
    return Workload(
        spec,
        None if is_async else target,
        target if is_async else None,
        items,
        False,
        f"{spec} over {len(items):,} inputs",
    )


def _import_function(spec: str) -> Callable[[Any], Any]:
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise BenchUsageError(f"workload {spec!r} must look like package.module:function")
    # As `python -m` does, let a module in the current directory be found
    # when the console script is used.
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise BenchUsageError(f"cannot import module {module_name!r}: {exc}") from None
    except Exception as exc:  # the user's module raised while being imported
        raise BenchUsageError(
            f"importing module {module_name!r} raised {type(exc).__name__}: {exc}"
        ) from None
    target: object = module
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise BenchUsageError(
                f"module {module_name!r} has no attribute {attribute!r}"
            ) from None
    if not callable(target):
        raise BenchUsageError(f"{spec} is not callable (it is a {type(target).__name__})")
    return target


def load_inputs(spec: str | None, jobs: int | None) -> list[Any]:
    """The inputs of the user's function: ``range:N`` or a file of JSON lines.

    Without ``spec`` the inputs are ``range(jobs)`` (default 100). With a file,
    ``jobs`` keeps only the first ``jobs`` lines.

    Raises:
        BenchUsageError: a malformed spec, a missing or unreadable file, a line
            that is not JSON, or no inputs at all.
    """
    if spec is None:
        return list(range(jobs or 100))
    if spec.startswith("range:"):
        try:
            count = int(spec.removeprefix("range:").replace("_", ""))
        except ValueError:
            raise BenchUsageError(f"--inputs {spec!r}: expected range:N with N a number") from None
        if count < 1:
            raise BenchUsageError(f"--inputs {spec!r}: N must be at least 1")
        return list(range(min(count, jobs) if jobs else count))
    path = Path(spec)
    items: list[Any] = []
    try:
        with path.open(encoding="utf-8") as lines:
            for number, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                try:
                    items.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise BenchUsageError(
                        f"--inputs {spec}: line {number} is not JSON ({exc.msg})"
                    ) from None
                if jobs is not None and len(items) >= jobs:
                    break
    except OSError as exc:
        raise BenchUsageError(f"--inputs {spec}: cannot read it ({exc.strerror})") from None
    if not items:
        raise BenchUsageError(f"--inputs {spec}: the file holds no inputs")
    return items
