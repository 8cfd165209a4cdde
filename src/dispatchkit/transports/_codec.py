"""How jobs and outcomes are encoded on the wire: msgpack, never pickle.

A job entry is ``[job_id, name, args, kwargs, reply_to, key]``; an outcome is
``[job_id, ok, value_or_error, worker, attempts]`` where a failure's error is
``[type_name, message, traceback]``. Tuples come back as lists, as in JSON.
"""

from __future__ import annotations

import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from dispatchkit.errors import TransportUnavailable

try:
    import msgpack
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise TransportUnavailable("encoding jobs needs msgpack: install dispatchkit[redis]") from exc

__all__ = [
    "CHUNK_JOB",
    "EncodedJob",
    "decode_job",
    "decode_outcome",
    "encode_job",
    "encode_outcome",
    "error_info",
]

#: The name of a chunk entry: ``args`` is ``[job name, [arguments of each job, ...]]``
#: and its outcome ``[[ok, value or error], ...]``: many jobs, one entry (issue 6).
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


def encode_job(
    job_id: int,
    name: str,
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
    reply_to: str,
    key: Any = None,
) -> bytes:
    """Encode a job.

    Raises:
        TypeError: an argument msgpack cannot encode (only plain data travels).
    """
    try:
        data: bytes = msgpack.packb(
            [job_id, name, args, dict(kwargs), reply_to, key], use_bin_type=True
        )
    except (TypeError, ValueError, OverflowError) as exc:
        raise TypeError(f"the arguments of job {name!r} cannot be sent: {exc}") from None
    return data


def decode_job(payload: bytes) -> EncodedJob:
    """Decode a job entry.

    Raises:
        ValueError: the payload is not a job entry.
    """
    try:
        job_id, name, args, kwargs, reply_to, key = msgpack.unpackb(
            payload, raw=False, strict_map_key=False
        )
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise ValueError(f"not a job entry: {exc}") from None
    if not (
        isinstance(job_id, int)
        and isinstance(name, str)
        and isinstance(args, list)
        and isinstance(kwargs, dict)
        and isinstance(reply_to, str)
    ):
        raise ValueError("not a job entry: wrong field types")
    return EncodedJob(job_id, name, args, kwargs, reply_to, key)


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
