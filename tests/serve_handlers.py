"""Payload handlers for the service tests, loaded by the server as ``--handler``."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from typing import Any

_lock = threading.Lock()


def slow(payload: Any) -> None:
    """Take 20 ms, then append the payload's id to the file in SERVE_TEST_OUT."""
    time.sleep(0.02)
    with _lock, open(os.environ["SERVE_TEST_OUT"], "a") as out:
        out.write(json.dumps(payload["id"]) + "\n")


def fail(payload: Any) -> None:
    """Always raise: a failing job must not stop a worker or the server."""
    raise RuntimeError(f"cannot handle {payload!r}")


async def slow_async(payload: Any) -> None:
    """The coroutine twin of :func:`slow`: 20 ms on the event loop, then record."""
    await asyncio.sleep(0.02)
    with open(os.environ["SERVE_TEST_OUT"], "a") as out:
        out.write(json.dumps(payload["id"]) + "\n")


class AsyncRecorder:
    """A handler object whose ``__call__`` is a coroutine function."""

    async def __call__(self, payload: Any) -> None:
        await slow_async(payload)


record_async = AsyncRecorder()


def returns_coroutine(payload: Any) -> object:
    """A plain function that hands back a coroutine: only asyncio workers can run it."""
    return slow_async(payload)
