"""What the sync and async clients share: encoding bodies, decoding answers, the retry rule.

Bodies are encoded with msgspec (floats as the shortest text that reads back to the same
binary64, so nothing is rounded on the way). JSON has no NaN or infinity: msgspec writes
them as ``null``, which the service would read as a *missing* feature, so a body holding
``null`` is checked and a non-finite number is refused here, naming the event and field.
"""

from __future__ import annotations

import email.utils
import math
import random
import time
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import msgspec

from .exceptions import CTRConnectionError, CTRError, CTRTimeoutError, error_for_status
from .results import PredictResult, TrainResult

JSON = "application/json"
NDJSON = "application/x-ndjson"
#: NDJSON upload chunks: big enough that per-chunk overhead vanishes, small enough to stream
STREAM_CHUNK = 1 << 16
MAX_RETRY_AFTER = 30.0

_encoder = msgspec.json.Encoder()


class _TrainAnswer(msgspec.Struct):
    p: list[float]
    accepted: int = 0
    model_version: int = 0


class _PredictAnswer(msgspec.Struct):
    p: list[float]
    uncertainty: list[float] = []
    model_version: int = 0


Events = Iterable[Mapping[str, Any]] | bytes


def encode_events(events: Events) -> bytes:
    """The ``{"events": [...]}`` body; ``bytes`` are taken as an already encoded body."""
    if isinstance(events, bytes | bytearray | memoryview):
        return bytes(events)
    evs = events if isinstance(events, list) else list(events)
    body = _encoder.encode({"events": evs})
    if b"null" in body:
        _check_finite(evs)
    return body


def _check_finite(events: list[Any]) -> None:
    for i, ev in enumerate(events):
        if not isinstance(ev, Mapping):
            continue
        for key in ("label", "weight"):
            v = ev.get(key)
            if isinstance(v, float) and not math.isfinite(v):
                raise ValueError(f"event {i}: {key} is {v!r}; JSON has no NaN or infinity")
        feats = ev.get("features")
        if isinstance(feats, Mapping):
            for name, v in feats.items():
                if isinstance(v, float) and not math.isfinite(v):
                    raise ValueError(f"event {i}: feature {name!r} is {v!r}; JSON has no NaN "
                                     "or infinity (use null or omit it for a missing value)")


def encode_line(item: Mapping[str, Any] | bytes | str) -> bytes:
    """One NDJSON line (with its newline) from an event or an already encoded line."""
    if isinstance(item, str):
        item = item.encode()
    if isinstance(item, bytes | bytearray | memoryview):
        line = bytes(item)
        return line if line.endswith(b"\n") else line + b"\n"
    body = _encoder.encode(item)
    if b"null" in body:
        _check_finite([item])
    return body + b"\n"


class BodyIterator:
    """A stream body from any iterable of events or lines, in chunks of ~64 KiB; ``started``
    tells whether anything was taken from the source (then a retry could not replay it)."""

    def __init__(self, items: Iterable[Any]) -> None:
        self._items = items
        self.started = False

    def __iter__(self) -> Iterator[bytes]:
        self.started = True
        buf: list[bytes] = []
        size = 0
        for item in self._items:
            line = encode_line(item)
            buf.append(line)
            size += len(line)
            if size >= STREAM_CHUNK:
                yield b"".join(buf)
                buf, size = [], 0
        if buf:
            yield b"".join(buf)


class AsyncBodyIterator:
    """``BodyIterator`` over an async or a plain iterable, for ``AsyncCTRClient``."""

    def __init__(self, items: AsyncIterable[Any] | Iterable[Any]) -> None:
        self._items = items
        self.started = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        self.started = True
        buf: list[bytes] = []
        size = 0
        if isinstance(self._items, AsyncIterable):
            async for item in self._items:
                line = encode_line(item)
                buf.append(line)
                size += len(line)
                if size >= STREAM_CHUNK:
                    yield b"".join(buf)
                    buf, size = [], 0
        else:
            for chunk in BodyIterator(self._items):
                yield chunk
            return
        if buf:
            yield b"".join(buf)


class _LaxAnswer(msgspec.Struct):
    p: list[float | None]
    uncertainty: list[float | None] = []
    accepted: int = 0
    model_version: int = 0


def _nan(values: list[float | None]) -> list[float]:
    return [math.nan if v is None else v for v in values]


def _lax(content: bytes) -> _LaxAnswer:
    """A server whose model went non-finite sends NaN as null: read it back as NaN."""
    try:
        return msgspec.json.decode(content, type=_LaxAnswer)
    except msgspec.ValidationError as exc:
        raise CTRError(None, "unexpected answer", str(exc), body=content[:500]) from None


def decode_train(content: bytes) -> TrainResult:
    try:
        a = msgspec.json.decode(content, type=_TrainAnswer)
    except msgspec.ValidationError:
        lax = _lax(content)
        return TrainResult(_nan(lax.p), lax.accepted, lax.model_version)
    return TrainResult(a.p, a.accepted, a.model_version)


def decode_predict(content: bytes) -> PredictResult:
    try:
        a = msgspec.json.decode(content, type=_PredictAnswer)
    except msgspec.ValidationError:
        lax = _lax(content)
        return PredictResult(_nan(lax.p), _nan(lax.uncertainty), lax.model_version)
    return PredictResult(a.p, a.uncertainty, a.model_version)


def decode_json(content: bytes) -> Any:
    return msgspec.json.decode(content)


def retry_after(response: httpx.Response) -> float | None:
    """``Retry-After`` in seconds (delta-seconds or an HTTP date), None if absent or bad."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def problem(response: httpx.Response) -> CTRError:
    """The typed exception for an error response (its body already read)."""
    content = response.content
    decoded: dict[str, Any] | None = None
    try:
        obj = msgspec.json.decode(content) if content else None
        decoded = obj if isinstance(obj, dict) else None
    except msgspec.DecodeError:
        decoded = None
    return error_for_status(response.status_code, decoded,
                            content.decode("utf-8", "replace"), retry_after(response))


def connection_error(exc: httpx.TransportError, method: str, url: str) -> CTRConnectionError:
    """Wrap an httpx transport failure; ``sent`` says whether the server may have the
    request (connect failures and pool waits happen before a byte is written)."""
    sent = not isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)
    cls = CTRTimeoutError if isinstance(exc, httpx.TimeoutException) else CTRConnectionError
    return cls(f"{method} {url}: {type(exc).__name__}: {exc}", sent=sent)


def new_key() -> str:
    """A fresh ``Idempotency-Key`` (128 random bits)."""
    return uuid.uuid4().hex


def request_headers(content_type: str | None, key: str | None) -> dict[str, str] | None:
    headers = {}
    if content_type:
        headers["content-type"] = content_type
    if key:
        headers["idempotency-key"] = key
    return headers or None


def retryable_status(status: int, key: str | None) -> bool:
    """503: not now (nothing learned, or, for a keyed batch, learned and not yet
    durable); 409 for a keyed batch: its first attempt is still being made durable."""
    return status == 503 or (status == 409 and key is not None)


@dataclass(frozen=True)
class RetryPolicy:
    """``retries`` more attempts after the first, sleeping ``backoff * 2**attempt`` seconds
    (times a jitter in [0.5, 1.5), at most ``max_backoff``), or the server's Retry-After if
    that is longer (at most 30 s)."""

    retries: int = 3
    backoff: float = 0.2
    max_backoff: float = 10.0

    def delay(self, attempt: int, server_hint: float | None = None) -> float:
        d = min(self.max_backoff, self.backoff * (2.0 ** attempt)) * random.uniform(0.5, 1.5)
        if server_hint is not None:
            d = max(d, min(server_hint, MAX_RETRY_AFTER))
        return d


def verify_for(url: str) -> bool:
    """Certificate checks for https; none to set up for plain http (building the default
    TLS context costs 0.1 s per client)."""
    return not url.lower().startswith("http://")


def auth_headers(api_key: str | None) -> dict[str, str]:
    headers = {"user-agent": "ctr-client/0.1", "accept": JSON}
    if api_key:
        headers["authorization"] = f"Bearer {api_key}"
    return headers
