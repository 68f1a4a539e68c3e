"""Request and response bodies: media types (415) and the size limit (413), checked before
a body is read whole; JSON responses encoded by msgspec (floats in their shortest form that
reads back to the same double, so probabilities round-trip exactly)."""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from .errors import Problem

NDJSON_TYPES = ("application/x-ndjson", "application/ndjson", "application/jsonl",
                "application/x-jsonlines")
_CLOSE = {"Connection": "close"}  # do not keep reading a body we refused


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def require_json(request: Request) -> None:
    mt = media_type(request)
    if mt != "application/json" and not (mt.startswith("application/") and mt.endswith("+json")):
        raise Problem(415, "unsupported-media-type",
                      f"Content-Type {mt or '(none)'} is not accepted here: send "
                      "application/json")


def require_ndjson(request: Request) -> None:
    mt = media_type(request)
    if mt not in NDJSON_TYPES:
        raise Problem(415, "unsupported-media-type",
                      f"Content-Type {mt or '(none)'} is not accepted here: send "
                      "application/x-ndjson (one JSON event per line)")


def too_large(size: int | None, limit: int) -> Problem:
    has = f"has {size} bytes" if size is not None else "is longer than that"
    return Problem(413, "body-too-large",
                   f"the request body {has}; the limit is {limit} bytes (--max-body-bytes)",
                   headers=_CLOSE, limit=limit)


def declared_length(request: Request) -> int | None:
    text = request.headers.get("content-length")
    if text is None:
        return None
    if not text.isdigit():
        raise Problem(400, None, f"Content-Length {text!r} is not a byte count",
                      headers=_CLOSE)
    return int(text)


async def read_body(request: Request, limit: int) -> bytearray:
    """The whole body, refused with 413 by its Content-Length before reading, or while
    counting the chunks of a body sent without one. A bytearray: the compiled scanner
    reads it in place (an immutable ``bytes`` would be copied once more)."""
    size = declared_length(request)
    if size is not None and size > limit:
        raise too_large(size, limit)
    if size is None:
        buf = bytearray()
        async for chunk in request.stream():
            if len(buf) + len(chunk) > limit:
                raise too_large(None, limit)
            buf += chunk
        return buf
    buf = bytearray(size)
    got = 0
    async for chunk in request.stream():
        n = len(chunk)
        if got + n > size:  # the server enforces Content-Length; never trust it twice
            raise Problem(400, None, "the body is longer than its Content-Length",
                          headers=_CLOSE)
        buf[got:got + n] = chunk
        got += n
    del buf[got:]
    return buf


def json_response(content: Any, status_code: int = 200) -> Response:
    return Response(msgspec.json.encode(content), status_code=status_code,
                    media_type="application/json")
