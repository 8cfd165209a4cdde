"""Thousands of thread workers: what starting, feeding and closing a dispatcher costs.

    python3 -m uv run --frozen python benchmarks/many_workers.py              # 1,000 2,000 4,000
    python3 -m uv run --frozen python benchmarks/many_workers.py --workers 5000

For each worker count and strategy, in a fresh interpreter each: the seconds to
construct ``Dispatcher(n, strategy=...)`` (every thread started), then to dispatch ten
jobs, close and join. The stealing strategies (``round_robin``, ``batch``) have every idle
worker look at the others' queues, so their cost grows faster than the worker count.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CASE = """
import json, sys, time
from dispatchkit import Dispatcher
workers, strategy = int(sys.argv[1]), sys.argv[2]
started = time.perf_counter()
d = Dispatcher(workers, strategy=strategy)
built = time.perf_counter()
d.dispatch(abs, range(10))
d.close()
assert d.join(120)
print(json.dumps([built - started, time.perf_counter() - built]))
"""


def measure(workers: int, strategy: str) -> tuple[float, float]:
    result = subprocess.run(
        [sys.executable, "-c", CASE, str(workers), strategy],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    start, finish = json.loads(result.stdout)
    return start, finish


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", default="1000,2000,4000", help="comma-separated counts")
    parser.add_argument("--strategies", default="auto,round_robin")
    args = parser.parse_args()
    print("| workers | strategy | start (s) | dispatch 10, close, join (s) |")
    print("|---:|---|---:|---:|")
    for workers in (int(w) for w in args.workers.split(",")):
        for strategy in args.strategies.split(","):
            start, finish = measure(workers, strategy)
            print(f"| {workers:,} | {strategy} | {start:.2f} | {finish:.2f} |")


if __name__ == "__main__":
    main()
