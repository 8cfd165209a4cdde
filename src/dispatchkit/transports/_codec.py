"""How jobs and outcomes are encoded on the wire: msgpack, never pickle.

A job entry is ``[job_id, name, args, kwargs, reply_to, key]``, followed by
``[timeout, retry]`` when the job has either (``retry``: :func:`policy_fields`); an outcome is
``[job_id, ok, value_or_error, worker, attempts]`` where a failure's error is
``[type_name, message, traceback]``. A results stream also carries *moves*,
``[job_id, stream, entry_id]``: a worker gave the job's entry back unstarted, and
it now waits as that entry (the Redis transport writes them from Lua, with
``cmsgpack``). Tuples come back as lists, as in JSON.
"""

from __future__ import annotations

import importlib
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from dispatchkit.errors import ExtraNotInstalled
from dispatchkit.retry import RetryPolicy

try:
    import msgpack
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ExtraNotInstalled("encoding jobs needs msgpack: install dispatchkit[redis]") from exc

__all__ = [
    "CHUNK_JOB",
    "EncodedJob",
    "Moved",
    "decode_job",
    "decode_options",
    "decode_outcome",
    "decode_reply",
    "encode_job",
    "encode_moved",
    "encode_outcome",
    "error_info",
    "policy_fields",
]

#: The name of a chunk entry: ``args`` is ``[job name, [arguments of each job, ...]]``
#: and its outcome ``[[ok, value or error], ...]``: many jobs, one entry.
CHUNK_JOB: Final = "dispatchkit.chunk"


@dataclass(frozen=True, slots=True)
class EncodedJob:
    """A job as read from the wire."""

    job_id: int
    name: str
    args: list[Any]
    kwargs: dict[str, Any]
    reply_to: str
    key: Any = None
    #: ``[timeout seconds or None, retry policy fields or None]``, or None for neither.
    options: list[Any] | None = None


def policy_fields(policy: RetryPolicy) -> list[Any]:
    """A retry policy as plain data; its exception types go by ``module.qualname``."""
    names = [f"{kind.__module__}.{kind.__qualname__}" for kind in policy.retry_on]
    p = policy
    return [p.max_attempts, p.backoff, p.multiplier, p.max_backoff, p.jitter, names]


def decode_options(options: list[Any]) -> tuple[float | None, RetryPolicy | None]:
    """The timeout and retry policy of a job entry's options.

    Raises:
        LookupError: an exception type of the policy cannot be found here.
        ValueError, TypeError: options that are not a timeout and a policy.
    """
    timeout, fields = options
    if timeout is not None and not (isinstance(timeout, int | float) and timeout > 0):
        raise ValueError(f"a job timeout must be a positive number of seconds, got {timeout!r}")
    if fields is None:
        return timeout, None
    max_attempts, backoff, multiplier, max_backoff, jitter, names = fields
    retry_on = tuple(_exception_type(name) for name in names)
    policy = RetryPolicy(max_attempts, backoff, multiplier, max_backoff, jitter, retry_on)
    return timeout, policy


def _exception_type(name: str) -> type[BaseException]:
    """The exception type named ``module.qualname`` (imported if need be)."""
    parts = name.split(".")
    for split in range(len(parts) - 1, 0, -1):
        try:
            found: Any = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        for attr in parts[split:]:
            found = getattr(found, attr, None)
        if isinstance(found, type) and issubclass(found, BaseException):
            return found
        break
    raise LookupError(f"the retry policy's exception type {name!r} cannot be found here")


def encode_job(
    job_id: int,
    name: str,
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
    reply_to: str,
    key: Any = None,
    timeout: float | None = None,
    retry: RetryPolicy | None = None,
) -> bytes:
    """Encode a job (with its timeout and retry policy, if it has them).

    Raises:
        TypeError: an argument msgpack cannot encode (only plain data travels).
    """
    fields = [job_id, name, args, dict(kwargs), reply_to, key]
    if timeout is not None or retry is not None:
        fields.append([timeout, None if retry is None else policy_fields(retry)])
    try:
        data: bytes = msgpack.packb(fields, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
        raise TypeError(f"the arguments of job {name!r} cannot be sent: {exc}") from None
    return data


def decode_job(payload: bytes) -> EncodedJob:
    """Decode a job entry.

    Raises:
        ValueError: the payload is not a job entry.
    """
    try:
        fields = msgpack.unpackb(payload, raw=False, strict_map_key=False)
        job_id, name, args, kwargs, reply_to, key, *rest = fields
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise ValueError(f"not a job entry: {exc}") from None
    options = rest[0] if len(rest) == 1 else None
    if not (
        isinstance(job_id, int)
        and isinstance(name, str)
        and isinstance(args, list)
        and isinstance(kwargs, dict)
        and isinstance(reply_to, str)
        and len(rest) <= 1
        and (options is None or (isinstance(options, list) and len(options) == 2))
    ):
        raise ValueError("not a job entry: wrong field types")
    return EncodedJob(job_id, name, args, kwargs, reply_to, key, options)


def encode_outcome(job_id: int, ok: bool, value: Any, worker: str, attempts: int) -> bytes:
    """Encode an outcome; a value msgpack cannot encode becomes a failure saying so."""
    if not ok:
        value = error_info(value)
    try:
        data: bytes = msgpack.packb([job_id, ok, value, worker, attempts], use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
        error = TypeError(f"the job's result cannot be sent back: {exc}")
        data = msgpack.packb(
            [job_id, False, error_info(error), worker, attempts], use_bin_type=True
        )
    return data


def decode_outcome(payload: bytes) -> tuple[int, bool, Any, str, int]:
    """Decode an outcome: ``(job_id, ok, value or [type, message, traceback], worker, attempts)``.

    Raises:
        ValueError: the payload is not an outcome.
    """
    try:
        job_id, ok, value, worker, attempts = msgpack.unpackb(
            payload, raw=False, strict_map_key=False
        )
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise ValueError(f"not an outcome: {exc}") from None
    return int(job_id), bool(ok), value, str(worker), int(attempts)


@dataclass(frozen=True, slots=True)
class Moved:
    """A job's entry was given back unstarted: it now waits as ``entry_id`` of ``stream``."""

    job_id: int
    stream: str
    entry_id: str


def encode_moved(job_id: int, stream: str, entry_id: str) -> bytes:
    """Encode a move, as the Redis transport's Lua script does."""
    data: bytes = msgpack.packb([job_id, stream, entry_id], use_bin_type=True)
    return data


def decode_reply(payload: bytes) -> tuple[int, bool, Any, str, int] | Moved:
    """Decode an entry of a results stream: an outcome (as :func:`decode_outcome`) or a move.

    Raises:
        ValueError: the payload is neither.
    """
    try:
        fields = msgpack.unpackb(payload, raw=False, strict_map_key=False)
        if len(fields) == 3:
            job_id, stream, entry_id = fields
            return Moved(int(job_id), str(stream), str(entry_id))
        job_id, ok, value, worker, attempts = fields
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise ValueError(f"not an outcome: {exc}") from None
    return int(job_id), bool(ok), value, str(worker), int(attempts)


def error_info(error: Any) -> list[str]:
    """An exception as ``[type name, message, formatted traceback]``."""
    if isinstance(error, BaseException):
        kind = type(error)
        name = (
            kind.__qualname__
            if kind.__module__ == "builtins"
            else f"{kind.__module__}.{kind.__qualname__}"
        )
        return [name, str(error), "".join(traceback.format_exception(error))]
    return ["Error", str(error), ""]
