"""``dispatchkit serve --processes N``: N server processes on one port, summed as one.

Real server processes on real sockets: the kernel's SO_REUSEPORT spreads the
connections, each process writes its own series of segments, ``/metrics`` on
any of them reports the sum, and SIGTERM drains every one of them within the
deadline into one exit code.
"""

from __future__ import annotations

import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dispatchkit.service.config import available_cpus
from tests.serve_support import Server, kill_leftovers, payload_body, sink_ids, start_server

pytestmark = pytest.mark.timeout(60)

#: The exit status documented for a stop at the drain deadline.
DRAIN_DEADLINE_EXIT = 3


@pytest.fixture(autouse=True)
def no_leftover_servers() -> Iterator[None]:
    yield
    kill_leftovers()


def _listening_sockets(port: int) -> int:
    """Listening TCP sockets bound to ``port`` on this machine (/proc/net/tcp)."""
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A":
            count += 1
    return count


def _metrics(server: Server) -> dict[str, float]:
    status, _, text = server.request("GET", "/metrics")
    assert status == 200
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads /proc/net/tcp (Linux)")
def test_two_processes_share_the_port_write_their_own_segments_and_report_one_sum(
    tmp_path: Path,
) -> None:
    sink = tmp_path / "sink"
    server = start_server(tmp_path, "--sink", str(sink), "--processes", "2")
    listening = [e for e in server.log_entries() if e["message"] == "listening"]
    assert sorted(e["server_process"] for e in listening) == [1, 2]
    deadline = time.monotonic() + 10
    while _listening_sockets(server.port) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)  # a process logs "listening" a moment before it binds
    assert _listening_sockets(server.port) == 2  # one socket each: SO_REUSEPORT

    # A new connection per request: the kernel spreads them over both processes.
    for n in range(40):
        assert server.post([3 * n, 3 * n + 1, 3 * n + 2]) == 202
    values = _metrics(server)
    # Whichever process answered the scrape, it reports both processes' counts.
    assert values["dispatchkit_payloads_accepted_total"] == 120
    assert values["dispatchkit_requests_accepted_total"] == 40
    assert values["dispatchkit_request_duration_seconds_count"] >= 40
    # One after the other, each durable 202 waited for a flush of its own.
    assert values["dispatchkit_sink_fsync_duration_seconds_count"] >= 40
    assert values["dispatchkit_sink_fsync_duration_seconds_sum"] > 0

    assert server.stop() == 0
    series = {path.name.split("-")[1] for path in sink.glob("segment-*.ndjson")}
    assert series == {"p1", "p2"}  # every segment names the process that wrote it
    assert sorted(sink_ids(sink)) == sorted(server.accepted)
    stopped = [e for e in server.log_entries() if e["message"] == "stopped"]
    assert sorted(e["server_process"] for e in stopped) == [1, 2]
    assert all(e["accepted"] > 0 for e in stopped)
    assert sum(e["accepted"] for e in stopped) == 120
    assert sum(e["lines_written"] for e in stopped) == 120


def test_auto_starts_one_process_per_cpu_it_may_run_on(tmp_path: Path) -> None:
    server = start_server(tmp_path, "--sink", str(tmp_path / "sink"), "--processes", "auto")
    expected = available_cpus()
    listening = [e for e in server.log_entries() if e["message"] == "listening"]
    assert [e["processes"] for e in listening] == [expected] * expected
    assert server.stop() == 0


def test_sigterm_drains_every_process_within_the_deadline_into_one_exit_code(
    tmp_path: Path,
) -> None:
    sink = tmp_path / "sink"
    server = start_server(tmp_path, "--sink", str(sink), "--processes", "2", "--drain-timeout", "2")
    for n in range(20):
        assert server.post([2 * n, 2 * n + 1]) == 202
    # A request whose body never comes holds one process until the deadline.
    stalled = socket.create_connection(("127.0.0.1", server.port), timeout=15)
    stalled.sendall(b"POST /v1/payloads HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{")
    try:
        time.sleep(0.2)  # accepted by one of them
        server.process.send_signal(signal.SIGTERM)
        code = server.process.wait(20)
    finally:
        stalled.close()
    assert code == DRAIN_DEADLINE_EXIT, server.log.read_text()
    messages = [e["message"] for e in server.log_entries()]
    assert "drain deadline passed: 1 connections closed" in messages
    assert sorted(sink_ids(sink)) == sorted(server.accepted)
    assert len(server.accepted) == 40


def test_one_process_keeps_the_unnamed_segment_series(tmp_path: Path) -> None:
    sink = tmp_path / "sink"
    server = start_server(tmp_path, "--sink", str(sink), "--processes", "1")
    assert server.post([1, 2]) == 202
    assert server.stop() == 0
    assert [path.name for path in sink.glob("segment-*.ndjson")] == ["segment-000001.ndjson"]
    assert payload_body([1])  # the same bodies as every other test
