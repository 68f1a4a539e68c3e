"""Slow and idle clients against a real `ctr serve`, over real sockets: a body that trickles
in gets a 408 problem, so does a head that never ends, an idle keep-alive connection is
closed, and connections past the cap are answered 503 and closed at once. (Waits are for
the server to act, with generous deadlines; nothing here asserts how long anything took.)"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from typing import Any

import httpx
from servers import ServerProcess

DEADLINE = 60.0  # seconds to wait for the server to act (it should take about 1)


def connect(server: ServerProcess) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", server.port), timeout=DEADLINE)
    s.settimeout(DEADLINE)
    return s


def read_until_closed(s: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    out = b""
    while True:
        try:
            got = s.recv(65536)
        except ConnectionResetError:
            break
        except TimeoutError:
            raise AssertionError(f"not closed within {DEADLINE:g} s; got {out[:200]!r}") \
                from None
        if not got:
            break
        out += got
    return out


def response(raw: bytes) -> tuple[int, dict[str, str], Any]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])}
    return status, headers, json.loads(body) if body else None


def model_rows(server: ServerProcess) -> int:
    return int(httpx.get(server.url + "/v1/model", timeout=30).json()["rows"])


def test_a_trickling_body_gets_408(fresh_server: Callable[..., ServerProcess]) -> None:
    server = fresh_server("--body-timeout", "1", "--header-timeout", "30")
    with connect(server) as s:
        s.sendall(b"POST /v1/train HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 200\r\n\r\n{\"events\": [")
        for _ in range(3):  # a byte now and then, as a slow-loris client sends
            time.sleep(0.3)
            try:
                s.sendall(b" ")
            except OSError:
                break
        status, headers, body = response(read_until_closed(s))
    assert status == 408 and headers["content-type"] == "application/problem+json"
    assert body["type"].endswith("/body-timeout") and "--body-timeout" in body["detail"]
    assert headers["connection"] == "close"
    assert model_rows(server) == 0


def test_a_head_that_never_ends_gets_408_and_is_closed(
        fresh_server: Callable[..., ServerProcess]) -> None:
    server = fresh_server("--header-timeout", "1")
    with connect(server) as s:  # headers begun, never finished
        s.sendall(b"POST /v1/train HTTP/1.1\r\nHost: t\r\nContent-Type: app")
        status, _, body = response(read_until_closed(s))
    assert status == 408 and body["type"].endswith("/header-timeout")
    with connect(server) as s:  # nothing sent at all
        status, _, _ = response(read_until_closed(s))
    assert status == 408
    assert httpx.get(server.url + "/healthz", timeout=30).status_code == 200


def test_idle_keep_alive_connections_are_closed(
        fresh_server: Callable[..., ServerProcess]) -> None:
    server = fresh_server("--keep-alive-timeout", "1", "--header-timeout", "30")
    with connect(server) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        raw = read_until_closed(s)  # the answer, then the close once idle
    assert raw.startswith(b"HTTP/1.1 200")


def test_a_connection_in_use_outlives_the_keep_alive_timeout(
        fresh_server: Callable[..., ServerProcess]) -> None:
    # the timeout counts from the last answer, not from the first: requests a second apart
    # keep a connection with a 2 s timeout open for 4 s (the connection's one timer
    # lapses while it is in use, and waits out the rest of the timeout when it is idle)
    server = fresh_server("--keep-alive-timeout", "2", "--header-timeout", "30")
    with connect(server) as s:
        for i in range(5):
            if i:
                time.sleep(1.0)
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
            got = b""
            while got.count(b"\r\n\r\n") < 1 or not got.endswith(b"}"):
                chunk = s.recv(65536)
                assert chunk, f"closed before answer {i + 1} of 5"
                got += chunk
            assert got.startswith(b"HTTP/1.1 200"), got
        assert read_until_closed(s) == b""  # then closed once idle for the timeout


def test_connections_past_the_cap_get_503(fresh_server: Callable[..., ServerProcess]) -> None:
    server = fresh_server("--max-connections", "4", "--header-timeout", "60")
    held = [connect(server) for _ in range(4)]
    try:
        time.sleep(0.5)  # let the server accept them (it answers nothing: no request yet)
        with connect(server) as extra:
            status, headers, body = response(read_until_closed(extra))
        assert status == 503 and headers["retry-after"] == "1"
        assert "--max-connections" in body["detail"]
    finally:
        for s in held:
            s.close()
    deadline = time.monotonic() + DEADLINE
    while True:  # once the server has seen the others go, it serves again
        try:
            if httpx.get(server.url + "/healthz", timeout=5).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline
        time.sleep(0.1)


def test_a_stalled_stream_line_gets_408_with_its_summary(
        fresh_server: Callable[..., ServerProcess]) -> None:
    server = fresh_server("--body-timeout", "1", "--header-timeout", "30")
    good = json.dumps({"label": 1, "features": {"a": "x"}}).encode() + b"\n"
    with connect(server) as s:
        s.sendall(b"POST /v1/train/stream HTTP/1.1\r\nHost: t\r\n"
                  b"Content-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n\r\n")
        for piece in (good, good, b'{"label": 1, "feat'):  # then the line stalls
            s.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
        status, _, body = response(read_until_closed(s))
    assert status == 408 and body["type"].endswith("/body-timeout")
    assert body["accepted"] == 2 and body["line"] == 3 and body["model_version"] == 2
    assert model_rows(server) == 2
