"""Request and response bodies: media types (415) and the size limit (413), checked before
a body is read whole; gzip bodies (``Content-Encoding: gzip``, as log shippers send them),
decompressed in bounded steps so the limit holds for the decompressed size (a gzip bomb is a
413 after at most the limit's worth of memory); a deadline for the whole body (408, so a
client sending a byte now and then cannot hold a request open); JSON responses encoded by
msgspec (floats in their shortest form that reads back to the same double, so probabilities
round-trip exactly).

Bodies are read from ASGI ``receive`` (``read_received``): the lean path has no ``Request``
and the FastAPI routes hand theirs over, so both read a body with the same code.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import AsyncIterator, Coroutine, Generator
from typing import Any

import msgspec
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Receive

from .errors import Problem

#: decompressed bytes produced per step of a gzip stream
INFLATE_STEP = 1 << 20

NDJSON_TYPES = ("application/x-ndjson", "application/ndjson", "application/jsonl",
                "application/x-jsonlines")
_CLOSE = {"Connection": "close"}  # do not keep reading a body we refused


def media_type(request: Request) -> str:
    return media_type_of(request.headers.get("content-type"))


def media_type_of(content_type: str | None) -> str:
    """The media type of a Content-Type header value, lower-cased, without parameters."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def check_json(content_type: str | None) -> None:
    """415 unless the Content-Type is application/json or application/*+json."""
    if content_type == "application/json":  # the common case, without parsing
        return
    mt = media_type_of(content_type)
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


def too_large(size: int | None, limit: int, decompressed: bool = False) -> Problem:
    has = f"has {size} bytes" if size is not None else (
        "decompresses to more than that" if decompressed else "is longer than that")
    return Problem(413, "body-too-large",
                   f"the request body {has}; the limit is {limit} bytes (--max-body-bytes)",
                   headers=_CLOSE, limit=limit)


def declared(text: str | None) -> int | None:
    """The byte count of a Content-Length header value (None: no header)."""
    if text is None:
        return None
    if not text.isdigit():
        raise Problem(400, None, f"Content-Length {text!r} is not a byte count",
                      headers=_CLOSE)
    return int(text)


def encoding_of(value: str | None) -> str:
    """``identity`` or ``gzip`` for a Content-Encoding header value; another encoding is a
    415 (nothing is read)."""
    text = (value or "").strip().lower()
    if text in ("", "identity"):
        return "identity"
    if text in ("gzip", "x-gzip"):
        return "gzip"
    raise Problem(415, "unsupported-media-type",
                  f"Content-Encoding {text[:40]!r} is not accepted: send the body as is, or "
                  "gzip-compressed (Content-Encoding: gzip)", headers=_CLOSE)


def content_encoding(request: Request) -> str:
    return encoding_of(request.headers.get("content-encoding"))


def body_timeout(seconds: float, what: str = "the request body") -> Problem:
    return Problem(408, "body-timeout",
                   f"{what} did not arrive within {seconds:g} s (--body-timeout); nothing of "
                   "it was learned", headers=_CLOSE, timeout=seconds)


class Inflater:
    """A gzip stream (one member or several), decompressed at most ``budget`` bytes at a
    time: input that would produce more is held back (``pending``) for the next call, so a
    bomb never costs more memory than the caller allows. Bad gzip is a 400."""

    def __init__(self) -> None:
        self._d = zlib.decompressobj(wbits=31)
        self._held = b""
        self._seen = False

    @property
    def pending(self) -> bool:
        return bool(self._held)

    def feed(self, data: bytes, budget: int = INFLATE_STEP) -> list[bytes]:
        out: list[bytes] = []
        data = self._held + data if self._held else data
        self._seen = self._seen or bool(data)
        try:
            while data and budget > 0:  # (a max_length of 0 would mean no limit)
                if self._d.eof:  # the next member; anything else is an error below
                    self._d = zlib.decompressobj(wbits=31)
                piece = self._d.decompress(data, budget)
                if piece:
                    out.append(piece)
                    budget -= len(piece)
                data = self._d.unused_data if self._d.eof else self._d.unconsumed_tail
        except zlib.error as exc:
            raise Problem(400, None, f"the body is not valid gzip ({exc})",
                          headers=_CLOSE) from None
        self._held = data
        return out

    def finish(self) -> None:
        if self._seen and not self._d.eof:
            raise Problem(400, None, "the gzip body ends before its end", headers=_CLOSE)


async def read_received(receive: Receive, size: int | None, limit: int,
                        encoding: str = "identity", timeout: float | None = None
                        ) -> bytearray:
    """The whole body from ASGI ``receive``, refused with 413 by its declared ``size``
    before reading, or while counting the chunks of a body sent without one (decompressed
    bytes count for a gzip body); 408 if it takes longer than ``timeout`` seconds; a
    client gone mid-body raises ``ClientDisconnect``. A bytearray: the compiled scanner
    reads it in place (an immutable ``bytes`` would be copied once more)."""
    if size is not None and size > limit:
        raise too_large(size, limit)
    reading = _read_gzip(receive, limit) if encoding == "gzip" else \
        _read_plain(receive, size, limit)
    # the common case: the body arrived with the head, and the reader finishes without
    # waiting once; the deadline (a timer armed and cancelled) is for one that waits
    try:
        waiting_on = reading.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    try:
        async with asyncio.timeout(timeout):
            return await _Resumed(reading, waiting_on)
    except TimeoutError:
        raise body_timeout(timeout or 0.0) from None


class _Resumed:
    """Awaits the rest of a coroutine that was started by hand (``coro.send(None)``
    returned ``waiting_on``, what it waits for): the task runs it from there on, its
    cancellation (the deadline's) thrown into it, as ``await coro`` would have."""

    __slots__ = ("coro", "waiting_on")

    def __init__(self, coro: Coroutine[Any, Any, bytearray], waiting_on: Any) -> None:
        self.coro = coro
        self.waiting_on = waiting_on

    def __await__(self) -> Generator[Any, Any, bytearray]:
        coro, waiting_on = self.coro, self.waiting_on
        while True:
            try:
                sent = yield waiting_on
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:
                try:
                    waiting_on = coro.throw(exc)
                except StopIteration as done:
                    return done.value  # type: ignore[no-any-return]
            else:
                try:
                    waiting_on = coro.send(sent)
                except StopIteration as done:
                    return done.value  # type: ignore[no-any-return]


async def _chunks(receive: Receive) -> AsyncIterator[tuple[bytes, bool]]:
    """(chunk, more) of the request body's messages."""
    while True:
        message = await receive()
        kind = message["type"]
        if kind == "http.disconnect":
            raise ClientDisconnect()
        if kind != "http.request":
            continue
        more = message.get("more_body", False)
        yield message.get("body", b""), more
        if not more:
            return


async def _read_plain(receive: Receive, size: int | None, limit: int) -> bytearray:
    buf = bytearray()
    got = 0
    async for chunk, more in _chunks(receive):
        n = len(chunk)
        if size is None:
            if got + n > limit:
                raise too_large(None, limit)
            buf += chunk
        elif got + n > size:  # the server enforces Content-Length; never trust it twice
            raise Problem(400, None, "the body is longer than its Content-Length",
                          headers=_CLOSE)
        elif got == 0 and not more:  # the whole body in one message: the common case, one
            buf = bytearray(chunk)  # copy (no zeroed buffer first)
        else:
            if got == 0:  # the declared size at once, filled in place
                buf = bytearray(size)
            buf[got:got + n] = chunk
        got += n
    del buf[got:]
    return buf


async def _read_gzip(receive: Receive, limit: int) -> bytearray:
    inflater = Inflater()
    out = bytearray()
    async for chunk, _ in _chunks(receive):
        while chunk or inflater.pending:
            for piece in inflater.feed(chunk, limit + 1 - len(out)):
                out += piece
            chunk = b""
            if len(out) > limit:
                raise too_large(None, limit, decompressed=True)
    inflater.finish()
    return out


async def read_body(request: Request, limit: int, timeout: float | None = None) -> bytearray:
    """``read_received`` for a route that has a ``Request``."""
    return await read_received(request.receive, declared(request.headers.get("content-length")),
                               limit, content_encoding(request), timeout)


async def decoded_stream(request: Request) -> AsyncIterator[bytes]:
    """The body's chunks as they arrive, decompressed if gzip (in steps of at most
    ``INFLATE_STEP`` bytes, so memory stays bounded whatever the ratio)."""
    if content_encoding(request) == "identity":
        async for chunk in request.stream():
            yield chunk
        return
    inflater = Inflater()
    async for chunk in request.stream():
        while chunk or inflater.pending:
            for piece in inflater.feed(chunk):
                yield piece
            chunk = b""
    inflater.finish()


def json_response(content: Any, status_code: int = 200) -> Response:
    return Response(msgspec.json.encode(content), status_code=status_code,
                    media_type="application/json")
