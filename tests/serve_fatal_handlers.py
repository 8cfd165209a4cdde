"""Handlers that raise what asyncio lets out of the event loop, for the service tests."""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

#: The payload id on which the handlers below raise.
FATAL_ID = 13


async def exit_on_13(payload: Any) -> None:
    """Raise SystemExit for payload 13; record the id of every other one."""
    if payload["id"] == FATAL_ID:
        raise SystemExit(3)
    await asyncio.sleep(0)
    with open(os.environ["SERVE_TEST_OUT"], "a") as out:
        out.write(json.dumps(payload["id"]) + "\n")


async def interrupt_on_13(payload: Any) -> None:
    """The same with KeyboardInterrupt."""
    if payload["id"] == FATAL_ID:
        raise KeyboardInterrupt
    await exit_on_13(payload)
