"""Load benchmark of ``dispatchkit serve`` beside its peers, pinned and unpinned.

The peers: ``floor``, a bare granian RSGI app that reads the body and answers
202 (the Python server's floor: ``serve_baseline.py --bare``); ``baseline``, a
plain single-queue server on the same granian setup (``serve_baseline.py``);
``durable`` and ``buffered``, ``dispatchkit serve --sink`` with ``--ack durable``
(the default) and ``--ack buffered``; ``go``, the Go article's design
(``go_article/main.go``: handler, bounded JobQueue, dispatcher, a pool of worker
channels), built with ``go build`` when ``go`` is on the PATH (Debian's
``golang-go``) and skipped with a message otherwise.

For each server: start it on a free loopback port with an empty sink, drive
``POST /v1/payloads`` with wrk (two payloads per body) for a bounded time, then
stop it with SIGTERM and check that the sink holds exactly the payloads it
accepted. Every round runs every peer pinned (the server on CPU 0, wrk on CPU
1) and unpinned, one after the other, so that the machine's noise spreads over
all of them; the tables give medians of the rounds and each median's ratio to
the floor's median of the same run.

    uv run --frozen python benchmarks/serve_load.py --duration 10 --rounds 3

wrk comes from Debian's packages; when it is missing the script installs it
with apt-get (as root). Only loopback addresses are ever driven.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import socket
import statistics
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
    pinned: bool
    requests: int
    seconds: float
    non2xx: int
    socket_errors: int
    p50_ms: float
    p99_ms: float
    accepted_payloads: int
    lines_in_sink: int
    #: The server's flushes during the run, those over SLOW_FSYNC, and the
    #: slowest one's bucket bound in ms (from /metrics; 0 for the others).
    fsyncs: int = 0
    slow_fsyncs: int = 0
    slowest_fsync_ms: float = 0.0

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds

    @property
    def accepted_per_second(self) -> float:
        return (self.requests - self.non2xx) / self.seconds

    @property
    def missing(self) -> int:
        return self.accepted_payloads - self.lines_in_sink


@dataclass(frozen=True)
class Peer:
    """One server of the comparison.

    Attributes:
        name: how the tables call it.
        command: its command line, given the port and the sink directory.
        dispatchkit: it is ``dispatchkit serve`` (it logs its counts, one
            ``stopped`` line per process, and has ``/metrics``); the others
            print ``{"accepted": n}`` on stdout as they stop.
        stores: it writes the payloads to the sink (the floor does not).
    """

    name: str
    command: Callable[[int, Path], list[str]]
    dispatchkit: bool = False
    stores: bool = True


#: With pinning: the server (all its threads and processes) on one CPU, wrk on the other.
SERVER_CPU = 0
WRK_CPU = 1


def pin(pinned: bool, cpu: int) -> list[str]:
    """The taskset prefix that keeps a command on one CPU, or nothing."""
    return ["taskset", "--cpu-list", str(cpu)] if pinned else []


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


def build_go(tmp: Path) -> Path | None:
    """Build the Go article's server; None (and why, on stderr) when go is missing."""
    go = shutil.which("go")
    if go is None:
        print(
            "go is missing: the Go peer is skipped (apt-get install -y golang-go to run it)",
            file=sys.stderr,
        )
        return None
    binary = tmp / "go_article"
    env = {**os.environ, "GOCACHE": str(tmp / "gocache"), "GOFLAGS": "-mod=mod"}
    subprocess.run(
        [go, "build", "-o", str(binary), "."],
        cwd=ROOT / "go_article",
        env=env,
        check=True,
        capture_output=True,
        timeout=300,
    )
    return binary


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


#: Seconds beyond which a flush counts as slow: one such fsync alone puts every
#: request waiting on it past the durable p99 target (20 ms).
SLOW_FSYNC = 0.025


def scrape_fsyncs(port: int) -> tuple[int, int, float]:
    """The sink's flushes so far, how many took over SLOW_FSYNC, and the slowest's bound in ms.

    From the histogram in ``/metrics`` (all zero without a sink); the scrape
    also checks that ``/metrics`` still answers right after the load.
    """
    with urllib.request.urlopen(f"http://{HOST}:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    prefix = 'dispatchkit_sink_fsync_duration_seconds_bucket{le="'
    cumulative = [
        (float(bound), int(float(count)))
        for bound, count in (
            line[len(prefix) :].split('"} ')
            for line in text.splitlines()
            if line.startswith(prefix)
        )
    ]
    if not cumulative:
        return 0, 0, 0.0
    total = cumulative[-1][1]
    within = max((count for bound, count in cumulative if bound <= SLOW_FSYNC), default=0)
    # The slowest flush lies in the first bucket that holds them all.
    slowest = next(bound for bound, count in cumulative if count == total)
    return total, total - within, slowest * 1000


def count_lines(sink: Path) -> int:
    return sum(path.read_bytes().count(b"\n") for path in sink.glob("segment-*.ndjson"))


def measure(
    peer: Peer,
    args: argparse.Namespace,
    tmp: Path,
    pinned: bool,
    stored: Callable[[], int] | None = None,
) -> Result:
    """Drive one server once; ``stored()`` counts what it kept (default: the sink's lines)."""
    run = tmp / f"{peer.name}-{'pinned' if pinned else 'unpinned'}-{time.monotonic_ns()}"
    run.mkdir()
    sink = run / "sink"
    port = free_port()
    lua = run / "post.lua"
    lua.write_text(LUA % BODY)
    log = run / "server.log"
    with open(log, "wb") as err:
        command = [*pin(pinned, SERVER_CPU), *peer.command(port, sink)]
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=err)
    try:
        wait_ready(port, process)
        wrk = subprocess.run(
            [
                *pin(pinned, WRK_CPU),
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
        fsyncs = scrape_fsyncs(port) if peer.dispatchkit else (0, 0, 0.0)
    finally:
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=120)
    if process.returncode != 0:
        sys.exit(f"{peer.name} exited with {process.returncode}; see {log}")
    # The final count, taken once the server stopped: requests still in flight
    # when wrk ended may have been accepted after any earlier look.
    if peer.dispatchkit:
        entries = [
            json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")
        ]
        accepted = sum(e["accepted"] for e in entries if e.get("message") == "stopped")
    else:  # the others report their count on stdout as they stop
        accepted = json.loads(out.decode().strip().splitlines()[-1])["accepted"]
    in_sink = accepted  # the floor stores nothing: nothing to check
    if stored is not None:
        in_sink = stored()
    elif peer.stores:
        in_sink = count_lines(sink)
    return Result(
        name=peer.name,
        pinned=pinned,
        requests=summary["requests"],
        seconds=summary["duration_us"] / 1e6,
        non2xx=summary["non2xx"],
        socket_errors=summary["socket_errors"],
        p50_ms=summary["p50_ms"],
        p99_ms=summary["p99_ms"],
        accepted_payloads=accepted,
        lines_in_sink=in_sink,
        fsyncs=fsyncs[0],
        slow_fsyncs=fsyncs[1],
        slowest_fsync_ms=fsyncs[2],
    )


def measure_redis(args: argparse.Namespace, tmp: Path, pinned: bool) -> Result:
    """``dispatchkit serve --redis``: payloads into a Redis stream, no worker reading it.

    The stream then holds exactly the accepted payloads: that is the check.
    """
    import redis

    namespace = f"dkload-{uuid.uuid4().hex[:8]}"
    client = redis.Redis.from_url(args.redis)
    stream = f"{namespace}:ingest:pull"

    def command(port: int, _: Path) -> list[str]:
        return [
            sys.executable, "-m", "dispatchkit", "serve",
            "--host", HOST, "--port", str(port), "--redis", args.redis,
            "--namespace", namespace, "--queue-size", str(10**8),
            "--interface", args.interface, *args.serve_arg,
        ]  # fmt: skip

    peer = Peer("redis", command, dispatchkit=True)
    try:
        return measure(peer, args, tmp, pinned, lambda: int(client.xlen(stream)))
    finally:
        keys = list(client.scan_iter(match=f"{namespace}:*"))
        if keys:
            client.delete(*keys)
        client.close()


def peers(args: argparse.Namespace, tmp: Path) -> list[Peer]:
    """The servers asked for, in the order each round runs them."""

    def dispatchkit(ack: str) -> Callable[[int, Path], list[str]]:
        def command(port: int, sink: Path) -> list[str]:
            return [
                sys.executable, "-m", "dispatchkit", "serve",
                "--host", HOST, "--port", str(port), "--sink", str(sink), "--ack", ack,
                "--workers", str(args.workers), "--queue-size", str(args.queue_size),
                "--strategy", args.strategy, "--executor", args.executor,
                "--interface", args.interface, *args.serve_arg,
            ]  # fmt: skip

        return command

    baseline = [sys.executable, str(ROOT / "serve_baseline.py")]
    every: dict[str, Callable[[], Peer | None]] = {
        "floor": lambda: Peer(
            "floor",
            lambda port, sink: [*baseline, "--bare", "--port", str(port), "--sink", str(sink)],
            stores=False,
        ),
        "baseline": lambda: Peer(
            "baseline", lambda port, sink: [*baseline, "--port", str(port), "--sink", str(sink)]
        ),
        "durable": lambda: Peer("durable", dispatchkit("durable"), dispatchkit=True),
        "buffered": lambda: Peer("buffered", dispatchkit("buffered"), dispatchkit=True),
        "go": lambda: go_peer(tmp),
    }
    chosen = [every[name]() for name in args.peers.split(",")]
    return [peer for peer in chosen if peer is not None]


def go_peer(tmp: Path) -> Peer | None:
    binary = build_go(tmp)
    if binary is None:
        return None
    return Peer("go", lambda port, sink: [str(binary), "-port", str(port), "-sink", str(sink)])


def median_of(runs: list[Result]) -> dict[str, float]:
    return {
        "req_per_s": statistics.median(r.per_second for r in runs),
        "accepted_per_s": statistics.median(r.accepted_per_second for r in runs),
        "p50_ms": statistics.median(r.p50_ms for r in runs),
        "p99_ms": statistics.median(r.p99_ms for r in runs),
        "non2xx": sum(r.non2xx for r in runs),
        "socket_errors": sum(r.socket_errors for r in runs),
        "missing": sum(r.missing for r in runs),
        "min": min(r.per_second for r in runs),
        "max": max(r.per_second for r in runs),
        "fsyncs": sum(r.fsyncs for r in runs),
        "slow_fsyncs": sum(r.slow_fsyncs for r in runs),
        "slowest_fsync_ms": max(r.slowest_fsync_ms for r in runs),
    }


def print_fsyncs(medians: dict[str, dict[str, float]]) -> None:
    """The sinks' flushes: how many were slow, and durable's throughput against buffered's.

    Every request waiting on a slow fsync is slow itself, whatever the server
    does: these lines tell a durable p99 set by the disk from one set by the server.
    """
    for name, m in medians.items():
        if m["fsyncs"]:
            slowest = m["slowest_fsync_ms"]
            bound = "over 1 s" if math.isinf(slowest) else f"at most {slowest:g} ms"
            print(
                f"  {name}: {m['fsyncs']:,.0f} flushes in all rounds, "
                f"{m['slow_fsyncs']:,.0f} over {SLOW_FSYNC * 1000:.0f} ms, the slowest {bound}"
            )
    if "durable" in medians and "buffered" in medians:
        ratio = medians["durable"]["req_per_s"] / medians["buffered"]["req_per_s"]
        print(f"  durable ÷ buffered: {ratio:.2f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per run (default 10)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds to take medians of (3)")
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
        "--serve-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="one more argument for dispatchkit serve (repeat it)",
    )
    parser.add_argument(
        "--peers",
        default="floor,baseline,durable,buffered,go",
        help="which servers, comma-separated (default floor,baseline,durable,buffered,go)",
    )
    parser.add_argument(
        "--pin",
        choices=("both", "pinned", "unpinned"),
        default="both",
        help=f"pinned: each server on CPU {SERVER_CPU} only, wrk on CPU {WRK_CPU}; "
        "unpinned: both anywhere (default both, interleaved)",
    )
    parser.add_argument(
        "--redis",
        default=None,
        metavar="URL",
        help="also measure dispatchkit serve --redis URL (payloads into a Redis stream)",
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    if not 1 <= args.duration <= 120:
        parser.error("--duration must be between 1 and 120 seconds")
    unknown = set(args.peers.split(",")) - {"floor", "baseline", "durable", "buffered", "go"}
    if unknown:
        parser.error(f"unknown peers: {', '.join(sorted(unknown))}")
    args.wrk = ensure_wrk()
    modes = {"both": (True, False), "pinned": (True,), "unpinned": (False,)}[args.pin]
    if True in modes and (os.cpu_count() or 1) < 2:
        parser.error("pinning needs at least two CPUs")

    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="dispatchkit-load-") as tmp:
        chosen = peers(args, Path(tmp))
        for _ in range(args.rounds):
            for pinned in modes:
                for peer in chosen:
                    results.append(measure(peer, args, Path(tmp), pinned))
                if args.redis:
                    results.append(measure_redis(args, Path(tmp), pinned))

    names = list(dict.fromkeys(r.name for r in results))
    medians = {
        (name, pinned): median_of([r for r in results if r.name == name and r.pinned == pinned])
        for name in names
        for pinned in modes
    }
    if args.json:
        print(
            json.dumps(
                {
                    "runs": [{**r.__dict__, "req_per_s": r.per_second} for r in results],
                    "medians": [
                        {"name": name, "pinned": pinned, **values}
                        for (name, pinned), values in medians.items()
                    ],
                },
                indent=2,
            )
        )
    else:
        print(
            f"wrk -t{args.threads} -c{args.connections} -d{args.duration}s, "
            f"{len(BODY)}-byte bodies of {PAYLOADS_PER_REQUEST} payloads, {os.cpu_count()} CPUs, "
            f"medians of {args.rounds} interleaved rounds"
        )
        for pinned in modes:
            where = f"pinned: server on CPU {SERVER_CPU}, wrk on CPU {WRK_CPU}"
            print(f"\n{where if pinned else 'unpinned'}")
            print(
                f"{'server':<10} {'req/s':>9} {'(min-max)':>17} {'÷ floor':>8} {'÷ go':>6} "
                f"{'p50 ms':>7} {'p99 ms':>7} {'non-2xx':>8} {'errors':>7} {'missing':>8}"
            )
            floor = medians.get(("floor", pinned), {}).get("req_per_s")
            go = medians.get(("go", pinned), {}).get("req_per_s")
            for name in names:
                m = medians[(name, pinned)]
                ratio = f"{m['req_per_s'] / floor:.2f}" if floor else "-"
                to_go = f"{m['req_per_s'] / go:.2f}" if go else "-"
                spread = f"{m['min']:,.0f}-{m['max']:,.0f}"
                print(
                    f"{name:<10} {m['req_per_s']:>9,.0f} {spread:>17} {ratio:>8} {to_go:>6} "
                    f"{m['p50_ms']:>7.2f} {m['p99_ms']:>7.2f} {m['non2xx']:>8,.0f} "
                    f"{m['socket_errors']:>7,.0f} {m['missing']:>8,.0f}"
                )
            print_fsyncs({name: medians[(name, pinned)] for name in names})
    return 0 if all(r.missing == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
