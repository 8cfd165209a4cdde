"""Job functions for tests that run in worker processes: importable, picklable."""

from __future__ import annotations

import os
import time
from pathlib import Path

_initialized: list[str] = []


def square(x: int) -> int:
    return x * x


def flaky(x: int) -> int:
    if x % 3 == 0:
        raise ValueError(x)
    return x


def pid(_: object = None) -> int:
    return os.getpid()


def sleep_then(seconds: float, value: object = None) -> object:
    time.sleep(seconds)
    return value


def exit_now(code: int) -> None:
    os._exit(code)


def record_pid_and_sleep(path: str, seconds: float) -> int:
    """Write our pid where the test can find it, then sleep (to be killed)."""
    Path(path).write_text(str(os.getpid()))
    time.sleep(seconds)
    return os.getpid()


def fail_until(path: str, failures: int) -> int:
    """Fail the first ``failures`` calls (counted in a file), then return the count."""
    counter = Path(path)
    calls = int(counter.read_text()) + 1 if counter.exists() else 1
    counter.write_text(str(calls))
    if calls <= failures:
        raise ConnectionError(f"call {calls} fails")
    return calls


def die_on_first_call(path: str) -> str:
    """Die (as if killed) the first time, succeed when retried."""
    marker = Path(path)
    if not marker.exists():
        marker.write_text("died once")
        os._exit(9)
    return "survived"


def initialize(tag: str) -> None:
    _initialized.append(tag)


def initialize_or_fail(log: str, failures: int, successes: int = 0) -> None:
    """An initializer that logs each call to ``log``: the first ``successes`` calls
    pass, the ``failures`` after them raise (-1: all of them), the rest pass."""
    with open(log, "a") as out:
        out.write(f"{os.getpid()}\n")
    calls = Path(log).read_text().count("\n")
    if calls > successes and (failures < 0 or calls <= successes + failures):
        raise ValueError("not set up yet")


def initialized(_: object = None) -> list[str]:
    return list(_initialized)


class Unpicklable(Exception):
    def __init__(self, resource: object) -> None:
        super().__init__("holds an unpicklable resource")
        self.resource = resource

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("cannot pickle this error")


def raise_unpicklable(_: object = None) -> None:
    raise Unpicklable(lambda: None)


def return_unpicklable(_: object = None) -> object:
    return lambda: None
