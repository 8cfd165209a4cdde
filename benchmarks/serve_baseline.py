"""A plain single-queue ingest server, the baseline for ``dispatchkit serve``.

The Go article's pattern at its simplest in Python: a raw ASGI app on the same
server (granian, one worker process, uvloop), the same request decoding, one
bounded ``asyncio.Queue`` of payloads and a few consumer tasks on the event
loop that append them to one NDJSON file in batches. No dispatcher, no
threads, no metrics.

    python benchmarks/serve_baseline.py --port 8090 --sink /tmp/baseline

On SIGTERM it stops accepting, drains the queue into the file, prints one JSON
line with its counts on stdout and exits 0.
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
        self.queue_size = queue_size
        self.queue: asyncio.Queue[bytes] | None = None
        self.accepted = 0
        self.written = 0
        self.buffer: list[bytes] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self.lifespan(receive, send)
            return
        message = await receive()
        body = message.get("body", b"")
        while message.get("more_body"):
            message = await receive()
            body += message.get("body", b"")
        status, answer = self.ingest(body)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(answer)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": answer})

    async def lifespan(self, receive: Any, send: Any) -> None:
        await receive()  # startup
        self.queue = asyncio.Queue(self.queue_size)
        async with asyncio.TaskGroup() as group:
            consumers = [group.create_task(self.consume()) for _ in range(CONSUMERS)]
            await send({"type": "lifespan.startup.complete"})
            await receive()  # shutdown
            await self.queue.join()
            self.flush()
            os.fsync(self.fd)
            for consumer in consumers:
                consumer.cancel()
        print(json.dumps({"accepted": self.accepted, "lines_written": self.written}), flush=True)
        await send({"type": "lifespan.shutdown.complete"})

    def ingest(self, body: bytes) -> tuple[int, bytes]:
        assert self.queue is not None
        try:
            _, lines = decode_request(body)
        except BadRequest as exc:
            return exc.status, json.dumps({"error": exc.message}).encode()
        if self.queue.maxsize - self.queue.qsize() < len(lines):
            return 503, b'{"error":"queue full"}'
        for line in lines:
            self.queue.put_nowait(line)
        self.accepted += len(lines)
        return 202, b'{"accepted":%d}' % len(lines)

    async def consume(self) -> None:
        assert self.queue is not None
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


def create() -> Baseline:
    """The app, built in granian's worker process."""
    settings = json.loads(os.environ[_ENV])
    return Baseline(Path(settings["sink"]), settings["queue_size"])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--sink", type=Path, required=True)
    parser.add_argument("--queue-size", type=int, default=8192)
    args = parser.parse_args()
    os.environ[_ENV] = json.dumps({"sink": str(args.sink), "queue_size": args.queue_size})
    sys.path.insert(0, str(Path(__file__).parent))
    Granian(
        "serve_baseline:create",
        address="127.0.0.1",
        port=args.port,
        **GRANIAN_OPTIONS,
    ).serve()
