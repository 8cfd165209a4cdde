"""An ``AsyncDispatcher`` for blocking callers: held by one owner task on a loop in a thread.

    caller thread ──run_coroutine_threadsafe──▶ loop thread: owner task ``async with dispatcher``
         └── leaving the block sets ``release`` ──▶ the owner leaves ``async with`` (a drain)

Both blocking faces of an ``AsyncDispatcher`` (the kit's target and the test
harness) run it this way, since its TaskGroup must be entered and left by one task.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from dispatchkit.async_dispatcher import AsyncDispatcher

__all__ = ["owned_on_loop"]


@contextmanager
def owned_on_loop(
    dispatcher: AsyncDispatcher, *, name: str, stop_first: bool = False
) -> Iterator[asyncio.AbstractEventLoop]:
    """A new event loop in a thread named ``name``, whose owner task holds ``dispatcher`` open.

    Yields the loop once the dispatcher is entered. Leaving releases the owner,
    which stops the dispatcher first if ``stop_first`` (cancelling what is still
    queued: a check that failed half-way leaves queued jobs), then leaves its
    ``async with``; the thread is then waited for (60 s at most).

    Raises:
        RuntimeError: the loop did not start within 10 s.
    """
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    release: asyncio.Event | None = None

    async def owner() -> None:
        nonlocal release
        release = asyncio.Event()
        async with dispatcher:
            ready.set()
            await release.wait()
            if stop_first:
                await dispatcher.stop(cancel=True)

    def run_loop() -> None:
        try:
            loop.run_until_complete(owner())
        finally:
            loop.close()

    thread = threading.Thread(target=run_loop, name=name, daemon=True)
    thread.start()
    if not ready.wait(10):
        raise RuntimeError(f"the event loop in thread {name!r} did not start within 10 s")
    try:
        yield loop
    finally:
        assert release is not None
        loop.call_soon_threadsafe(release.set)
        thread.join(60)
