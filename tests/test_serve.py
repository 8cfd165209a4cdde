"""``dispatchkit serve`` end to end: a real server process on a loopback port."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.serve_support import (
    Server,
    kill_leftovers,
    payload_body,
    sink_ids,
    start_server,
    with_tests_on_path,
)

pytestmark = pytest.mark.timeout(60)

GOOD = payload_body([1, 2])


def nested(levels: int) -> bytes:
    """A body ``levels`` deep: its object, ``payloads``, then nested payload objects."""
    inner = b'{"a":' * (levels - 3) + b"{}" + b"}" * (levels - 3)
    return b'{"version": "1", "token": "t", "request_id": "r", "payloads": [%s]}' % inner


@pytest.fixture(autouse=True, scope="module")
def no_leftover_servers() -> Iterator[None]:
    yield
    kill_leftovers()


@pytest.fixture(scope="module", params=["rsgi", "asgi"])
def server(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Server]:
    """One server per interface: both must answer alike."""
    tmp = tmp_path_factory.mktemp("serve")
    running = start_server(
        tmp, "--sink", str(tmp / "sink"), "--max-body", "4096", "--interface", request.param
    )
    yield running
    assert running.stop() == 0


def test_accepts_payloads_and_stores_each_as_one_line(tmp_path: Path) -> None:
    sink = tmp_path / "sink"
    server = start_server(tmp_path, "--sink", str(sink), "--fsync-interval", "60")
    pretty = json.dumps(
        {"version": "1", "token": "t", "request_id": "abc", "payloads": [{"id": 7, "n": [1, 2]}]},
        indent=2,
    ).encode()
    status, headers, body = server.request("POST", "/v1/payloads", pretty)
    assert (status, body) == (202, {"accepted": 1, "request_id": "abc"})
    assert headers["content-type"] == "application/json"
    assert server.post([8, 9]) == 202
    assert server.stop() == 0
    lines = [
        json.loads(line) for line in (sink / "segment-000001.ndjson").read_bytes().splitlines()
    ]
    assert lines == [
        {"id": 7, "n": [1, 2]},
        {"id": 8, "data": "x" * 20},
        {"id": 9, "data": "x" * 20},
    ]
    stopped = [e for e in server.log_entries() if e["message"] == "stopped"]
    assert stopped[0]["accepted"] == stopped[0]["lines_written"] == 3
    assert "succeeded" not in stopped[0]  # no payload job runs: the requests wrote the lines


BAD_INPUT = [
    ("POST", "/v1/payloads", b"{not json", 400, "malformed JSON"),
    (
        "POST",
        "/v1/payloads",
        b'{"version": "1", "token": "t", "request_id": "r", "payloads": [{"a": "\xff"}]}',
        400,
        "not valid UTF-8",
    ),
    (
        "POST",
        "/v1/payloads",
        b'{"version": "1", "token": "t", "request_id": "r", "payloads": [{"a": '
        + b"[" * 1800
        + b"]" * 1800
        + b"}]}",
        400,
        "nested too deeply",
    ),
    ("POST", "/v1/payloads", nested(65), 400, "more than 64 levels"),  # --max-depth, default
    ("POST", "/v1/payloads", b"", 400, "malformed JSON: the body is empty"),
    ("POST", "/v1/payloads", b"[1, 2]", 422, "Expected `object`"),
    ("POST", "/v1/payloads", b'{"version": 1}', 422, "$.version"),
    ("POST", "/v1/payloads", b'{"version": "1", "token": "t", "request_id": "r"}', 422, "payloads"),
    (
        "POST",
        "/v1/payloads",
        b'{"version": "1", "token": "t", "request_id": 5, "payloads": [{}]}',
        422,
        "$.request_id",
    ),
    (
        "POST",
        "/v1/payloads",
        b'{"version": "1", "token": "t", "request_id": "r", "payloads": {}}',
        422,
        "$.payloads",
    ),
    (
        "POST",
        "/v1/payloads",
        b'{"version": "1", "token": "t", "request_id": "r", "payloads": [{}, 3]}',
        422,
        "$.payloads[1]",
    ),
    (
        "POST",
        "/v1/payloads",
        b'{"version": "1", "token": "t", "request_id": "r", "payloads": []}',
        422,
        "must not be empty",
    ),
    ("POST", "/v1/payloads", b'{"payloads": [' + b"{}," * 3000 + b"{}]}", 413, "larger than 4096"),
    ("GET", "/v1/payloads", None, 405, "use POST"),
    ("PUT", "/v1/payloads", GOOD, 405, "use POST"),
    ("POST", "/healthz", GOOD, 405, "use GET"),
    ("GET", "/v2/payloads", None, 404, "no such path"),
    ("POST", "/", GOOD, 404, "no such path"),
]


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "message"),
    BAD_INPUT,
    ids=[f"{row[3]}-{i}" for i, row in enumerate(BAD_INPUT)],
)
def test_bad_input_gets_a_json_error(
    server: Server, method: str, path: str, body: bytes | None, status: int, message: str
) -> None:
    got, headers, answer = server.request(method, path, body)
    assert got == status
    assert headers["content-type"] == "application/json"
    assert message in answer["error"]
    if status == 405:
        assert headers["allow"] in ("GET", "POST")


def test_a_body_at_the_nesting_limit_is_accepted(server: Server) -> None:
    status, _, body = server.request("POST", "/v1/payloads", nested(64))
    assert (status, body["accepted"]) == (202, 1)


def test_max_depth_sets_the_nesting_limit(tmp_path: Path) -> None:
    server = start_server(tmp_path, "--sink", str(tmp_path / "s"), "--max-depth", "5")
    try:
        assert server.request("POST", "/v1/payloads", nested(5))[0] == 202
        status, _, body = server.request("POST", "/v1/payloads", nested(6))
        assert status == 400
        assert "more than 5 levels" in body["error"]
    finally:
        assert server.stop() == 0


def test_a_chunked_body_is_read_and_limited_as_it_comes(server: Server) -> None:
    # No content-length: the limit is checked while the chunks arrive.
    half = len(GOOD) // 2
    status, _, body = server.request("POST", "/v1/payloads", [GOOD[:half], GOOD[half:]])
    assert (status, body["accepted"]) == (202, 2)
    status, _, body = server.request("POST", "/v1/payloads", [b"x" * 3000] * 2)
    assert status == 413
    assert "larger than 4096" in body["error"]


def test_the_server_still_works_after_bad_input(server: Server) -> None:
    for method, path, body, _, _ in BAD_INPUT:
        server.request(method, path, body)
    assert server.post([1, 2]) == 202
    status, _, health = server.request("GET", "/healthz")
    assert (status, health) == (200, {"status": "ok"})


def test_metrics_count_accepted_and_rejected(server: Server) -> None:
    server.request("POST", "/v1/payloads", b"{oops")
    assert server.post([1, 2, 3]) == 202
    status, headers, text = server.request("GET", "/metrics")
    assert status == 200
    assert headers["content-type"].startswith("text/plain")
    values = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }
    assert values["dispatchkit_payloads_accepted_total"] >= 3
    assert values['dispatchkit_requests_rejected_total{reason="malformed"}'] >= 1
    assert values["dispatchkit_request_duration_seconds_count"] >= 2
    assert "dispatchkit_queue_depth" in values
    assert values["dispatchkit_jobs_succeeded_total"] >= 0


def test_bearer_token_is_required_when_set(tmp_path: Path) -> None:
    server = start_server(
        tmp_path,
        "--sink",
        str(tmp_path / "s"),
        "--access-log",
        env={"DISPATCHKIT_TOKEN": "s3cret"},
    )
    status, headers, body = server.request("POST", "/v1/payloads", GOOD)
    assert status == 401
    assert headers["www-authenticate"] == "Bearer"
    assert "token" in body["error"]
    assert server.post([1], {"Authorization": "Bearer wrong"}) == 401
    assert server.post([1], {"Authorization": "s3cret"}) == 401
    assert server.post([1], {"Authorization": "Bearer s3cret"}) == 202
    assert server.stop() == 0
    assert sink_ids(tmp_path / "s") == [1]
    access = [e for e in server.log_entries() if e["message"] == "request" and e["status"] != 200]
    assert [e["status"] for e in access] == [401, 401, 401, 202]
    assert access[0]["path"] == "/v1/payloads"
    assert all("s3cret" not in json.dumps(e) for e in server.log_entries())


@pytest.mark.parametrize("handler", ["serve_handlers:slow", "serve_handlers:slow_async"])
def test_full_queue_gives_503_and_every_202_is_persisted(tmp_path: Path, handler: str) -> None:
    out = tmp_path / "handled.txt"
    server = start_server(
        tmp_path,
        "--handler",
        handler,
        "--workers",
        "1",
        "--queue-size",
        "4",
        env={"SERVE_TEST_OUT": str(out)},
    )
    statuses: list[int] = []
    lock = threading.Lock()

    def client(base: int) -> None:
        for n in range(15):
            status = server.post([base + 2 * n, base + 2 * n + 1])
            with lock:
                statuses.append(status)

    threads = [threading.Thread(target=client, args=(1000 * t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert set(statuses) == {202, 503}
    status, _, body = server.request("POST", "/v1/payloads", payload_body(range(5)))
    assert status == 413  # more payloads than the queue could ever hold
    assert "at most 4" in body["error"]
    assert server.stop() == 0
    handled = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(handled) == sorted(server.accepted)


def test_one_request_may_fill_the_shared_queue_of_pull(tmp_path: Path) -> None:
    server = start_server(
        tmp_path, "--sink", str(tmp_path / "s"), "--workers", "2", "--queue-size", "4"
    )
    assert server.post(list(range(8))) == 202  # pull: one queue of 2 x 4 jobs
    status, _, body = server.request("POST", "/v1/payloads", payload_body(range(9)))
    assert status == 413
    assert "at most 8" in body["error"]
    assert server.stop() == 0
    assert sorted(sink_ids(tmp_path / "s")) == list(range(8))


def test_retry_after_on_503(tmp_path: Path) -> None:
    out = tmp_path / "handled.txt"
    server = start_server(
        tmp_path,
        "--handler",
        "serve_handlers:slow",
        "--workers",
        "1",
        "--queue-size",
        "2",
        env={"SERVE_TEST_OUT": str(out)},
    )
    answers = [server.request("POST", "/v1/payloads", payload_body([i, i])) for i in range(4)]
    refused = [a for a in answers if a[0] == 503]
    assert refused, [a[0] for a in answers]
    assert refused[0][1]["retry-after"] == "1"
    assert "queue full" in refused[0][2]["error"]
    assert server.stop() == 0


@pytest.mark.parametrize(
    ("sig", "interface", "executor"),
    [
        (signal.SIGTERM, "rsgi", "async"),
        (signal.SIGINT, "rsgi", "async"),
        (signal.SIGTERM, "asgi", "async"),
        (signal.SIGTERM, "rsgi", "thread"),
        (signal.SIGINT, "asgi", "thread"),
    ],
)
def test_signal_drains_every_accepted_payload_into_the_sink(
    tmp_path: Path, sig: signal.Signals, interface: str, executor: str
) -> None:
    sink = tmp_path / "sink"
    # A long fsync interval: the drain itself must write and flush what is queued.
    server = start_server(
        tmp_path,
        "--sink",
        str(sink),
        "--fsync-interval",
        "60",
        "--segment-bytes",
        "2000",
        "--interface",
        interface,
        "--executor",
        executor,
    )
    assert server.listening()["executor"] == executor
    stop = threading.Event()

    def client(base: int) -> None:
        n = 0
        while not stop.is_set():
            try:
                server.post([base + n, base + n + 1])
            except OSError:
                return  # the server has stopped listening
            n += 2

    threads = [threading.Thread(target=client, args=(10**6 * t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    while len(server.accepted) < 400:
        threading.Event().wait(0.01)
    assert server.stop(sig) == 0
    stop.set()
    for thread in threads:
        thread.join()
    stored = sink_ids(sink)
    assert sorted(stored) == sorted(server.accepted)
    assert len(list(sink.glob("segment-*.ndjson"))) > 1  # rotated by size


def test_a_plain_handler_returning_coroutines_runs_on_asyncio_workers(tmp_path: Path) -> None:
    out = tmp_path / "handled.txt"
    server = start_server(
        tmp_path,
        "--handler",
        "serve_handlers:returns_coroutine",
        "--executor",
        "async",
        env={"SERVE_TEST_OUT": str(out)},
    )
    assert server.post([1, 2]) == 202
    assert server.stop() == 0
    assert sorted(json.loads(line) for line in out.read_text().splitlines()) == [1, 2]
    assert [e["failed"] for e in server.log_entries() if e["message"] == "stopped"] == [0]


def test_failing_handler_counts_failures_and_keeps_serving(tmp_path: Path) -> None:
    server = start_server(tmp_path, "--handler", "serve_handlers:fail")
    assert server.post([1, 2]) == 202
    assert server.post([3]) == 202
    assert server.stop() == 0  # failed jobs are counted and logged; the drain was clean
    entries = server.log_entries()
    assert sum(e["message"] == "payload job failed" for e in entries) == 3
    assert [e["failed"] for e in entries if e["message"] == "stopped"] == [3]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dispatchkit", "serve", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={**os.environ, "PYTHONPATH": with_tests_on_path()},
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "--sink DIR is required"),
        (("--handler", "no_such_module_xyz:f"), "cannot import handler module"),
        (("--handler", "json"), "package.module:function"),
        (("--sink", "s", "--port", "70000"), "argument --port: must be between"),
        (("--sink", "s", "--strategy", "fastest"), "strategy"),
        (
            ("--sink", "s", "--strategy", "pull,batch"),
            "argument --strategy: takes only one strategy",
        ),
        (("--sink", "s", "--fsync-interval", "0"), "argument --fsync-interval: must be"),
        (("--sink", "s", "--fsync-interval", "inf"), "argument --fsync-interval: must be"),
        (("--sink", "s", "--interface", "wsgi"), "--interface"),
        (("--sink", "s", "--max-depth", "2"), "argument --max-depth: must be between 3 and 512"),
        (("--sink", "s", "--executor", "process"), "--executor"),
        (("--sink", "s", "--ack", "eventually"), "argument --ack: invalid choice"),
        (("--sink", "s", "--processes", "0"), "argument --processes: must be between 1"),
        (("--sink", "s", "--processes", "some"), "argument --processes: must be a whole number"),
        (
            ("--handler", "serve_handlers:slow_async", "--executor", "thread"),
            "is a coroutine function",
        ),
    ],
)
def test_bad_command_line_gives_one_line_and_exit_2(args: tuple[str, ...], message: str) -> None:
    result = _cli(*args)
    assert result.returncode == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_sink_directory_that_takes_no_file_is_one_line_and_exit_2(tmp_path: Path) -> None:
    # Found before the worker processes start (each would die opening its first segment):
    # a path under a file cannot be created; /proc/self is a directory that refuses files,
    # whoever runs the test (root included).
    (tmp_path / "a-file").write_text("")
    for sink in (tmp_path / "a-file" / "data", Path("/proc/self")):
        result = _cli("--sink", str(sink), "--port", "0")
        assert result.returncode == 2
        [line] = result.stderr.strip().splitlines()
        assert line.startswith(
            f"dispatchkit serve: error: --sink {sink}: cannot write segments there: [Errno "
        )


def test_the_console_script_finds_a_handler_in_the_current_directory(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "dispatchkit"
    if not script.exists():
        pytest.skip("the dispatchkit console script is not installed beside this Python")
    (tmp_path / "myjobs.py").write_text("def store(payload):\n    pass\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run(
        [str(script), "serve", "--handler", "myjobs:nope"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    # Imported from the current directory: only the missing function is reported.
    assert result.returncode == 2
    assert "myjobs has no 'nope'" in result.stderr


def test_a_busy_port_is_one_line_and_exit_1(tmp_path: Path) -> None:
    server = start_server(tmp_path, "--sink", str(tmp_path / "a"))
    try:
        result = _cli("--sink", str(tmp_path / "b"), "--port", str(server.port))
    finally:
        assert server.stop() == 0
    assert result.returncode == 1
    assert "dispatchkit serve: error:" in result.stderr.splitlines()[-1]


def test_a_lone_payload_runs_at_once_not_at_shutdown(tmp_path: Path) -> None:
    out = tmp_path / "handled.txt"
    server = start_server(
        tmp_path, "--handler", "serve_handlers:slow", env={"SERVE_TEST_OUT": str(out)}
    )
    try:
        assert server.post([42]) == 202
        deadline = time.monotonic() + 5
        while not (out.exists() and out.read_text()) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert out.read_text() == "42\n"  # the wake-up timer woke a sleeping worker
    finally:
        assert server.stop() == 0
