"""Loading a user handler named ``package.module:function``."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, cast

import msgspec

__all__ = ["HandlerJob", "handler_job", "is_coroutine_handler", "load_handler"]


def load_handler(spec: str) -> Callable[[Any], object]:
    """Import the function named by ``package.module:function``.

    Raises:
        ValueError: the name is malformed, the module cannot be imported, or
            the attribute is missing or not callable.
    """
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise ValueError(f"handler must look like package.module:function, got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # any import failure is the user's input: say which
        raise ValueError(f"cannot import handler module {module_name!r}: {exc}") from None
    target: Any = module
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ValueError(f"handler {spec!r}: {module_name} has no {attribute!r}") from None
    if not callable(target):
        raise ValueError(f"handler {spec!r} is not callable")
    return target  # type: ignore[no-any-return]


class HandlerJob:
    """The job for one payload with a user handler: decode (in the worker), then call.

    The payload is decoded as plain JSON data (dicts, lists, strings, numbers):
    nothing is evaluated or unpickled.

    Args:
        handler: the user's function.
        on_thread: the job runs on a worker thread, where an awaitable the
            handler returns would never be awaited: that fails the job. On an
            asyncio worker the awaitable is returned, and the worker awaits it.
    """

    __slots__ = ("_decode", "_handler", "_on_thread")

    def __init__(self, handler: Callable[[Any], object], *, on_thread: bool = True) -> None:
        self._handler = handler
        self._decode = msgspec.json.Decoder().decode
        self._on_thread = on_thread

    def __call__(self, line: bytes) -> object:
        value = self._handler(self._decode(line))
        if self._on_thread and inspect.isawaitable(value):
            if inspect.iscoroutine(value):
                value.close()  # never awaited: say so once, here, not as a warning later
            raise TypeError(
                "the handler returned an awaitable on a worker thread: run it with --executor async"
            )
        return value


def is_coroutine_handler(handler: Callable[[Any], object]) -> bool:
    """Whether calling ``handler`` gives a coroutine (``async def``, or an async ``__call__``)."""
    return inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(
        type(handler).__call__
    )


def handler_job(handler: Callable[[Any], object], *, on_thread: bool) -> Callable[[bytes], object]:
    """The payload job for ``handler``: a coroutine function if the handler is one.

    ``on_thread`` says the job runs on worker threads (see :class:`HandlerJob`).
    """
    if not is_coroutine_handler(handler):
        return HandlerJob(handler, on_thread=on_thread)
    decode = msgspec.json.Decoder().decode
    coroutine_handler = cast("Callable[[Any], Awaitable[object]]", handler)

    async def job(line: bytes) -> object:
        return await coroutine_handler(decode(line))

    return job
