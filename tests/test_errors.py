"""One error tree: every exception class of dispatchkit inherits DispatchError."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from concurrent.futures import CancelledError

import dispatchkit
from dispatchkit import errors
from dispatchkit.errors import DispatchError


def _exception_classes() -> dict[str, type[BaseException]]:
    """Every exception class defined in dispatchkit, found in any of its modules."""
    found: dict[str, type[BaseException]] = {}
    for info in pkgutil.walk_packages(dispatchkit.__path__, "dispatchkit."):
        if info.name == "dispatchkit.__main__":  # runs the CLI when imported
            continue
        module = importlib.import_module(info.name)
        for obj in vars(module).values():
            if (
                inspect.isclass(obj)
                and issubclass(obj, BaseException)
                and obj.__module__.startswith("dispatchkit")
            ):
                found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return found


def test_every_exception_of_the_package_inherits_dispatch_error() -> None:
    classes = _exception_classes()
    assert set(errors.__all__) <= {name.rpartition(".")[2] for name in classes}
    outside = sorted(name for name, cls in classes.items() if not issubclass(cls, DispatchError))
    assert outside == []


def test_useful_stdlib_bases_are_kept() -> None:
    assert issubclass(errors.NeedsAsyncWorker, TypeError)
    assert issubclass(errors.PayloadNotSendable, ValueError)
    assert issubclass(errors.JobCancelled, CancelledError)
    from dispatchkit.service.sink import SinkFailure

    assert issubclass(SinkFailure, OSError)


def test_one_remote_traceback_type_for_processes_and_remote_workers() -> None:
    from dispatchkit.executors import _child
    from dispatchkit.remote import outcomes

    assert _child.RemoteTraceback is errors.RemoteTraceback
    error = outcomes.remote_error(["ValueError", "boom", "Traceback ...\nValueError: boom\n"])
    assert type(error.__cause__) is errors.RemoteTraceback
    assert "ValueError: boom" in str(error.__cause__)
