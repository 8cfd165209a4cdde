"""``dispatchkit serve`` stops within its drain deadline, and never outlives its main process.

Real server processes on real sockets: stalled clients, an idle keep-alive
connection, SIGTERM and SIGKILL.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.serve_support import Server, kill_leftovers, payload_body, sink_ids, start_server

pytestmark = pytest.mark.timeout(60)

#: The exit status documented for a stop at the drain deadline.
DRAIN_DEADLINE_EXIT = 3
DEADLINE = 2.0


@pytest.fixture(autouse=True)
def no_leftover_servers() -> Iterator[None]:
    yield
    kill_leftovers()


def _stalled_clients(server: Server) -> list[socket.socket]:
    """A request whose body never comes, and one whose headers never end."""
    partial_body = socket.create_connection(("127.0.0.1", server.port), timeout=15)
    partial_body.sendall(
        b"POST /v1/payloads HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100000\r\n\r\n{"
    )
    partial_headers = socket.create_connection(("127.0.0.1", server.port), timeout=15)
    partial_headers.sendall(b"POST /v1/payloads HTTP/1.1\r\nHost: x\r\nContent-Len")
    return [partial_body, partial_headers]


def _keep_alive(server: Server) -> http.client.HTTPConnection:
    """A connection that posted once and stays open, idle. Answered, so the server
    has also accepted every connection opened before it."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=15)
    conn.request("POST", "/v1/payloads", payload_body([900, 901]))
    response = conn.getresponse()
    assert response.status == 202
    response.read()
    server.accepted.extend([900, 901])
    return conn


def _closed_by_server(sock: socket.socket) -> bool:
    try:
        return sock.recv(65536) == b"" or sock.recv(65536) == b""  # an answer, then EOF
    except ConnectionResetError:
        return True


@pytest.mark.parametrize(
    ("interface", "executor", "how"),
    [("rsgi", "async", "env"), ("asgi", "async", "flag"), ("rsgi", "thread", "flag")],
)
def test_stalled_clients_are_cut_off_at_the_drain_deadline_and_accepted_payloads_kept(
    tmp_path: Path, interface: str, executor: str, how: str
) -> None:
    sink = tmp_path / "sink"
    deadline = ["--drain-timeout", str(DEADLINE)] if how == "flag" else []
    server = start_server(
        tmp_path,
        "--sink",
        str(sink),
        "--fsync-interval",
        "60",  # nothing is on disk until the drain writes it
        "--interface",
        interface,
        "--executor",
        executor,
        *deadline,
        env={"DISPATCHKIT_DRAIN_TIMEOUT": str(DEADLINE)} if how == "env" else None,
    )
    for base in range(0, 100, 10):
        assert server.post(range(base, base + 10)) == 202
    stalled = _stalled_clients(server)
    idle = _keep_alive(server)
    try:
        _stop_at_the_deadline(server, stalled, sink)
    finally:
        for sock in stalled:
            sock.close()
        idle.close()


def _stop_at_the_deadline(server: Server, stalled: list[socket.socket], sink: Path) -> None:
    started = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    code = server.process.wait(DEADLINE + 10)
    waited = time.monotonic() - started

    assert code == DRAIN_DEADLINE_EXIT, server.log.read_text()
    assert DEADLINE - 0.5 <= waited <= DEADLINE + 5  # it waited for the deadline, then stopped
    assert all(_closed_by_server(sock) for sock in stalled)
    final = server.log_entries()[-1]
    assert final["message"] == "drain deadline passed: 2 connections closed"
    assert final["connections_closed"] == 2
    assert final["exit_code"] == DRAIN_DEADLINE_EXIT
    assert sorted(sink_ids(sink)) == sorted(server.accepted)
    assert len(server.accepted) == 102


def test_an_idle_keep_alive_connection_does_not_hold_the_drain(tmp_path: Path) -> None:
    sink = tmp_path / "sink"
    server = start_server(
        tmp_path, "--sink", str(sink), "--fsync-interval", "60", "--drain-timeout", "30"
    )
    idle = _keep_alive(server)

    started = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    code = server.process.wait(20)

    assert code == 0, server.log.read_text()
    assert time.monotonic() - started < 10  # well before the 30 s deadline
    assert server.log_entries()[-1]["message"] == "stopped"
    assert sink_ids(sink) == [900, 901]
    idle.close()


def _children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        found.update(int(child) for child in (task / "children").read_text().split())
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"  # a zombie has exited, only its parent has not reaped it yet


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs Linux /proc")
def test_the_worker_process_dies_with_a_killed_main_process_and_the_port_is_free(
    tmp_path: Path,
) -> None:
    sink = tmp_path / "sink"
    first = start_server(tmp_path, "--sink", str(sink), "--fsync-interval", "60")
    assert first.post([1, 2, 3]) == 202
    (worker,) = _children(first.process.pid)

    first.process.kill()
    assert first.process.wait(10) == -signal.SIGKILL
    deadline = time.monotonic() + 5
    while _alive(worker) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not _alive(worker), "the server's worker process outlived its main process"

    # What the orphaned worker had accepted, it wrote before it went.
    assert sorted(sink_ids(sink)) == [1, 2, 3]
    assert "main process gone" in first.log_entries()[-1]["message"]
    # A supervisor's restart on the same port works.
    second = start_server(tmp_path, "--sink", str(sink), "--port", str(first.port))
    assert second.port == first.port
    assert second.post([4]) == 202
    assert second.stop() == 0
    assert sorted(sink_ids(sink)) == [1, 2, 3, 4]


@pytest.mark.parametrize("command", ["serve", "worker"])
@pytest.mark.parametrize(
    ("flag", "env"),
    [("nan", None), ("-1", None), ("inf", None), ("soon", None), (None, "abc"), (None, "-2")],
)
def test_a_bad_drain_timeout_is_one_line_and_exit_2(
    tmp_path: Path, command: str, flag: str | None, env: str | None
) -> None:
    where = (
        ["--sink", str(tmp_path / "sink"), "--port", "0"]
        if command == "serve"
        else ["--redis", "redis://127.0.0.1:1/0"]
    )
    result = subprocess.run(
        [sys.executable, "-m", "dispatchkit", command, *where]
        + ([] if flag is None else [f"--drain-timeout={flag}"]),
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, **({} if env is None else {"DISPATCHKIT_DRAIN_TIMEOUT": env})},
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert "DRAIN_TIMEOUT" in lines[0].upper().replace("-", "_"), lines
