"""``AsyncCTRClient``: the asyncio twin of ``CTRClient`` (same methods, awaited; same
retry rule, see ``sync_client``)."""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from collections.abc import AsyncIterable, Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from ._wire import (
    JSON,
    NDJSON,
    AsyncBodyIterator,
    Events,
    RetryPolicy,
    auth_headers,
    connection_error,
    decode_json,
    decode_predict,
    decode_train,
    encode_events,
    new_key,
    problem,
    request_headers,
    retry_after,
    retryable_status,
    verify_for,
)
from .exceptions import CTRConnectionError, CTRError
from .results import DownloadResult, PredictResult, StreamResult, TrainResult, stream_result

Item = Mapping[str, Any] | bytes | str
Items = AsyncIterable[Item] | Iterable[Item]


class AsyncCTRClient:
    """Talk to a running ``ctr serve`` from asyncio code.

    >>> async with AsyncCTRClient("http://127.0.0.1:8000") as ctr:   # doctest: +SKIP
    ...     (await ctr.predict([{"features": {"site": "a.com"}}])).p
    """

    def __init__(self, url: str, api_key: str | None = None, timeout: float = 30.0,
                 retries: int = 3, backoff: float = 0.2, *, max_backoff: float = 10.0,
                 max_connections: int = 10,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.url = url.rstrip("/")
        self.retry = RetryPolicy(retries, backoff, max_backoff)
        self._http = httpx.AsyncClient(
            base_url=self.url, headers=auth_headers(api_key), timeout=timeout,
            limits=httpx.Limits(max_connections=max_connections,
                                max_keepalive_connections=max_connections),
            transport=transport, verify=verify_for(self.url))

    async def _request(self, method: str, path: str, *, content: Any = None,
                       params: Mapping[str, Any] | None = None, content_type: str | None = None,
                       changes_model: bool = False, replayable: bool = True,
                       key: str | None = None) -> httpx.Response:
        headers = request_headers(content_type, key)
        attempt = 0
        while True:
            try:
                response = await self._http.request(method, path, content=content,
                                                    params=params, headers=headers)
            except httpx.TransportError as exc:
                err = connection_error(exc, method, self.url + path)
                if (attempt < self.retry.retries and self._replayable(content, replayable)
                        and not (changes_model and err.sent and key is None)):
                    await asyncio.sleep(self.retry.delay(attempt))
                    attempt += 1
                    continue
                raise err from exc
            if response.status_code < 400:
                return response
            if (retryable_status(response.status_code, key) and attempt < self.retry.retries
                    and self._replayable(content, replayable)):
                await asyncio.sleep(self.retry.delay(attempt, retry_after(response)))
                attempt += 1
                continue
            raise problem(response)

    @staticmethod
    def _replayable(content: Any, replayable: bool) -> bool:
        return replayable or not (isinstance(content, AsyncBodyIterator) and content.started)

    async def train(self, events: Events, idempotency_key: str | None = None) -> TrainResult:
        """``CTRClient.train``: the batch carries an Idempotency-Key and is retried."""
        r = await self._request("POST", "/v1/train", content=encode_events(events),
                                content_type=JSON, changes_model=True,
                                key=idempotency_key or new_key())
        return decode_train(r.content)

    async def predict(self, events: Events) -> PredictResult:
        r = await self._request("POST", "/v1/predict", content=encode_events(events),
                                content_type=JSON)
        return decode_predict(r.content)

    async def stream(self, items: Items) -> StreamResult:
        body = AsyncBodyIterator(items)
        r = await self._request("POST", "/v1/train/stream", content=body,
                                content_type=NDJSON, changes_model=True,
                                replayable=isinstance(items, Sequence))
        return stream_result(decode_json(r.content))

    async def impressions(self, events: Events) -> PredictResult:
        """``CTRClient.impressions``."""
        r = await self._request("POST", "/v1/impressions", content=encode_events(events),
                                content_type=JSON)
        return decode_predict(r.content)

    async def feedback(self, events: Events) -> dict[str, Any]:
        """``CTRClient.feedback``."""
        r = await self._request("POST", "/v1/feedback", content=encode_events(events),
                                content_type=JSON)
        return dict(decode_json(r.content))

    async def join(self) -> dict[str, Any]:
        return dict(decode_json((await self._request("GET", "/v1/join")).content))

    async def model(self) -> dict[str, Any]:
        return dict(decode_json((await self._request("GET", "/v1/model")).content))

    async def top_features(self, n: int = 20) -> list[dict[str, Any]]:
        r = await self._request("GET", "/v1/model/features", params={"top": n})
        raw = decode_json(r.content)
        return list(raw.get("features", []) if isinstance(raw, dict) else raw)

    async def snapshot(self) -> dict[str, Any]:
        r = await self._request("POST", "/v1/model/snapshot", changes_model=True)
        return dict(decode_json(r.content)) if r.content else {}

    async def download_model(self, path: str | os.PathLike[str]) -> DownloadResult:
        target = Path(path)
        attempt = 0
        while True:
            try:
                return await self._download(target)
            except CTRError as err:
                retryable = (err.status == 503 if not isinstance(err, CTRConnectionError)
                             else True)
                if not retryable or attempt >= self.retry.retries:
                    raise
                await asyncio.sleep(self.retry.delay(attempt, getattr(err, "retry_after",
                                                                      None)))
                attempt += 1

    async def _download(self, target: Path) -> DownloadResult:
        url = "/v1/model/download"
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                try:
                    async with self._http.stream("GET", url) as r:
                        if r.status_code >= 400:
                            await r.aread()
                            raise problem(r)
                        size = 0
                        async for chunk in r.aiter_bytes(1 << 20):
                            fh.write(chunk)
                            size += len(chunk)
                        version = r.headers.get("x-model-version")
                except httpx.TransportError as exc:
                    raise connection_error(exc, "GET", self.url + url) from exc
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return DownloadResult(str(target), size, int(version) if version else None)

    async def health(self) -> dict[str, Any]:
        return dict(decode_json((await self._request("GET", "/healthz")).content))

    async def ready(self) -> bool:
        try:
            r = await self._http.get("/readyz")
        except httpx.TransportError as exc:
            raise connection_error(exc, "GET", self.url + "/readyz") from exc
        return r.status_code == 200

    async def wait_ready(self, timeout: float = 60.0, interval: float = 0.05) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if await self.ready():
                    return
            except CTRConnectionError:
                pass
            if time.monotonic() > deadline:
                raise CTRConnectionError(f"{self.url} not ready after {timeout:g} s")
            await asyncio.sleep(interval)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncCTRClient:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"AsyncCTRClient({self.url!r})"
