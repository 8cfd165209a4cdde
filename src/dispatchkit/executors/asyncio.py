"""Asyncio workers: each worker is a task looping over its inbox.

    await submit/map/dispatch ──put──▶ AsyncInbox[i] ──get──▶ worker task i ──▶ message

The tasks are owned by the front end's ``TaskGroup`` (every task has an
owner); with the pull strategy every task reads the same shared inbox.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from dispatchkit._async_inbox import AsyncInbox
from dispatchkit.core import WorkerState

__all__ = ["AsyncWorkerPool", "work"]

#: Plain-function messages a worker runs back to back before it lets the
#: event loop run other tasks (an HTTP server's requests, say).
YIELD_EVERY = 64


async def work(inbox: AsyncInbox[Any], state: WorkerState) -> None:
    """The worker loop: run messages until the inbox is closed and drained."""
    state.task = asyncio.current_task()
    ran = 0  # plain-function messages run since the loop last had a turn
    while True:
        message = inbox.get_nowait()
        if message is None:
            ran = 0
            message = await inbox.get()
            if message is None:
                return
        if not message.inline:
            await message._arun(state)
        elif (pending := message.run(state)) is not None:
            await pending
        else:
            ran += 1
            if ran >= YIELD_EVERY:
                ran = 0
                await asyncio.sleep(0)


class AsyncWorkerPool:
    """One task per worker, created in the owner's ``TaskGroup``."""

    def __init__(self, inboxes: Sequence[AsyncInbox[Any]], states: Sequence[WorkerState]) -> None:
        if len(inboxes) != len(states):
            raise ValueError("one inbox per worker state is needed")
        self._inboxes = list(inboxes)
        self._states = list(states)
        self.tasks: list[asyncio.Task[None]] = []

    def start(self, group: asyncio.TaskGroup) -> None:
        """Start every worker task in ``group``."""
        for inbox, state in zip(self._inboxes, self._states, strict=True):
            self.tasks.append(group.create_task(work(inbox, state)))

    async def join(self, timeout: float | None = None) -> bool:
        """Wait for every worker task to end; False if some still run after ``timeout``."""
        if not self.tasks:
            return True
        _, pending = await asyncio.wait(self.tasks, timeout=timeout)
        return not pending

    def kill(self) -> bool:
        """Cancel every worker task (a stop: their running jobs end cancelled)."""
        for task in self.tasks:
            task.cancel()
        return True

    def alive(self) -> int:
        return sum(not task.done() for task in self.tasks)
