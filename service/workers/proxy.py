"""A prediction worker forwards every request it does not answer itself to the learner
process, over the learner's Unix socket: the learner's app answers it (training, model
reads, snapshots, the dashboard, OpenAPI, /metrics) exactly as a one-process service would,
request ids and problems included. Bodies stream both ways (an NDJSON training stream is
not held whole); hop-by-hop headers are not forwarded, except a ``Connection: close`` the
learner answers with (it refused a body it did not read: the client's connection closes
too). A learner that cannot be reached is a 503 problem."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
from starlette.requests import ClientDisconnect
from starlette.types import Receive, Scope, Send

from ..errors import Problem

log = logging.getLogger(__name__)

_HOP = {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"te",
        b"trailer", b"upgrade"}


class LearnerProxy:
    def __init__(self, socket_path: Path) -> None:
        self.client = httpx.AsyncClient(
            transport=httpx.AsyncHTTPTransport(uds=str(socket_path)),
            base_url="http://learner", timeout=None)  # the client times its own requests

    async def aclose(self) -> None:
        await self.client.aclose()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # surrounding whitespace is not part of a field value (RFC 9110 5.5), and h11
        # refuses it
        headers = [(k, v.strip(b" \t")) for k, v in scope["headers"] if k not in _HOP]
        chunked = any(k == b"transfer-encoding" for k, _ in scope["headers"])
        has_body = chunked or any(k == b"content-length" for k, _ in headers)
        target = scope.get("raw_path") or scope["path"].encode()
        if scope.get("query_string"):
            target += b"?" + scope["query_string"]
        request = self.client.build_request(
            scope["method"], target.decode("latin-1"), headers=headers,
            content=_body(receive) if has_body else None)
        try:
            response = await self.client.send(request, stream=True)
        except httpx.TransportError as exc:
            log.warning("the learner process did not answer %s %s: %s", scope["method"],
                        scope["path"], exc)
            problem = Problem(503, "not-ready", "the learner process is not answering",
                              headers={"Retry-After": "1"})
            await problem.response()(scope, receive, send)
            return
        try:
            out = [(k, v) for k, v in response.headers.raw
                   if k.lower() not in _HOP or (k.lower() == b"connection"
                                                and v.lower() == b"close")]
            await send({"type": "http.response.start", "status": response.status_code,
                        "headers": out})
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        finally:
            await response.aclose()


async def _body(receive: Receive) -> AsyncIterator[bytes]:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        if message["type"] != "http.request":
            continue
        if message.get("body"):
            yield message["body"]
        if not message.get("more_body", False):
            return
