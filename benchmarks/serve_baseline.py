"""A plain single-queue ingest server, the baseline for ``dispatchkit serve``.

The Go article's pattern at its simplest in Python: a raw ASGI app on the same
server (uvicorn, uvloop, httptools), the same request decoding, one bounded
``asyncio.Queue`` of payloads and a few consumer tasks on the event loop that
append them to one NDJSON file in batches. No dispatcher, no threads, no metrics.

    python benchmarks/serve_baseline.py --port 8090 --sink /tmp/baseline

On SIGTERM it stops accepting, drains the queue into the file, prints one JSON
line with its counts on stdout and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
from pathlib import Path
from typing import Any

import uvicorn

from dispatchkit.service.payloads import BadRequest, decode_request

CONSUMERS = 8
BATCH = 512


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
        if scope["type"] != "http":
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


async def main(port: int, sink: Path, queue_size: int) -> None:
    app = Baseline(sink, queue_size)
    app.queue = asyncio.Queue(queue_size)
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        loop="none",
        http="httptools",
        lifespan="off",
        access_log=False,
        log_level="warning",
        server_header=False,
        date_header=False,
    )
    server = uvicorn.Server(config)
    # uvicorn re-raises the signal it stopped on once it is done: let that be a no-op,
    # so the drain below runs and the exit is clean.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    async with asyncio.TaskGroup() as group:
        consumers = [group.create_task(app.consume()) for _ in range(CONSUMERS)]
        try:
            await server.serve()
        finally:
            await app.queue.join()
            app.flush()
            os.fsync(app.fd)
            for consumer in consumers:
                consumer.cancel()
    print(json.dumps({"accepted": app.accepted, "lines_written": app.written}), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--sink", type=Path, required=True)
    parser.add_argument("--queue-size", type=int, default=8192)
    args = parser.parse_args()
    import uvloop

    uvloop.run(main(args.port, args.sink, args.queue_size))
