"""A plain single-queue ingest server, the baseline for ``dispatchkit serve``.

The Go article's pattern at its simplest in Python: a raw RSGI app on the same
server with the same options (granian, one worker process, uvloop), the same
request decoding, one bounded ``asyncio.Queue`` of payloads and a few consumer
tasks on the event loop that append them to one NDJSON file in batches. No
dispatcher, no threads, no metrics.

    python benchmarks/serve_baseline.py --port 8090 --sink /tmp/baseline

On SIGTERM it stops accepting, drains the queue into the file, prints one JSON
line with its counts on stdout and exits 0.

With ``--bare`` it is the Python server's floor instead: an RSGI app on the same
granian setup that reads the body and answers 202, nothing else (no decoding,
no storing; it counts requests, and reports each as two payloads accepted).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

from granian import Granian

from dispatchkit.service.payloads import BadRequest, decode_request
from dispatchkit.service.server import GRANIAN_OPTIONS

CONSUMERS = 8
BATCH = 512
_ENV = "SERVE_BASELINE"


class Baseline:
    def __init__(self, sink: Path, queue_size: int) -> None:
        sink.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(sink / "segment-000001.ndjson", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        self.queue: asyncio.Queue[bytes] = asyncio.Queue(queue_size)
        self.consumers: list[asyncio.Task[None]] = []
        self.closing = False
        self.accepted = 0
        self.written = 0
        self.buffer: list[bytes] = []

    def __rsgi_init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.consumers = [loop.create_task(self.consume()) for _ in range(CONSUMERS)]

    def __rsgi_del__(self, loop: asyncio.AbstractEventLoop) -> None:
        # Requests still arriving while the queue drains are refused, not lost.
        self.closing = True
        loop.run_until_complete(self.queue.join())
        self.flush()
        os.fsync(self.fd)
        for consumer in self.consumers:
            consumer.cancel()
        print(json.dumps({"accepted": self.accepted, "lines_written": self.written}), flush=True)

    async def __rsgi__(self, scope: Any, protocol: Any) -> None:
        status, answer = self.ingest(await protocol())
        protocol.response_bytes(status, [("content-type", "application/json")], answer)

    def ingest(self, body: bytes) -> tuple[int, bytes]:
        try:
            _, lines = decode_request(body)
        except BadRequest as exc:
            return exc.status, json.dumps({"error": exc.message}).encode()
        if self.closing or self.queue.maxsize - self.queue.qsize() < len(lines):
            return 503, b'{"error":"queue full"}'
        for line in lines:
            self.queue.put_nowait(line)
        self.accepted += len(lines)
        return 202, b'{"accepted":%d}' % len(lines)

    async def consume(self) -> None:
        while True:
            line = await self.queue.get()
            self.buffer.append(line)
            if len(self.buffer) >= BATCH:
                self.flush()
            self.queue.task_done()

    def flush(self) -> None:
        if self.buffer:
            os.write(self.fd, b"\n".join(self.buffer) + b"\n")
            self.written += len(self.buffer)
            self.buffer = []


class Floor:
    """Reads the body, answers 202: what granian and RSGI cost, and nothing of ours."""

    def __init__(self, payloads_per_request: int) -> None:
        self.requests = 0
        self.payloads_per_request = payloads_per_request

    def __rsgi_init__(self, loop: asyncio.AbstractEventLoop) -> None:
        pass

    def __rsgi_del__(self, loop: asyncio.AbstractEventLoop) -> None:
        accepted = self.requests * self.payloads_per_request
        print(json.dumps({"accepted": accepted, "lines_written": 0}), flush=True)

    async def __rsgi__(self, scope: Any, protocol: Any) -> None:
        await protocol()
        self.requests += 1
        protocol.response_bytes(202, [("content-type", "application/json")], b'{"accepted":2}')


def create() -> Baseline | Floor:
    """The app, built in granian's worker process."""
    settings = json.loads(os.environ[_ENV])
    if settings["bare"]:
        return Floor(2)
    return Baseline(Path(settings["sink"]), settings["queue_size"])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--sink", type=Path, required=True)
    parser.add_argument("--queue-size", type=int, default=8192)
    parser.add_argument("--bare", action="store_true", help="the floor: read, answer 202")
    args = parser.parse_args()
    os.environ[_ENV] = json.dumps(
        {"sink": str(args.sink), "queue_size": args.queue_size, "bare": args.bare}
    )
    sys.path.insert(0, str(Path(__file__).parent))
    Granian(
        "serve_baseline:create",
        address="127.0.0.1",
        port=args.port,
        **GRANIAN_OPTIONS,
    ).serve()
