"""Connection limits uvicorn lacks: a deadline for each request's head, and a cap on open
connections.

uvicorn closes an idle keep-alive connection (``--keep-alive-timeout``) but waits forever
for a request line and headers, and accepts every connection: 2,000 clients that open a
socket and send nothing (or a header byte now and then) hold 2,000 file descriptors. This
protocol (uvicorn's httptools one, the one in use when httptools is installed, as it is
here) adds:

- ``header_timeout``: from a connection's start, or a request's first byte, its head must
  be complete within this many seconds; otherwise the connection gets a 408 problem and is
  closed (the body has its own deadline in the app: ``bodies.read_body``);
- ``max_connections``: a connection past this many open ones (per worker process) gets a
  503 problem with ``Retry-After`` and is closed at once, before any byte of it is read.

The limits are class attributes set by ``configure`` (``create_app`` calls it: each worker
process of ``ctr serve --workers N`` builds its app from the same settings), so uvicorn can
be given the class itself (``Config(http=LimitedHttpToolsProtocol)``), also across worker
processes. A reverse proxy in front (nginx ``client_header_timeout``,
``client_body_timeout``, ``limit_conn``) does the same job earlier, and is still advised.
"""

from __future__ import annotations

import asyncio
from http import HTTPStatus
from typing import Any

import msgspec
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from .direct import DirectAnswer, LeanRoutes, lean_app
from .errors import Problem


def _raw_problem(problem: Problem) -> bytes:
    """A whole HTTP/1.1 response for ``problem``, written straight to the transport."""
    body = msgspec.json.encode(problem.body())
    head = [f"HTTP/1.1 {problem.status} {HTTPStatus(problem.status).phrase}",
            "content-type: application/problem+json", "connection: close",
            f"content-length: {len(body)}",
            *(f"{k.lower()}: {v}" for k, v in (problem.headers or {}).items())]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


#: the writes a connection holds in one turn of the event loop are sent as one bytes object
#: up to this size (beyond, what is held and the new write leave at once: copying a large
#: body costs more than the send it saves, and a streaming response stays bounded)
JOIN_BYTES = 1 << 16


class JoinedWrites:
    """The transport a connection's requests write to. Writes are held until the end of
    the event loop's turn and then sent joined, in order (up to ``JOIN_BYTES``), which
    saves system calls and wakeups twice over:

    - a response's head and body (two ASGI messages, two ``transport.write`` calls in
      uvicorn) leave in one ``send()``: one system call and one TCP segment instead of two
      (on a single-event prediction, a third of the server's CPU);
    - the responses answered in one turn (requests that arrived together on several
      connections) leave back to back at its end instead of one between each two requests
      answered. A ``send()`` that wakes a peer asleep in ``epoll_wait`` pays for the wakeup,
      and on the 2-vCPU VMs here a peer idle between two sends is a halted vCPU: that
      wakeup took ~70 us of a single-event prediction's ~145 us (perf: the time sits in
      ``sock_def_readable``). Sent back to back, only the first of a turn's responses finds
      its peer asleep. Netty's flush consolidation (flush when the read loop completes, not
      per message) is the same idea; the price is that a response waits for the rest of
      its turn, the requests read with it (in interleaved runs of
      ``bench/predict_latency.py``, p50, p99 and req/s all improved: README).

    ``close`` sends what is held first; everything else is the transport's."""

    __slots__ = ("_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        held = self._held
        if held is None:
            self._held = bytes(data)
            self._loop.call_soon(self._flush)
            return
        if len(held) + len(data) <= JOIN_BYTES:
            self._held = held + bytes(data)
        else:
            self._held = None
            self._transport.write(held)
            self._transport.write(data)

    def _flush(self) -> None:
        held = self._held
        if held is not None:
            self._held = None
            if not self._transport.is_closing():
                self._transport.write(held)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a head deadline and a connection cap."""

    header_timeout: float = 10.0
    max_connections: int = 1000

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._refused = False
        self._head_timer: asyncio.TimerHandle | None = None
        #: a request's head has begun and is not complete yet
        self._in_head = False
        #: the app whose lean routes this connection answers itself (``direct``), if any
        self._lean: LeanRoutes | None = None
        #: when the connection's last response completed, None while it is not idle
        self._idle_since: float | None = None

    # -- the cap --------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if len(self.connections) >= self.max_connections:
            self._refused = True
            self.transport = transport
            problem = Problem(503, None, f"the server holds {self.max_connections} "
                              "connections, its limit (--max-connections); retry later",
                              headers={"Retry-After": "1"})
            transport.write(_raw_problem(problem))
            transport.close()
            return
        super().connection_made(transport)
        self.transport = JoinedWrites(transport, self.loop)  # type: ignore[assignment]
        self._lean = lean_app(self.app)
        self._arm_head_timer()

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        # a lean route's request runs as its endpoint, not as the app (``direct``); not the
        # 503 app uvicorn gives a request over its concurrency limit, and not with the
        # access log on (whose line names the client the app's proxy-headers wrapper found)
        if app is self.app and self._lean is not None and not self.access_log:
            endpoint = self._lean.lean_endpoint(cycle.scope["path"], cycle.scope["method"])
            if endpoint is not None:
                app = DirectAnswer(endpoint, cycle)
        super()._start_asgi_task(cycle, app)

    # -- the keep-alive timeout, one timer per idle spell -----------------------------------
    # uvicorn arms a timer when a response completes and cancels it when the next bytes
    # come: a timer made and dropped per request (a few us of a single-event prediction's
    # ~58). Here a response's end only notes the time; the one timer, when it fires, closes
    # the connection if it has been idle since for the whole timeout, and otherwise waits
    # out the rest (a busy connection's timer lapses; its next response arms one).

    def _unset_keepalive_if_required(self) -> None:
        self._idle_since = None  # bytes came, or a response is completing: not idle

    def on_response_complete(self) -> None:
        # uvicorn's, but for the timer: count the request, read again, start a pipelined
        # request or else be idle from now on
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self.flow.resume_reading()
        if self.pipeline:
            self._idle_since = None
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
            return
        self._idle_since = self.loop.time()
        if self.timeout_keep_alive_task is None:
            self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive,
                                                                self._keep_alive_due)

    def _keep_alive_due(self) -> None:
        self.timeout_keep_alive_task = None
        since = self._idle_since
        if since is None:
            return
        left = since + self.timeout_keep_alive - self.loop.time()
        if left > 0:
            self.timeout_keep_alive_task = self.loop.call_later(left, self._keep_alive_due)
        else:
            self.timeout_keep_alive_handler()

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        super().data_received(data)
        # a head that began in these bytes and is still incomplete gets its deadline now
        # (counted from its first bytes, as they arrived in this call); one that arrived
        # whole, the common case, costs no timer
        if self._in_head and self._head_timer is None and not self.transport.is_closing():
            self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        if self.timeout_keep_alive_task is not None:
            self.timeout_keep_alive_task.cancel()
            self.timeout_keep_alive_task = None
        if not self._refused:  # (a refused connection was never registered)
            super().connection_lost(exc)

    # -- the head deadline ----------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True  # its deadline is armed after the bytes at hand are parsed

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._cancel_head_timer()
        super().on_headers_complete()

    def _arm_head_timer(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.header_timeout, self._head_too_slow)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        problem = Problem(408, "header-timeout", "the request line and headers did not arrive "
                          f"within {self.header_timeout:g} s (--header-timeout)")
        self.transport.write(_raw_problem(problem))
        self.transport.close()


def configure(header_timeout: float, max_connections: int) -> None:
    """Set the limits of this process's connections."""
    LimitedHttpToolsProtocol.header_timeout = float(header_timeout)
    LimitedHttpToolsProtocol.max_connections = int(max_connections)
