"""Load benchmark of ``dispatchkit serve``, beside a plain single-queue baseline.

For each server: start it on a free loopback port with an empty sink, drive
``POST /v1/payloads`` with wrk (two payloads per body) for a bounded time, then
stop it with SIGTERM and check that the sink holds exactly the payloads it
accepted. Prints requests/s, accepted requests/s, latency p50/p99 and non-2xx
counts.

    uv run --frozen python benchmarks/serve_load.py --duration 15

wrk comes from Debian's packages; when it is missing the script installs it
with apt-get (as root). Only loopback addresses are ever driven.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

HOST = "127.0.0.1"  # loopback only: this script never loads another machine
ROOT = Path(__file__).resolve().parent

#: A request of two payloads, about 300 bytes like the issue's orientation figures.
BODY = json.dumps(
    {
        "version": "1",
        "token": "t",
        "request_id": "bench-000001",
        "payloads": [
            {
                "id": 1,
                "kind": "click",
                "user": "u-12345",
                "value": 3.25,
                "tags": ["a", "b"],
                "note": "the first of two payloads",
            },
            {
                "id": 2,
                "kind": "click",
                "user": "u-67890",
                "value": 7.5,
                "tags": ["c"],
                "note": "the second of two payloads",
            },
        ],
    },
    separators=(",", ":"),
)
PAYLOADS_PER_REQUEST = 2

#: wrk script: POST the body; print a JSON summary when done.
LUA = """
wrk.method = "POST"
wrk.body = [[%s]]
wrk.headers["Content-Type"] = "application/json"
done = function(summary, latency, requests)
  io.write(string.format(
    '{"requests":%%d,"duration_us":%%d,"non2xx":%%d,"socket_errors":%%d,'
    .. '"p50_ms":%%.3f,"p99_ms":%%.3f,"max_ms":%%.3f}\\n',
    summary.requests, summary.duration, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write
      + summary.errors.timeout,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000))
end
"""


@dataclass
class Result:
    name: str
    requests: int
    seconds: float
    non2xx: int
    socket_errors: int
    p50_ms: float
    p99_ms: float
    accepted_payloads: int
    lines_in_sink: int

    @property
    def accepted_per_second(self) -> float:
        return (self.requests - self.non2xx) / self.seconds

    @property
    def missing(self) -> int:
        return self.accepted_payloads - self.lines_in_sink


#: With --pin: the server (all its threads) on one CPU, wrk on the other.
SERVER_CPU = 0
WRK_CPU = 1


def pin(args: argparse.Namespace, cpu: int) -> list[str]:
    """The taskset prefix that keeps a command on one CPU, or nothing."""
    return ["taskset", "--cpu-list", str(cpu)] if args.pin else []


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    print("wrk is missing: installing Debian's package", file=sys.stderr)
    apt = ["apt-get", "install", "-y", "-q", "wrk"]
    if subprocess.run(apt, check=False, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], check=True, capture_output=True)
        subprocess.run(apt, check=True, capture_output=True)
    return shutil.which("wrk") or sys.exit("wrk could not be installed")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def wait_ready(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"server exited early with {process.returncode}")
        try:
            with socket.create_connection((HOST, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    process.kill()
    sys.exit("server did not start")


def scrape_accepted(port: int) -> int:
    with urllib.request.urlopen(f"http://{HOST}:{port}/metrics", timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith("dispatchkit_payloads_accepted_total "):
                return int(float(line.split()[1]))
    raise RuntimeError("no accepted counter in /metrics")


def count_lines(sink: Path) -> int:
    return sum(path.read_bytes().count(b"\n") for path in sink.glob("segment-*.ndjson"))


def measure(
    name: str,
    command: list[str],
    port: int,
    sink: Path,
    args: argparse.Namespace,
    stored: Callable[[], int] | None = None,
) -> Result:
    """Drive one server; ``stored()`` counts what it kept (default: the sink's lines)."""
    lua = sink.parent / "post.lua"
    lua.write_text(LUA % BODY)
    log = sink.parent / f"{name}.log"
    with open(log, "wb") as err:
        process = subprocess.Popen(
            [*pin(args, SERVER_CPU), *command], stdout=subprocess.PIPE, stderr=err
        )
    try:
        wait_ready(port, process)
        wrk = subprocess.run(
            [
                *pin(args, WRK_CPU),
                args.wrk,
                f"-t{args.threads}",
                f"-c{args.connections}",
                f"-d{args.duration}s",
                "--timeout",
                "5s",
                "-s",
                str(lua),
                f"http://{HOST}:{port}/v1/payloads",
            ],
            capture_output=True,
            text=True,
            check=True,
            timeout=args.duration + 60,
        )
        summary = json.loads(wrk.stdout.strip().splitlines()[-1])
        if name != "baseline":
            scrape_accepted(port)  # /metrics still answers right after the load
    finally:
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=120)
    if process.returncode != 0:
        sys.exit(f"{name} exited with {process.returncode}; see {log}")
    # The final count, taken once the server stopped: requests still in flight
    # when wrk ended may have been accepted after any earlier look.
    if name != "baseline":
        entries = [
            json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")
        ]
        accepted = next(e["accepted"] for e in entries if e.get("message") == "stopped")
    else:  # the baseline reports its count on stdout as it stops
        accepted = json.loads(out.decode().strip().splitlines()[-1])["accepted"]
    return Result(
        name=name,
        requests=summary["requests"],
        seconds=summary["duration_us"] / 1e6,
        non2xx=summary["non2xx"],
        socket_errors=summary["socket_errors"],
        p50_ms=summary["p50_ms"],
        p99_ms=summary["p99_ms"],
        accepted_payloads=accepted,
        lines_in_sink=count_lines(sink) if stored is None else stored(),
    )


def measure_redis(args: argparse.Namespace, tmp: Path) -> Result:
    """``dispatchkit serve --redis``: payloads into a Redis stream, no worker reading it.

    The stream then holds exactly the accepted payloads: that is the check.
    """
    import redis

    namespace = f"dkload-{uuid.uuid4().hex[:8]}"
    client = redis.Redis.from_url(args.redis)
    stream = f"{namespace}:ingest:pull"
    port = free_port()
    sink = tmp / "redis" / "sink"  # unused by the server: where measure() keeps its files
    sink.parent.mkdir()
    command = [
        sys.executable, "-m", "dispatchkit", "serve",
        "--host", HOST, "--port", str(port), "--redis", args.redis,
        "--namespace", namespace, "--queue-size", str(10**8),
        "--interface", args.interface,
    ]  # fmt: skip
    try:
        return measure("dk --redis", command, port, sink, args, lambda: int(client.xlen(stream)))
    finally:
        keys = list(client.scan_iter(match=f"{namespace}:*"))
        if keys:
            client.delete(*keys)
        client.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=15, help="seconds per server (default 15)")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections (default 64)")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (default 1)")
    parser.add_argument("--workers", type=int, default=2, help="dispatcher workers (default 2)")
    parser.add_argument("--queue-size", type=int, default=4096, help="inbox size (default 4096)")
    parser.add_argument("--strategy", default="pull", help="dispatcher strategy (default pull)")
    parser.add_argument(
        "--executor", default="auto", help="auto, async or thread workers (default auto)"
    )
    parser.add_argument(
        "--interface", default="rsgi", help="rsgi or asgi, for dispatchkit serve (default rsgi)"
    )
    parser.add_argument(
        "--pin",
        action="store_true",
        help=f"run each server on CPU {SERVER_CPU} only and wrk on CPU {WRK_CPU}",
    )
    parser.add_argument(
        "--redis",
        default=None,
        metavar="URL",
        help="also measure dispatchkit serve --redis URL (payloads into a Redis stream)",
    )
    parser.add_argument("--no-baseline", action="store_true", help="skip the baseline server")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    if not 1 <= args.duration <= 120:
        parser.error("--duration must be between 1 and 120 seconds")
    args.wrk = ensure_wrk()
    if args.pin and (os.cpu_count() or 1) < 2:
        parser.error("--pin needs at least two CPUs")

    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="dispatchkit-load-") as tmp:
        port = free_port()
        sink = Path(tmp) / "dispatchkit" / "sink"
        sink.parent.mkdir()
        command = [
            sys.executable, "-m", "dispatchkit", "serve",
            "--host", HOST, "--port", str(port), "--sink", str(sink),
            "--workers", str(args.workers), "--queue-size", str(args.queue_size),
            "--strategy", args.strategy, "--executor", args.executor,
            "--interface", args.interface,
        ]  # fmt: skip
        results.append(measure("dispatchkit", command, port, sink, args))
        if args.redis:
            results.append(measure_redis(args, Path(tmp)))
        if not args.no_baseline:
            port = free_port()
            sink = Path(tmp) / "baseline" / "sink"
            sink.parent.mkdir()
            command = [
                sys.executable, str(ROOT / "serve_baseline.py"),
                "--port", str(port), "--sink", str(sink),
            ]  # fmt: skip
            results.append(measure("baseline", command, port, sink, args))

    if args.json:
        print(
            json.dumps(
                [{**r.__dict__, "accepted_per_second": r.accepted_per_second} for r in results],
                indent=2,
            )
        )
    else:
        print(
            f"wrk -t{args.threads} -c{args.connections} -d{args.duration}s, "
            f"{len(BODY)}-byte bodies of {PAYLOADS_PER_REQUEST} payloads, {os.cpu_count()} CPUs"
            + (f", server on CPU {SERVER_CPU} and wrk on CPU {WRK_CPU}" if args.pin else "")
        )
        print(
            f"{'server':<12} {'req/s':>9} {'accepted/s':>11} {'p50 ms':>8} {'p99 ms':>8} "
            f"{'non-2xx':>8} {'errors':>7} {'accepted':>10} {'in sink':>10} {'missing':>8}"
        )
        for r in results:
            print(
                f"{r.name:<12} {r.requests / r.seconds:>9,.0f} {r.accepted_per_second:>11,.0f} "
                f"{r.p50_ms:>8.2f} {r.p99_ms:>8.2f} {r.non2xx:>8,} {r.socket_errors:>7,} "
                f"{r.accepted_payloads:>10,} {r.lines_in_sink:>10,} {r.missing:>8,}"
            )
    return 0 if all(r.missing == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
