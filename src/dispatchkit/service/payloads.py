"""Decoding and checking a request body, without evaluating any payload.

Payloads are kept as the raw JSON text the client sent (``msgspec.Raw``): the
sink stores them as they are, joined into the bytes of one write with a single
copy, and only a user handler decodes them, in a worker.
"""

from __future__ import annotations

import re
from array import array
from itertools import accumulate
from typing import Final, NamedTuple

import msgspec

from dispatchkit.errors import DispatchError

from .config import DEFAULT_MAX_DEPTH

__all__ = ["BadRequest", "Batch", "Request", "decode_batch", "decode_request", "depth"]

#: Bytes that may open a JSON object (msgspec strips leading whitespace from Raw).
_OBJECT_START: Final = 0x7B  # "{"
_NEWLINE: Final = 0x0A
_RETURN: Final = 0x0D

#: A JSON string, escapes included (unrolled: no backtracking per character).
_STRING: Final = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)

#: Brackets to +1 (opening) and -1 (closing, 0xFF as a signed byte); the rest is deleted.
_STEPS: Final = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")
_NOT_BRACKETS: Final = bytes(b for b in range(256) if b not in b"[]{}")


class BadRequest(DispatchError):
    """A request the service refuses, with its HTTP status and a message."""

    def __init__(
        self, status: int, reason: str, message: str, header: tuple[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        #: Short label for the rejected-requests metric.
        self.reason = reason
        self.message = message
        #: One more response header (Retry-After, WWW-Authenticate), if any.
        self.header = header


class Request(msgspec.Struct):
    """The body of ``POST /v1/payloads``."""

    version: str
    token: str
    request_id: str
    payloads: list[msgspec.Raw]


_decoder: Final = msgspec.json.Decoder(Request)
_new_tuple = tuple.__new__


def depth(body: bytes) -> int:
    """The deepest nesting of arrays and objects in ``body``, outside its strings.

    Counted on the raw bytes, without decoding: an opening bracket is one level
    down, a closing one a level up (whether they match is the decoder's
    business). A string left open counts its brackets, which errs on the deep side.
    """
    brackets = _STRING.sub(b"", body).translate(_STEPS, _NOT_BRACKETS)
    return max(accumulate(array("b", brackets), initial=0))


class Batch(NamedTuple):
    """A request's payloads, decoded once: what the sink writes as it is."""

    request_id: str
    #: How many payloads.
    payload_count: int
    #: Each payload as one line of JSON text ending in a newline, in the order sent.
    data: bytes

    def lines(self) -> list[bytes]:
        """Each payload's line, without its newline."""
        return self.data.split(b"\n")[:-1]


def decode_request(body: bytes, max_depth: int = DEFAULT_MAX_DEPTH) -> tuple[str, list[bytes]]:
    """Return the request id and each payload as one line of JSON text.

    :func:`decode_batch`, with the payloads split into lines.

    Raises:
        BadRequest: as :func:`decode_batch`.
    """
    batch = decode_batch(body, max_depth)
    return batch.request_id, batch.lines()


def decode_batch(body: bytes, max_depth: int = DEFAULT_MAX_DEPTH) -> Batch:
    """The request id and the payloads' lines, joined as the sink stores them.

    Args:
        body: the request body.
        max_depth: deepest nesting of arrays and objects accepted (see
            :data:`DEFAULT_MAX_DEPTH`), checked on the raw body before decoding.

    Raises:
        BadRequest: 400 for malformed JSON or a body nested deeper than
            ``max_depth``, 422 for a wrong shape or type (the message names the field).
    """
    # Counting brackets is cheap; only a body with more of them than the limit is scanned.
    # The whole body: nesting in a field the decoder drops or a key given twice counts
    # too, and the decoder never sees more than the limit.
    if body.count(b"[") + body.count(b"{") > max_depth and depth(body) > max_depth:
        raise _too_deep(max_depth)
    try:
        request = _decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise BadRequest(422, "invalid", f"invalid request: {exc}") from None
    except msgspec.DecodeError as exc:
        if not body.strip():
            raise BadRequest(
                400, "malformed", 'malformed JSON: the body is empty (expected {"payloads": [...]})'
            ) from None
        raise BadRequest(400, "malformed", f"malformed JSON: {exc}") from None
    except RecursionError:  # not within config.MAX_MAX_DEPTH; a client error all the same
        raise _too_deep(max_depth) from None
    except UnicodeDecodeError:
        raise BadRequest(400, "malformed", "malformed JSON: not valid UTF-8") from None
    payloads = request.payloads
    count = len(payloads)
    if not count:
        raise BadRequest(422, "invalid", "invalid request: `$.payloads` must not be empty")
    # The payloads' bytes as sent, joined in one copy (a Raw is a view of the body).
    data = b"\n".join(payloads)
    # A body on one line of ASCII holds only valid UTF-8 and no newline of its own,
    # so the lines' newlines are the separators: each payload's first byte follows one.
    # (An int's membership test is a memchr; a one-byte bytes' is a substring search.)
    if (
        body.isascii()
        and _NEWLINE not in body
        and _RETURN not in body
        and data[0] == _OBJECT_START
        and (count == 1 or data.count(b"\n{") == count - 1)
    ):
        return _new_tuple(Batch, (request.request_id, count, data + b"\n"))  # Batch() calls more
    lines = [_line(raw, index) for index, raw in enumerate(payloads)]
    return Batch(request.request_id, count, b"\n".join(lines) + b"\n")


def _too_deep(max_depth: int) -> BadRequest:
    message = f"JSON nested too deeply: more than {max_depth} levels of arrays and objects"
    return BadRequest(400, "too_deep", message)


def _line(raw: msgspec.Raw, index: int) -> bytes:
    """One payload checked and put on one line (what the fast path of a body skips)."""
    text = bytes(raw)
    if text[0] != _OBJECT_START:
        raise BadRequest(
            422, "invalid", f"invalid request: `$.payloads[{index}]` must be an object"
        )
    # Kept as sent, so checked here: the sink must hold valid UTF-8 only.
    if not text.isascii():
        try:
            text.decode()
        except UnicodeDecodeError:
            raise BadRequest(
                400, "malformed", f"malformed JSON: `$.payloads[{index}]` is not valid UTF-8"
            ) from None
    # JSON strings cannot hold a raw newline, so any is whitespace: one line per payload.
    if b"\n" in text or b"\r" in text:
        text = text.replace(b"\n", b" ").replace(b"\r", b" ")
    return text
