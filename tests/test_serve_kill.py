"""A ``kill -9`` of ``dispatchkit serve --sink`` loses no payload it answered 202.

The README says what a 202 means with a sink: with ``--ack durable`` (the
default) the payloads were written and fsynced before the answer; with
``--ack buffered`` written to the OS, so killing every process of the server
keeps them (only a power loss or an OS crash can lose what was not fsynced yet). Real server,
real clients posting over sockets, a real SIGKILL of the main process and of
its worker process at once.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.serve_support import kill_leftovers, payload_body, sink_ids, start_server

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(autouse=True)
def no_leftover_servers() -> Iterator[None]:
    yield
    kill_leftovers()


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(child) for child in (task / "children").read_text().split()]
    return found


@pytest.mark.parametrize(("ack", "processes"), [("durable", "2"), ("buffered", "1")])
def test_a_kill_9_under_load_keeps_every_payload_answered_202(
    tmp_path: Path, ack: str, processes: str
) -> None:
    sink = tmp_path / "sink"
    # The flusher fsyncs rarely: with --ack buffered what is kept must be kept by
    # the write itself; with --ack durable by the fsync each 202 waited for.
    server = start_server(
        tmp_path,
        "--sink", str(sink), "--fsync-interval", "60", "--ack", ack, "--processes", processes,
    )  # fmt: skip
    workers = _children(server.process.pid)
    assert len(workers) == int(processes)
    lock = threading.Lock()
    stop = threading.Event()
    answered = 0

    def client(base: int) -> None:
        nonlocal answered
        n = 0
        while not stop.is_set():
            ids = list(range(base + n, base + n + 3))
            try:
                status, _, _ = server.request("POST", "/v1/payloads", payload_body(ids))
            except OSError:  # the server is gone: this request's answer never came
                return
            if status == 202:
                with lock:
                    server.accepted.extend(ids)
                    answered += 1
            n += 3

    clients = [threading.Thread(target=client, args=(10**6 * c,)) for c in range(4)]
    for thread in clients:
        thread.start()
    deadline = time.monotonic() + 20
    while answered < 300 and time.monotonic() < deadline:
        time.sleep(0.01)
    # The whole server dies at once, in the middle of the load.
    for pid in (*workers, server.process.pid):
        os.kill(pid, signal.SIGKILL)
    server.process.wait(10)
    stop.set()
    for thread in clients:
        thread.join(10)

    assert answered >= 300, "the load never got going"
    stored = sink_ids(sink)
    # Every payload answered 202 is there, exactly once; whatever else is there
    # belongs to requests whose answer the kill cut off, each at most once too.
    assert len(stored) == len(set(stored))
    assert set(server.accepted) <= set(stored)
    for path in sorted(sink.glob("segment-*.ndjson")):
        data = path.read_bytes()
        assert data.endswith(b"\n"), f"{path.name} ends on a partial line"
        for line in data.splitlines():
            assert isinstance(json.loads(line), dict)
