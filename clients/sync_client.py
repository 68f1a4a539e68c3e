"""``CTRClient``: the blocking client of the CTR service, over one ``httpx.Client``.

Retries: a request is sent again (after an exponential, jittered backoff, or the server's
``Retry-After``) when the server answers 503, or when the connection fails. A training batch
carries an ``Idempotency-Key``, so it is retried after any connection failure and on 409
(its first attempt is still being made durable) too: the server learns it once. Streams
and snapshots change the model without a key, so they are retried after a connection
failure only when nothing can have reached the server (connection refused, connect
timeout); prediction and the GET routes are retried after any connection failure. Any
other 4xx is never retried.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from ._wire import (
    JSON,
    NDJSON,
    BodyIterator,
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


class CTRClient:
    """Talk to a running ``ctr serve``.

    >>> with CTRClient("http://127.0.0.1:8000") as ctr:          # doctest: +SKIP
    ...     ctr.train([{"label": 1, "features": {"site": "a.com"}}]).p
    [0.5]
    """

    def __init__(self, url: str, api_key: str | None = None, timeout: float = 30.0,
                 retries: int = 3, backoff: float = 0.2, *, max_backoff: float = 10.0,
                 max_connections: int = 10,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.url = url.rstrip("/")
        self.retry = RetryPolicy(retries, backoff, max_backoff)
        self._http = httpx.Client(
            base_url=self.url, headers=auth_headers(api_key), timeout=timeout,
            limits=httpx.Limits(max_connections=max_connections,
                                max_keepalive_connections=max_connections),
            transport=transport, verify=verify_for(self.url))

    # -- plumbing -----------------------------------------------------------------------------

    def _request(self, method: str, path: str, *, content: Any = None,
                 params: Mapping[str, Any] | None = None, content_type: str | None = None,
                 changes_model: bool = False, replayable: bool = True,
                 key: str | None = None) -> httpx.Response:
        headers = request_headers(content_type, key)
        attempt = 0
        while True:
            try:
                response = self._http.request(method, path, content=content, params=params,
                                              headers=headers)
            except httpx.TransportError as exc:
                err = connection_error(exc, method, self.url + path)
                if (attempt < self.retry.retries and self._replayable(content, replayable)
                        and not (changes_model and err.sent and key is None)):
                    time.sleep(self.retry.delay(attempt))
                    attempt += 1
                    continue
                raise err from exc
            if response.status_code < 400:
                return response
            if (retryable_status(response.status_code, key) and attempt < self.retry.retries
                    and self._replayable(content, replayable)):
                time.sleep(self.retry.delay(attempt, retry_after(response)))
                attempt += 1
                continue
            raise problem(response)

    @staticmethod
    def _replayable(content: Any, replayable: bool) -> bool:
        return replayable or not (isinstance(content, BodyIterator) and content.started)

    # -- the API ------------------------------------------------------------------------------

    def train(self, events: Events, idempotency_key: str | None = None) -> TrainResult:
        """Learn ``events`` in order (dicts, or an already encoded ``{"events": [...]}``
        body as bytes); ``p`` holds each event's prediction made before learning it.

        The batch carries an ``Idempotency-Key`` (``idempotency_key``, or a new random
        one), so it is retried after any connection failure and on 503 or 409, and the
        server learns it once whatever happened to the first attempt."""
        r = self._request("POST", "/v1/train", content=encode_events(events),
                          content_type=JSON, changes_model=True,
                          key=idempotency_key or new_key())
        return decode_train(r.content)

    def predict(self, events: Events) -> PredictResult:
        r = self._request("POST", "/v1/predict", content=encode_events(events),
                          content_type=JSON)
        return decode_predict(r.content)

    def stream(self, items: Iterable[Mapping[str, Any] | bytes | str]) -> StreamResult:
        """Upload events (dicts) or NDJSON lines (bytes/str) as one chunked
        ``/v1/train/stream`` request; bad lines are skipped by the server and reported."""
        body = BodyIterator(items)
        r = self._request("POST", "/v1/train/stream", content=body, content_type=NDJSON,
                          changes_model=True, replayable=isinstance(items, Sequence))
        return stream_result(decode_json(r.content))

    def impressions(self, events: Events) -> PredictResult:
        """``POST /v1/impressions``: score items shown (each event needs an ``id``; ``ts``
        in seconds since the epoch is optional) and have the server remember them until
        their clicks join them. Retried like a prediction: a repeated id is not recorded
        twice."""
        r = self._request("POST", "/v1/impressions", content=encode_events(events),
                          content_type=JSON)
        return decode_predict(r.content)

    def feedback(self, events: Events) -> dict[str, Any]:
        """``POST /v1/feedback``: clicks (``{"id": ..., "ts": ...}``, ``label`` 1 by default;
        0 closes the impression as a negative). Returns how many joined, were late or
        unknown. Retried: a repeated click is counted, not joined twice."""
        r = self._request("POST", "/v1/feedback", content=encode_events(events),
                          content_type=JSON)
        return dict(decode_json(r.content))

    def join(self) -> dict[str, Any]:
        """``GET /v1/join``: pending impressions, joins, expiries, late clicks, delays."""
        return dict(decode_json(self._request("GET", "/v1/join").content))

    def model(self) -> dict[str, Any]:
        """``GET /v1/model``: optimizer, params, rows, nnz, logloss, auc, model_version..."""
        return dict(decode_json(self._request("GET", "/v1/model").content))

    def top_features(self, n: int = 20) -> list[dict[str, Any]]:
        """The ``n`` largest weights by |w|, with field and value names."""
        raw = decode_json(self._request("GET", "/v1/model/features",
                                        params={"top": n}).content)
        return list(raw.get("features", []) if isinstance(raw, dict) else raw)

    def snapshot(self) -> dict[str, Any]:
        """Ask the server to write a snapshot of the model now."""
        r = self._request("POST", "/v1/model/snapshot", changes_model=True)
        return dict(decode_json(r.content)) if r.content else {}

    def download_model(self, path: str | os.PathLike[str]) -> DownloadResult:
        """Save the model file (loadable by ``ctr predict --model``) to ``path``, atomically."""
        target = Path(path)
        attempt = 0
        while True:
            try:
                return self._download(target)
            except CTRError as err:
                retryable = (err.status == 503 if not isinstance(err, CTRConnectionError)
                             else True)
                if not retryable or attempt >= self.retry.retries:
                    raise
                hint = getattr(err, "retry_after", None)
                time.sleep(self.retry.delay(attempt, hint))
                attempt += 1

    def _download(self, target: Path) -> DownloadResult:
        url = "/v1/model/download"
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                try:
                    with self._http.stream("GET", url) as r:
                        if r.status_code >= 400:
                            r.read()
                            raise problem(r)
                        size = 0
                        for chunk in r.iter_bytes(1 << 20):
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

    def health(self) -> dict[str, Any]:
        """``GET /healthz`` (the process answers); raises if it does not."""
        return dict(decode_json(self._request("GET", "/healthz").content))

    def ready(self) -> bool:
        """Whether ``GET /readyz`` says the server is ready (kernels compiled, model loaded);
        a refused connection raises ``CTRConnectionError``."""
        try:
            r = self._http.get("/readyz")
        except httpx.TransportError as exc:
            raise connection_error(exc, "GET", self.url + "/readyz") from exc
        return r.status_code == 200

    def wait_ready(self, timeout: float = 60.0, interval: float = 0.05) -> None:
        """Poll ``/readyz`` until ready; refused connections count as not ready yet."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self.ready():
                    return
            except CTRConnectionError:
                pass
            if time.monotonic() > deadline:
                raise CTRConnectionError(f"{self.url} not ready after {timeout:g} s")
            time.sleep(interval)

    # -- lifetime -----------------------------------------------------------------------------

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> CTRClient:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"CTRClient({self.url!r})"
