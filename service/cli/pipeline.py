"""HTTP/1.1 pipelining on one connection: requests written ahead of their answers, the
answers read in the order the requests went (RFC 9112 §9.3.2).

Why: ``ctr replay`` of impressions and clicks must keep file order, so it cannot spread
requests over connections (the server would run them at once). One at a time, each request
waited for the client to frame it and for the server to answer it, and the two took turns
on the machine's cores. On one connection the server (uvicorn) reads the next request only
when it has answered the one before, so order holds while the client frames and sends the
next ones meanwhile.

A writer thread sends; the caller's thread reads the answers. ``depth`` requests at most
are unanswered at a time. An answer that is not 2xx ends the run: requests after it may
have been applied already, so they cannot be retried in order (the error says which
request it was). Plain ``http://`` only; ``https`` goes through the ordinary client.
"""

from __future__ import annotations

import queue
import socket
import threading
from collections.abc import Iterable, Iterator
from typing import Any, BinaryIO, Generic, TypeVar, cast
from urllib.parse import urlsplit

import msgspec

from clients import CTRConnectionError, CTRError
from clients.exceptions import error_for_status
from ftrl_core.trainer import put_unless_stopped

T = TypeVar("T")
#: the end of the requests (the writer's last item)
_DONE = object()
#: the longest status line or header line read (uvicorn's are far shorter)
MAX_LINE = 65536


def supported(url: str) -> bool:
    return urlsplit(url).scheme == "http"


class Answer(msgspec.Struct):
    status: int
    headers: dict[str, str]
    body: bytes


def read_answer(fh: BinaryIO) -> Answer:
    """One HTTP/1.1 response: status, headers (lower-cased names), body (Content-Length
    or chunked)."""
    line = fh.readline(MAX_LINE)
    if not line:
        raise ConnectionError("the server closed the connection")
    parts = line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
        raise ConnectionError(f"not an HTTP/1.1 answer: {line[:80]!r}")
    status = int(parts[1])
    headers: dict[str, str] = {}
    while True:
        line = fh.readline(MAX_LINE)
        if line in (b"\r\n", b"\n", b""):
            break
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        chunks = []
        while True:
            size = int(fh.readline(MAX_LINE).split(b";")[0], 16)
            if size == 0:
                while fh.readline(MAX_LINE) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                break
            chunks.append(_read_exactly(fh, size))
            fh.readline(MAX_LINE)
        body = b"".join(chunks)
    else:
        body = _read_exactly(fh, int(headers.get("content-length", "0")))
    return Answer(status, headers, body)


def _read_exactly(fh: BinaryIO, n: int) -> bytes:
    data = fh.read(n)
    if len(data) != n:
        raise ConnectionError(f"the server closed the connection {len(data)} bytes into a "
                              f"body of {n}")
    return data


class Pipeline(Generic[T]):
    """Send ``(path, body, tag)`` requests in order and yield ``(tag, answer body)`` in the
    same order (``run``)."""

    def __init__(self, url: str, api_key: str | None = None, depth: int = 4,
                 timeout: float = 60.0) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.prefix = parts.path.rstrip("/")
        self.depth = max(1, depth)
        self.timeout = timeout
        auth = f"authorization: Bearer {api_key}\r\n" if api_key else ""
        self._fixed = (f"host: {parts.netloc}\r\ncontent-type: application/json\r\n"
                       f"{auth}").encode("latin-1")

    def _frame(self, path: str, body: bytes) -> bytes:
        return (f"POST {self.prefix}{path} HTTP/1.1\r\n".encode("latin-1") + self._fixed
                + f"content-length: {len(body)}\r\n\r\n".encode("latin-1") + body)

    def run(self, requests: Iterable[tuple[str, bytes, T]]) -> Iterator[tuple[T, bytes]]:
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        except OSError as exc:
            raise CTRConnectionError(f"{self.host}:{self.port}: {exc}", sent=False) from exc
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sent: queue.Queue[Any] = queue.Queue(maxsize=self.depth)
        stop = threading.Event()
        failed: list[BaseException] = []
        writer = threading.Thread(target=self._write, daemon=True, name="ctr-pipeline",
                                  args=(sock, requests, sent, stop, failed))
        writer.start()
        number = 0
        try:
            with cast(BinaryIO, sock.makefile("rb", buffering=1 << 20)) as fh:
                while True:
                    item = _get(sent, stop, failed)
                    if item is _DONE:
                        break
                    path, tag = item
                    number += 1
                    try:
                        answer = read_answer(fh)
                    except (OSError, ValueError) as exc:
                        raise CTRConnectionError(
                            f"POST {path} (request {number}): {exc}", sent=True) from exc
                    if answer.status >= 300:
                        raise _problem(answer, path, number)
                    yield tag, answer.body
                    if answer.headers.get("connection", "").lower() == "close":
                        if _get(sent, stop, failed) is not _DONE:
                            raise CTRConnectionError(
                                f"POST {path} (request {number}): the server closed the "
                                "connection with requests unanswered", sent=True)
                        break
        finally:
            stop.set()
            sock.close()
            writer.join(timeout=self.timeout)

    def _write(self, sock: socket.socket, requests: Iterable[tuple[str, bytes, T]],
               sent: queue.Queue[Any], stop: threading.Event,
               failed: list[BaseException]) -> None:
        try:
            for path, body, tag in requests:
                # waits while ``depth`` are unanswered
                if not put_unless_stopped(sent, (path, tag), stop):
                    return
                sock.sendall(self._frame(path, body))
            put_unless_stopped(sent, _DONE, stop)
        except BaseException as exc:  # handed to the reader, which raises it
            failed.append(exc)
            stop.set()


def _get(q: queue.Queue[Any], stop: threading.Event, failed: list[BaseException]) -> Any:
    while True:
        try:
            return q.get(timeout=0.1)
        except queue.Empty:
            if failed:
                exc = failed[0]
                if isinstance(exc, OSError):
                    raise CTRConnectionError(f"sending: {exc}", sent=True) from exc
                raise exc from None
            if stop.is_set():
                raise CTRConnectionError("the pipeline stopped", sent=True) from None


def _problem(answer: Answer, path: str, number: int) -> CTRError:
    decoded: dict[str, Any] | None = None
    try:
        obj = msgspec.json.decode(answer.body) if answer.body else None
        decoded = obj if isinstance(obj, dict) else None
    except msgspec.DecodeError:
        pass
    retry = answer.headers.get("retry-after")
    err = error_for_status(answer.status, decoded, answer.body.decode("utf-8", "replace"),
                           float(retry) if retry and retry.isdigit() else None)
    # say where the stream stopped: the requests after it may have been applied
    err.detail = f"POST {path}, request {number} in order: {err.detail}"
    err.args = (err._message(),)
    return err

