"""Decoding and checking a request body, without evaluating any payload.

Payloads are kept as the raw JSON text the client sent (``msgspec.Raw``): the
sink stores them as they are, and only a user handler decodes them, in a worker.
"""

from __future__ import annotations

import re
from array import array
from itertools import accumulate
from typing import Final

import msgspec

from dispatchkit.errors import DispatchError

from .config import DEFAULT_MAX_DEPTH

__all__ = ["BadRequest", "Request", "decode_request", "depth"]

#: Bytes that may open a JSON object (msgspec strips leading whitespace from Raw).
_OBJECT_START: Final = 0x7B  # "{"

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


def depth(body: bytes) -> int:
    """The deepest nesting of arrays and objects in ``body``, outside its strings.

    Counted on the raw bytes, without decoding: an opening bracket is one level
    down, a closing one a level up (whether they match is the decoder's
    business). A string left open counts its brackets, which errs on the deep side.
    """
    brackets = _STRING.sub(b"", body).translate(_STEPS, _NOT_BRACKETS)
    return max(accumulate(array("b", brackets), initial=0))


def decode_request(body: bytes, max_depth: int = DEFAULT_MAX_DEPTH) -> tuple[str, list[bytes]]:
    """Return the request id and each payload as one line of JSON text.

    Args:
        body: the request body.
        max_depth: deepest nesting of arrays and objects accepted (see
            :data:`DEFAULT_MAX_DEPTH`), checked before decoding.

    Raises:
        BadRequest: 400 for malformed JSON or a body nested deeper than
            ``max_depth``, 422 for a wrong shape or type (the message names the field).
    """
    # Counting brackets is cheap; only a body with more of them than the limit is scanned.
    if body.count(b"[") + body.count(b"{") > max_depth and depth(body) > max_depth:
        raise BadRequest(
            400,
            "too_deep",
            f"JSON nested too deeply: more than {max_depth} levels of arrays and objects",
        )
    try:
        request = _decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise BadRequest(422, "invalid", f"invalid request: {exc}") from None
    except msgspec.DecodeError as exc:
        raise BadRequest(400, "malformed", f"malformed JSON: {exc}") from None
    except RecursionError:  # not within config.MAX_MAX_DEPTH; a client error all the same
        raise BadRequest(400, "too_deep", "JSON nested too deeply") from None
    except UnicodeDecodeError:
        raise BadRequest(400, "malformed", "malformed JSON: not valid UTF-8") from None
    payloads = request.payloads
    if not payloads:
        raise BadRequest(422, "invalid", "invalid request: `$.payloads` must not be empty")
    lines: list[bytes] = []
    for index, raw in enumerate(payloads):
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
        lines.append(text)
    return request.request_id, lines
