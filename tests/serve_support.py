"""A real ``dispatchkit serve`` process on a free loopback port, for the tests."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TESTS = Path(__file__).parent


def with_tests_on_path() -> str:
    """``PYTHONPATH`` for a child that imports the tests' job modules: ``tests/`` first,
    then what the caller has (a checkout's ``src`` run with another's interpreter)."""
    inherited = os.environ.get("PYTHONPATH")
    return str(TESTS) if not inherited else os.pathsep.join([str(TESTS), inherited])


#: Every server started, so that a failing test leaves none running (see kill_leftovers).
STARTED: list[Server] = []


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    log: Path
    port: int = 0
    accepted: list[int] = field(default_factory=list)

    def request(
        self,
        method: str,
        path: str,
        body: bytes | list[bytes] | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], Any]:
        """Send one request; a list body goes chunked (no content-length)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request(
                method,
                path,
                body=iter(body) if isinstance(body, list) else body,
                headers=headers or {},
                encode_chunked=isinstance(body, list),
            )
            response = conn.getresponse()
            raw = response.read()
            found = {k.lower(): v for k, v in response.getheaders()}
        finally:
            conn.close()
        if found.get("content-type", "").startswith("application/json"):
            return response.status, found, json.loads(raw)
        return response.status, found, raw.decode()

    def post(self, ids: Sequence[int], headers: dict[str, str] | None = None) -> int:
        """Post one payload per id; remember the ids answered 202."""
        status, _, body = self.request("POST", "/v1/payloads", payload_body(ids), headers)
        if status == 202:
            assert body["accepted"] == len(ids)
            self.accepted.extend(ids)
        return status

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 30) -> int:
        self.process.send_signal(sig)
        return self.process.wait(timeout)

    def listening(self) -> dict[str, Any]:
        """The server's start-up log entry (its settings)."""
        return next(e for e in self.log_entries() if e["message"] == "listening")

    def log_entries(self) -> list[dict[str, Any]]:
        # The last line may be half written: only whole lines count.
        lines = self.log.read_text().split("\n")[:-1]
        return [json.loads(line) for line in lines if line.startswith("{")]


def payload_body(ids: Sequence[int], request_id: str = "r") -> bytes:
    return json.dumps(
        {
            "version": "1",
            "token": "t",
            "request_id": request_id,
            "payloads": [{"id": i, "data": "x" * 20} for i in ids],
        }
    ).encode()


def start_server(tmp: Path, *args: str, env: dict[str, str] | None = None) -> Server:
    """Start ``dispatchkit serve --port 0`` and wait until it listens.

    One server process unless ``args`` give ``--processes``: most tests look at
    one worker process, its segments and its log lines.
    """
    log = tmp / f"server-{time.monotonic_ns()}.log"
    full_env = {**os.environ, "PYTHONPATH": with_tests_on_path(), **(env or {})}
    processes = () if "--processes" in args else ("--processes", "1")
    with open(log, "wb") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "dispatchkit", "serve", "--port", "0", *processes, *args],
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=full_env,
        )
    server = Server(process, log)
    STARTED.append(server)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        listening = [
            entry
            for entry in (server.log_entries() if log.exists() else [])
            if entry.get("message") == "listening"
        ]
        # Every server process logs its own line: the service is up once all did.
        if listening and len(listening) >= listening[0].get("processes", 1):
            server.port = listening[0]["port"]
            _wait_healthy(server, deadline)
            return server
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}: {log.read_text()}")
        time.sleep(0.02)
    process.kill()
    process.wait()
    raise RuntimeError(f"server did not start: {log.read_text()}")


def kill_leftovers() -> None:
    """Stop every server a test left running (it failed before stopping it)."""
    while STARTED:
        server = STARTED.pop()
        if server.process.poll() is None:
            server.process.terminate()
            try:
                server.process.wait(10)
            except subprocess.TimeoutExpired:
                server.process.kill()
                server.process.wait()


def _wait_healthy(server: Server, deadline: float) -> None:
    # The app logs "listening" as its lifespan starts, a moment before the
    # server's own socket may accept connections.
    while True:
        try:
            if server.request("GET", "/healthz")[0] == 200:
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.02)


def sink_ids(sink: Path) -> list[int]:
    return [
        json.loads(line)["id"]
        for path in sorted(sink.glob("segment-*.ndjson"))
        for line in path.read_bytes().splitlines()
    ]


def mount_tmpfs(directory: Path, size: int) -> str | None:
    """Mount a tmpfs of ``size`` bytes on ``directory``; None, or why it cannot."""
    directory.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return "mounting a tmpfs needs root"
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(directory)],
        capture_output=True,
        text=True,
        check=False,
        timeout=10,
    )
    return None if result.returncode == 0 else f"mount -t tmpfs failed: {result.stderr.strip()}"


def unmount(directory: Path) -> None:
    """Unmount ``directory``; if something still holds it, detach it all the same (lazily)."""
    if subprocess.run(["umount", str(directory)], check=False, timeout=10).returncode:
        subprocess.run(["umount", "--lazy", str(directory)], check=True, timeout=10)


def fill(path: Path, leave: int) -> None:
    """Write ``path`` until its filesystem has at most ``leave`` bytes left for others."""
    stats = os.statvfs(path.parent)
    free = stats.f_bavail * stats.f_frsize
    with open(path, "wb") as filler:
        filler.write(b"\0" * max(0, free - leave))


def worker_pid(server: Server) -> int:
    """The pid of the server's worker process (the child granian forks)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue  # gone meanwhile
        if int(fields[1]) == server.process.pid:  # its parent
            return int(stat.parent.name)
    raise RuntimeError("the server has no worker process")
