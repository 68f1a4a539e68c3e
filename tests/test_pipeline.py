"""``ctr replay``'s pipelined HTTP/1.1 reader (``service.cli.pipeline``): the answers as
uvicorn and other servers frame them. The pipeline against a real server is in
tests/test_join.py (the replay of a mixed stream, and a refused request in the middle)."""

from __future__ import annotations

import io
import socket
import threading

import pytest

from clients import CTRConnectionError, ValidationError
from service.cli.pipeline import Pipeline, read_answer


def test_answers_framed_by_length_and_by_chunks() -> None:
    wire = io.BytesIO(
        b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nContent-Type: application/json\r\n\r\n"
        b"[1,2]"
        b"HTTP/1.1 422 Unprocessable Entity\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"4;ext=1\r\n{\"a\"\r\n3\r\n:1}\r\n0\r\nTrailer: x\r\n\r\n"
        b"HTTP/1.1 204 No Content\r\n\r\n")
    first, second, third = (read_answer(wire) for _ in range(3))
    assert (first.status, first.body, first.headers["content-type"]) == \
        (200, b"[1,2]", "application/json")
    assert (second.status, second.body) == (422, b'{"a":1}')
    assert (third.status, third.body) == (204, b"")
    with pytest.raises(ConnectionError, match="closed"):
        read_answer(wire)


def test_a_cut_answer_or_a_foreign_protocol_is_a_connection_error() -> None:
    with pytest.raises(ConnectionError, match="3 bytes into a body of 10"):
        read_answer(io.BytesIO(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc"))
    with pytest.raises(ConnectionError, match=r"not an HTTP/1\.1 answer"):
        read_answer(io.BytesIO(b"SSH-2.0-OpenSSH\r\n"))


def _one_shot_server(answers: bytes) -> tuple[socket.socket, threading.Thread, list[bytes]]:
    """A loopback server that reads until the client stops sending, then writes
    ``answers`` (what it read is kept)."""
    listener = socket.create_server(("127.0.0.1", 0))
    got: list[bytes] = []

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(2.0)
            data = b""
            while data.count(b"\r\n\r\n") < 3:  # three requests' heads (bodies follow)
                chunk = conn.recv(65536)
                if not chunk:
                    break
                data += chunk
            got.append(data)
            conn.sendall(answers)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return listener, thread, got


def test_requests_go_out_ahead_of_their_answers_in_order() -> None:
    """All three requests are written before any answer is read (the server here answers
    only once it has them all), and the answers come back tagged in request order; the
    422 in the middle stops the run with its problem and its place in the order."""
    problem = b'{"title":"Unprocessable","detail":"bad id","status":422}'
    answers = (b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"
               + b"HTTP/1.1 422 X\r\ncontent-type: application/problem+json\r\n"
               + f"content-length: {len(problem)}\r\n\r\n".encode() + problem
               + b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")
    listener, thread, got = _one_shot_server(answers)
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/prefix"
    pipe = Pipeline[str](url, api_key="k", depth=4, timeout=5.0)
    seen = []
    with pytest.raises(ValidationError) as caught:
        for tag, body in pipe.run([("/v1/impressions", b"[1]", "a"),
                                   ("/v1/feedback", b"[2]", "b"),
                                   ("/v1/impressions", b"[3]", "c")]):
            seen.append((tag, body))
    thread.join(5.0)
    listener.close()
    assert seen == [("a", b"{}")]
    assert "request 2 in order" in str(caught.value) and "bad id" in str(caught.value)
    sent = got[0]
    assert sent.index(b"POST /prefix/v1/impressions") < sent.index(b"POST /prefix/v1/feedback")
    assert sent.count(b"authorization: Bearer k") == 3


def test_a_server_that_is_not_there_is_a_connection_error() -> None:
    with socket.create_server(("127.0.0.1", 0)) as s:
        port = s.getsockname()[1]
    with pytest.raises(CTRConnectionError):
        list(Pipeline[str](f"http://127.0.0.1:{port}").run([("/v1/feedback", b"{}", "a")]))
