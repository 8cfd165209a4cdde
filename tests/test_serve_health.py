"""``dispatchkit serve`` when it cannot store: a full disk, a failing fsync, Redis down.

A real server process on a real small filesystem (a tmpfs, or a file-size limit
set on the server's worker process) and a real Redis server that the test stops.
"""

from __future__ import annotations

import json
import resource
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from dispatchkit.cli import RET_OK, RET_UNSTORED
from tests.serve_support import (
    Server,
    fill,
    kill_leftovers,
    mount_tmpfs,
    payload_body,
    sink_ids,
    start_server,
    unmount,
    worker_pid,
)

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(autouse=True, scope="module")
def no_leftover_servers() -> Iterator[None]:
    yield
    kill_leftovers()


class SmallDisk:
    """Where the sink goes, and how the test fills and frees it."""

    def __init__(self, sink: Path, free: Callable[[Server], None], kind: str, logs: Path) -> None:
        self.sink = sink
        #: Where the server's log goes: not on the small disk.
        self.logs = logs
        self.free = free
        self.kind = kind
        #: Called once the server runs, to make its writes fail soon.
        self.limit: Callable[[Server], None] = lambda server: None


@pytest.fixture(params=["tmpfs", "rlimit_fsize"])
def small_disk(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SmallDisk]:
    """A tmpfs of 512 KiB nearly filled by a filler file (root only), or RLIMIT_FSIZE.

    The tmpfs is freed by deleting the filler; the limit, set on the server's
    worker process once it runs, by raising it again.
    """
    if request.param == "tmpfs":
        mount = tmp_path / "disk"
        why_not = mount_tmpfs(mount, 512 << 10)
        if why_not is not None:
            pytest.skip(f"a real full disk needs a tmpfs ({why_not}); rlimit_fsize runs instead")
        filler = mount / "filler"
        fill(filler, leave=48 << 10)
        print(f"full disk: a tmpfs of 512 KiB at {mount}, 48 KiB left free")
        try:
            yield SmallDisk(mount / "sink", lambda server: filler.unlink(), "tmpfs", tmp_path)
        finally:
            kill_leftovers()  # a failed test's server holds the mount
            unmount(mount)
        return

    limit = 64 << 10

    def set_limit(server: Server, soft: int) -> None:
        pid = worker_pid(server)
        resource.prlimit(
            pid, resource.RLIMIT_FSIZE, (soft, resource.getrlimit(resource.RLIMIT_FSIZE)[1])
        )

    print(f"full disk: RLIMIT_FSIZE of {limit} bytes on the server's worker process")
    disk = SmallDisk(
        tmp_path / "sink",
        lambda server: set_limit(server, resource.RLIM_INFINITY),
        "rlimit",
        tmp_path,
    )
    disk.limit = lambda server: set_limit(server, limit)
    yield disk


def test_a_full_disk_is_never_acknowledged_and_writing_resumes(small_disk: SmallDisk) -> None:
    sink = small_disk.sink
    # One large segment: with RLIMIT_FSIZE, a new segment would start with room again.
    server = start_server(
        small_disk.logs,
        "--sink",
        str(sink),
        "--fsync-interval",
        "0.05",
        "--segment-bytes",
        "1000000",
    )
    small_disk.limit(server)
    refused: list[dict[str, str]] = []
    lock = threading.Lock()
    stop = threading.Event()

    def client(base: int) -> None:
        n = 0
        while not stop.is_set():
            ids = list(range(base + n, base + n + 5))
            status, headers, body = server.request("POST", "/v1/payloads", payload_body(ids))
            if status == 202:
                with lock:
                    server.accepted.extend(ids)
            else:
                assert status == 503, (status, body)
                assert headers["retry-after"] == "1"
                with lock:
                    refused.append(body)
            n += 5

    threads = [threading.Thread(target=client, args=(10**6 * t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 20
    while len(refused) < 50 and time.monotonic() < deadline:
        time.sleep(0.01)
    stop.set()
    for thread in threads:
        thread.join()
    assert len(refused) >= 50, "the disk never filled up"
    assert server.accepted, "nothing was accepted before the disk filled up"
    expected = "No space left on device" if small_disk.kind == "tmpfs" else "File too large"
    assert all(expected in body["error"] for body in refused), refused[:3]

    # Full: refused, and said so by /healthz, with the reason.
    status, _, health = server.request("GET", "/healthz")
    assert (status, health["status"]) == (503, "failing")
    assert expected in health["reason"]
    assert server.post(list(range(9 * 10**6, 9 * 10**6 + 20))) == 503  # larger than any gap
    # Every payload answered 202 is in the sink exactly once, on whole lines of JSON.
    check_segments(sink)
    assert sorted(sink_ids(sink)) == sorted(server.accepted)

    small_disk.free(server)
    assert server.post([8 * 10**6, 8 * 10**6 + 1]) == 202  # writing resumes at once
    status, _, health = server.request("GET", "/healthz")
    assert (status, health) == (200, {"status": "ok"})
    _, _, metrics = server.request("GET", "/metrics")
    assert 'dispatchkit_requests_rejected_total{reason="sink_failed"}' in metrics
    assert f"dispatchkit_sink_lines_written_total {len(server.accepted)}.0" in metrics

    # Refused payloads were never acknowledged, so none is missing: a clean stop.
    assert server.stop() == 0
    check_segments(sink)
    assert sorted(sink_ids(sink)) == sorted(server.accepted)
    (stopped,) = [e for e in server.log_entries() if e["message"] == "stopped"]
    assert stopped["accepted"] == stopped["lines_written"] == len(server.accepted)
    assert stopped["unstored"] == 0
    failed = [e for e in server.log_entries() if "write failed" in e["message"]]
    assert failed
    assert failed[0]["level"] == "critical"
    assert "Traceback" not in server.log.read_text()


def check_segments(sink: Path) -> None:
    """Every segment ends on a whole line, and every line is one valid JSON object."""
    for path in sorted(sink.glob("segment-*.ndjson")):
        data = path.read_bytes()
        assert not data or data.endswith(b"\n"), f"{path.name} ends on a partial line"
        for line in data.splitlines():
            assert isinstance(json.loads(line), dict), line


def test_payloads_whose_fsync_failed_are_counted_and_the_exit_code_says_so(
    tmp_path: Path,
) -> None:
    sink = tmp_path / "sink"
    server = start_server(
        tmp_path,
        "--sink", str(sink), "--segment-bytes", "100", "--fsync-interval", "0.05",
        "--ack", "buffered",
    )  # fmt: skip
    # The next segment is a device that takes writes but cannot be fsynced.
    (sink / "segment-000002.ndjson").symlink_to("/dev/null")
    assert server.post([1, 2, 3]) == 202  # into segment 1, which is then full
    assert server.post([4, 5]) == 202  # written to the OS, but its fsync will fail
    deadline = time.monotonic() + 10
    while server.request("GET", "/healthz")[0] == 200 and time.monotonic() < deadline:
        time.sleep(0.02)
    status, _, health = server.request("GET", "/healthz")
    assert status == 503
    assert "sink cannot fsync" in health["reason"]
    status, _, body = server.request("POST", "/v1/payloads", payload_body([6]))
    assert status == 503
    assert "cannot be fsynced" in body["error"]

    assert server.stop() == RET_UNSTORED
    assert sink_ids(sink) == [1, 2, 3]
    errors = [e for e in server.log_entries() if e["message"].startswith("payloads answered 202")]
    assert [e["unstored"] for e in errors] == [2]
    text = server.log.read_text()
    assert "2 payloads answered 202 could not be stored" in text.strip().splitlines()[-1]
    assert "Traceback" not in text


def test_with_durable_acks_a_failed_fsync_is_a_503_and_nothing_answered_202_is_lost(
    tmp_path: Path,
) -> None:
    sink = tmp_path / "sink"
    server = start_server(tmp_path, "--sink", str(sink), "--segment-bytes", "100")
    # The next segment is a device that takes writes but cannot be fsynced.
    (sink / "segment-000002.ndjson").symlink_to("/dev/null")
    assert server.post([1]) == 202  # written and fsynced: segment 1 is not full yet
    # Fills segment 1 and opens the device: the flush this request waits for fails.
    status, _, body = server.request("POST", "/v1/payloads", payload_body([2, 3, 4]))
    assert status == 503
    assert "cannot fsync the sink" in body["error"]
    status, _, health = server.request("GET", "/healthz")
    assert status == 503
    assert "sink cannot fsync" in health["reason"]
    assert server.post([5]) == 503  # refused until an fsync succeeds

    # Nothing answered 202 was lost: a clean stop.
    assert server.stop() == RET_OK
    stored = sink_ids(sink)
    assert stored[:1] == [1]
    assert 5 not in stored
    text = server.log.read_text()
    assert "could not be stored" not in text
    assert "Traceback" not in text


class RedisServer:
    """A redis-server of the test's own, on a free port, to stop and start again."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.tmp),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as conn:
                    conn.sendall(b"PING\r\n")
                    if conn.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        pytest.skip("needs redis-server on the PATH, to stop and restart it")
    redis_server = RedisServer(tmp_path)
    redis_server.start()
    try:
        yield redis_server
    finally:
        redis_server.stop()


def test_healthz_says_503_while_redis_is_down(tmp_path: Path, own_redis: RedisServer) -> None:
    pytest.importorskip("redis")
    server = start_server(tmp_path, "--redis", f"redis://127.0.0.1:{own_redis.port}/0")
    try:
        assert server.request("GET", "/healthz")[:2][0] == 200
        own_redis.stop()
        status, _, health = server.request("GET", "/healthz")
        assert (status, health["status"]) == (503, "failing")
        assert "Redis is unreachable" in health["reason"]
        assert server.post([1]) == 503
        own_redis.start()
        deadline = time.monotonic() + 10
        while server.request("GET", "/healthz")[0] != 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.request("GET", "/healthz")[0] == 200
        assert server.post([2]) == 202
    finally:
        assert server.stop() == 0


@pytest.mark.parametrize("interface", ["rsgi", "asgi"])
def test_metrics_are_open_unless_a_metrics_token_is_set(tmp_path: Path, interface: str) -> None:
    server = start_server(tmp_path, "--sink", str(tmp_path / "a"), "--interface", interface)
    try:
        assert server.request("GET", "/metrics")[0] == 200  # open by default
    finally:
        assert server.stop() == 0
    guarded = start_server(
        tmp_path,
        "--sink",
        str(tmp_path / "b"),
        "--token",
        "ingest",
        "--interface",
        interface,
        env={"DISPATCHKIT_METRICS_TOKEN": "scrape"},
    )
    try:
        status, headers, body = guarded.request("GET", "/metrics")
        assert (status, headers["www-authenticate"]) == (401, "Bearer")
        assert "token" in body["error"]
        assert (
            guarded.request("GET", "/metrics", headers={"Authorization": "Bearer ingest"})[0] == 401
        )
        status, _, text = guarded.request(
            "GET", "/metrics", headers={"Authorization": "Bearer scrape"}
        )
        assert status == 200
        assert 'dispatchkit_requests_rejected_total{reason="unauthorized"} 2.0' in text
        # The ingest token does not open /metrics, nor the metrics token ingest.
        assert guarded.post([1], {"Authorization": "Bearer scrape"}) == 401
        assert guarded.request("GET", "/healthz")[0] == 200  # health stays open
    finally:
        assert guarded.stop() == 0
