"""The lean routes answered from the connection (``service.direct``), over real loopback
sockets to a uvicorn server of the app in this process, with the options ``ctr serve`` gives
it: a lean route's request runs as its endpoint (the app is not called), and what reaches
the client is byte for byte what the ASGI way writes (the connection's hook switched off),
whatever the connection's state: keep-alive, ``Connection: close``, HTTP/1.0, pipelined
requests, ``Expect: 100-continue``, problems, replayed idempotent requests. With the access
log on, requests go through the app, as its log line needs."""

from __future__ import annotations

import contextlib
import json
import logging
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from service_helpers import some_events
from uvicorn.middleware.message_logger import MessageLoggerMiddleware
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from service.app import create_app
from service.connections import LimitedHttpToolsProtocol
from service.direct import lean_app
from service.fastpath import LeanEndpoint, LeanFastAPI
from service.settings import Settings
from service.startup import model_builder
from service.workers.publisher import SharedMemoryStore
from service.workers.reader import ReaderApp

AUTH = b"Authorization: Bearer k1\r\nContent-Type: application/json\r\n"


class Served:
    def __init__(self, port: int) -> None:
        self.port = port

    def exchange(self, raw: bytes, replies: int = 1, until_closed: bool = False) -> bytes:
        """Send ``raw`` on a new connection; the bytes of ``replies`` whole responses (all
        there is once the server closes the connection); ``until_closed``: everything until
        the server closes it (a timeout if it does not)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as sock:
            sock.sendall(raw)
            data = b""
            while until_closed or _complete(data) < replies:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        return data


def _complete(data: bytes) -> int:
    """How many whole responses (with a content-length) ``data`` holds."""
    n, pos = 0, 0
    while True:
        end = data.find(b"\r\n\r\n", pos)
        if end < 0:
            return n
        head = data[pos:end].decode("latin-1")
        if head.startswith("HTTP/1.1 100 "):
            pos = end + 4
            continue
        m = re.search(r"(?im)^content-length: (\d+)$", head)
        stop = end + 4 + int(m.group(1)) if m else end + 4
        if len(data) < stop:
            return n
        n, pos = n + 1, stop


def normal(data: bytes) -> bytes:
    """The bytes with what differs between two answers anyway left out: the date, and the
    request ids the server makes."""
    data = re.sub(rb"date: [^\r]*\r\n", b"date: *\r\n", data)
    return re.sub(rb"x-request-id: [0-9a-f]{32}\r\n", b"x-request-id: *\r\n", data)


@contextlib.contextmanager
def serving(access_log: bool = False) -> Iterator[Served]:
    settings = Settings(_env_file=None, alpha=0.2, api_keys="k1",  # type: ignore[call-arg]
                        stats_every=3600)
    app = create_app(settings)
    assert isinstance(app, LeanFastAPI)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]

    class Protocol(LimitedHttpToolsProtocol):
        """uvicorn logs access when its logger has handlers, which pytest's log capture
        may give it: here, exactly as asked."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.access_log = access_log

    # a keep-alive timeout longer than a client's wait: a connection the server should close
    # and does not is a client's timeout, not closed late by the timeout
    config = uvicorn.Config(app, log_level="info", access_log=access_log, lifespan="on",
                            server_header=False, http=Protocol, timeout_keep_alive=60)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    served = Served(port)
    try:
        deadline = time.monotonic() + 120
        while not ready(served):
            assert time.monotonic() < deadline and thread.is_alive(), "not ready"
            time.sleep(0.05)
        yield served
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


def ready(served: Served) -> bool:
    try:
        return served.exchange(b"GET /readyz HTTP/1.1\r\nHost: t\r\n\r\n").startswith(
            b"HTTP/1.1 200 ")
    except OSError:  # not listening yet
        return False


def post(path: str, body: bytes, extra: bytes = b"", version: bytes = b"1.1") -> bytes:
    return (b"POST %s HTTP/%s\r\nHost: t\r\n%s%sContent-Length: %d\r\n\r\n"
            % (path.encode(), version, AUTH, extra, len(body))) + body


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    with serving() as s:
        events = some_events(300, seed=5)
        for i in range(0, 300, 100):
            reply = s.exchange(post("/v1/train", json.dumps({"events": events[i:i + 100]})
                                    .encode()))
            assert reply.startswith(b"HTTP/1.1 200 "), reply[:300]
        yield s


def probe(n: int = 3) -> bytes:
    return json.dumps({"events": [{"features": e["features"]}
                                  for e in some_events(n, seed=9)]}).encode()


@contextlib.contextmanager
def asgi_way(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Requests started as uvicorn starts them: the app, through its middleware."""
    with monkeypatch.context() as m:
        m.setattr(LimitedHttpToolsProtocol, "_start_asgi_task",
                  HttpToolsProtocol._start_asgi_task)
        yield


@contextlib.contextmanager
def app_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The paths the app itself is called with meanwhile."""
    seen: list[str] = []
    original = LeanFastAPI.__call__

    async def spy(self: LeanFastAPI, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            seen.append(scope["path"])
        await original(self, scope, receive, send)

    with monkeypatch.context() as m:
        m.setattr(LeanFastAPI, "__call__", spy)
        yield seen


CASES = {
    "predict": post("/v1/predict", probe()),
    "predict, client request id": post("/v1/predict", probe(1), b"X-Request-ID: abc-12\r\n"),
    "predict, Connection: close": post("/v1/predict", probe(), b"Connection: close\r\n"),
    "predict, HTTP/1.0": post("/v1/predict", probe(), version=b"1.0"),
    "predict, Expect: 100-continue": post("/v1/predict", probe(), b"Expect: 100-continue\r\n"),
    "predict, bad event (422)": post("/v1/predict", b'{"events": [{"features": 5}]}'),
    "predict, wrong key (403)": post("/v1/predict", probe()).replace(b"k1", b"k2"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_direct_answers_byte_for_byte_as_the_asgi_way(
        served: Served, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    raw = CASES[name]
    closes = name.endswith(("close", "HTTP/1.0"))  # then read until the server closes
    with app_calls(monkeypatch) as seen:
        direct = served.exchange(raw, until_closed=closes)
    assert "/v1/predict" not in seen  # the app was not called: the endpoint answered
    with asgi_way(monkeypatch), app_calls(monkeypatch) as seen:
        plain = served.exchange(raw, until_closed=closes)
    assert seen == ["/v1/predict"]
    assert normal(direct) == normal(plain)
    final = direct.removeprefix(b"HTTP/1.1 100 Continue\r\n\r\n")
    assert final.split(b" ", 2)[1] == {"bad event (422)": b"422", "wrong key (403)": b"403"}.get(
        name.partition(", ")[2], b"200")
    if closes:
        assert b"\r\nconnection: close\r\n" in direct.partition(b"\r\n\r\n")[0] + b"\r\n"


def test_pipelined_requests_are_answered_in_order(
        served: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    raw = (post("/v1/predict", probe(1), b"X-Request-ID: one\r\n")
           + b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"
           + post("/v1/predict", probe(2), b"X-Request-ID: two\r\n"))
    direct = served.exchange(raw, replies=3)
    with asgi_way(monkeypatch):
        plain = served.exchange(raw, replies=3)
    assert normal(direct) == normal(plain)
    assert [m.group(1) for m in re.finditer(rb"x-request-id: (\w+)", direct)][::2] == \
        [b"one", b"two"]
    assert direct.count(b"HTTP/1.1 200 OK") == 3


def test_a_replayed_idempotent_request_keeps_its_header(
        served: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    body = json.dumps({"events": some_events(5, seed=21)}).encode()
    heads = []
    ways = ((b"direct-1", contextlib.nullcontext()), (b"asgi-1", asgi_way(monkeypatch)))
    for key, way in ways:
        with way:
            first = served.exchange(post("/v1/train", body, b"Idempotency-Key: " + key + b"\r\n"))
            again = served.exchange(post("/v1/train", body, b"Idempotency-Key: " + key + b"\r\n"))
        assert first.startswith(b"HTTP/1.1 200 OK\r\n")
        head = normal(again.partition(b"\r\n\r\n")[0] + b"\r\n")
        heads.append(re.sub(rb"content-length: \d+", b"content-length: *", head))
    assert b"\r\nidempotent-replayed: true\r\n" in heads[0]
    assert heads[0] == heads[1]


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_with_the_access_log_requests_go_the_asgi_way(
        monkeypatch: pytest.MonkeyPatch) -> None:
    records = Records()
    with serving(access_log=True) as s, app_calls(monkeypatch) as seen:
        logging.getLogger("uvicorn.access").addHandler(records)
        try:
            reply = s.exchange(post("/v1/predict", probe(), b"X-Forwarded-For: 10.1.2.3\r\n"))
        finally:
            logging.getLogger("uvicorn.access").removeHandler(records)
    assert reply.startswith(b"HTTP/1.1 200 OK\r\n")
    assert seen == ["/v1/predict"]  # the app, behind uvicorn's proxy-headers middleware
    # the line names the client the middleware found (loopback is a trusted proxy)
    assert any("10.1.2.3" in m and "POST /v1/predict" in m for m in records.messages)


def test_only_known_wrappers_are_stepped_over(tmp_path: Path) -> None:
    app = create_app(Settings(_env_file=None))  # type: ignore[call-arg]
    assert isinstance(app, LeanFastAPI)
    assert lean_app(app) is app
    assert lean_app(ProxyHeadersMiddleware(app)) is app
    assert lean_app(MessageLoggerMiddleware(app)) is None
    assert lean_app(ProxyHeadersMiddleware(MessageLoggerMiddleware(app))) is None
    assert lean_app(create_app(Settings(_env_file=None), lean=False)  # type: ignore[call-arg]
                    ).lean_endpoint("/v1/predict", "POST") is None  # type: ignore[union-attr]
    # a prediction worker's app answers its predictions on the connection too
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    SharedMemoryStore(tmp_path).open(model_builder(settings), None)  # a learner's model
    reader = ReaderApp(settings, tmp_path)
    assert lean_app(ProxyHeadersMiddleware(reader)) is reader
    assert isinstance(reader.lean_endpoint("/v1/predict", "POST"), LeanEndpoint)
    assert reader.lean_endpoint("/v1/predict", "GET") is None
    assert reader.lean_endpoint("/readyz", "GET") is None

