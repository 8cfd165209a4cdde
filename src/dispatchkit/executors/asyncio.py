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
from dispatchkit._steal import AsyncThief, StealBoard
from dispatchkit.core import WorkerState

__all__ = ["AsyncWorkerPool", "work"]

#: Plain-function messages a worker runs back to back before it lets the
#: event loop run other tasks (an HTTP server's requests, say).
YIELD_EVERY = 64


async def work(inbox: AsyncInbox[Any], state: WorkerState, thief: AsyncThief | None = None) -> None:
    """The worker loop: run messages until the inbox is closed and drained."""
    if thief is not None:
        await _stealing_work(inbox, state, thief)
        return
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


async def _stealing_work(inbox: AsyncInbox[Any], state: WorkerState, thief: AsyncThief) -> None:
    """:func:`work` for a dispatcher that steals: an idle worker takes jobs queued
    behind a busy one (:mod:`dispatchkit._steal`), and a worker marks itself
    ``active`` while it awaits a job, when others may take from its inbox."""
    state.task = asyncio.current_task()
    board = thief.board
    ran = 0
    while True:
        message = inbox.get_nowait()
        if message is None:
            ran = 0
            message = await thief.next_message()
            if message is None:
                return
        if not message.inline:
            state.active = True
            board.busy += 1
            if inbox._items and board.idle:
                board.wake_one(inbox)  # jobs wait behind this one: an idle worker may take them
            try:
                await message._arun(state)
            finally:
                state.active = False
                board.busy -= 1
        elif (pending := message.run(state)) is not None:
            state.active = True
            board.busy += 1
            try:
                await pending
            finally:
                state.active = False
                board.busy -= 1
        else:
            ran += 1
            if ran >= YIELD_EVERY:
                ran = 0
                await asyncio.sleep(0)


class AsyncWorkerPool:
    """One task per worker, created in the owner's ``TaskGroup``."""

    def __init__(
        self,
        inboxes: Sequence[AsyncInbox[Any]],
        states: Sequence[WorkerState],
        steal: bool = False,
    ) -> None:
        """``steal``: idle workers take jobs queued behind busy ones (one inbox each)."""
        if len(inboxes) != len(states):
            raise ValueError("one inbox per worker state is needed")
        self._inboxes = list(inboxes)
        self._states = list(states)
        self._thieves: list[AsyncThief | None] = [None] * len(states)
        if steal:
            board = StealBoard()
            for index, (inbox, state) in enumerate(zip(inboxes, states, strict=True)):
                inbox.watch(board, state)
                self._thieves[index] = AsyncThief(index, inboxes, states, board)
        self.tasks: list[asyncio.Task[None]] = []

    def start(self, group: asyncio.TaskGroup) -> None:
        """Start every worker task in ``group``."""
        for inbox, state, thief in zip(self._inboxes, self._states, self._thieves, strict=True):
            self.tasks.append(group.create_task(work(inbox, state, thief)))

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
