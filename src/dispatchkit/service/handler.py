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
    """

    __slots__ = ("_decode", "_handler")

    def __init__(self, handler: Callable[[Any], object]) -> None:
        self._handler = handler
        self._decode = msgspec.json.Decoder().decode

    def __call__(self, line: bytes) -> object:
        value = self._handler(self._decode(line))
        if inspect.isawaitable(value):
            # On a thread nothing would ever await it: the payload would be lost.
            if inspect.iscoroutine(value):
                value.close()
            raise TypeError(
                "the handler returned an awaitable on a worker thread: run it with --executor async"
            )
        return value


def is_coroutine_handler(handler: Callable[[Any], object]) -> bool:
    """Whether calling ``handler`` gives a coroutine (``async def``, or an async ``__call__``)."""
    return inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(
        type(handler).__call__
    )


def handler_job(handler: Callable[[Any], object]) -> Callable[[bytes], object]:
    """The payload job for ``handler``: a coroutine function if the handler is one."""
    if not is_coroutine_handler(handler):
        return HandlerJob(handler)
    decode = msgspec.json.Decoder().decode
    coroutine_handler = cast("Callable[[Any], Awaitable[object]]", handler)

    async def job(line: bytes) -> object:
        return await coroutine_handler(decode(line))

    return job
