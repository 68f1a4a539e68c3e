"""The lean routes answered from the connection: no ASGI middleware, the answer in one write.

``fastpath`` answers the hot routes in front of FastAPI; a request still crosses uvicorn's
ASGI plumbing on the way there and back: the middleware uvicorn wraps every app in (its
proxy-headers one), the app's dispatch, and two ``send`` calls whose every header is checked
by regular expressions and formatted in Python. In process, through uvicorn's protocol
object, that was about a sixth of a single-event prediction's CPU (``bench/app_cpu.py``,
the "through uvicorn" rows: 60-71 us the ASGI way, 51-58 us this way). The connection
(``connections.LimitedHttpToolsProtocol``) starts a lean route's request as a
``DirectAnswer`` instead of the app, for any app with lean routes (``LeanRoutes``: the
service's, and a prediction worker's for its predictions):

- the lean endpoint runs as it does in the app (same checks, same problems, metrics and
  request ids: ``fastpath.LeanEndpoint.answer``); every answer but a 200 is sent through
  uvicorn's ``send``, as before;
- a 200 is written whole by ``write_json``: the head uvicorn's ``send`` would write (its
  status line, the server's default headers, the endpoint's headers in the same order,
  ``connection: close`` when the connection ends), then the body, and the request cycle
  completed as ``send`` completes it. It declines (the answer goes through ``send``) when
  the transport asked to pause writing, which ``send`` waits out.

Only the wrappers named in ``BYPASSED`` are stepped over, each because the lean routes never
read what it changes (the proxy-headers middleware rewrites the scope's client and scheme);
an app wrapped in anything else (uvicorn's message logger at log level trace, another
server's middleware) is called as usual, and so is every request when uvicorn logs access
(its log line names the client the proxy-headers middleware found).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from starlette.types import Receive, Scope, Send
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware
from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

from .fastpath import LeanEndpoint

#: the wrappers a lean route's request skips (see the module's docstring)
BYPASSED = (ProxyHeadersMiddleware,)

_OK = b"HTTP/1.1 200 OK\r\n"
_JSON_HEAD = b"content-length: %d\r\ncontent-type: application/json\r\n"


@runtime_checkable
class LeanRoutes(Protocol):
    """An app with lean routes: ``fastpath.LeanFastAPI``, a prediction worker's app."""

    def lean_endpoint(self, path: str, method: str) -> LeanEndpoint | None: ...


def lean_app(app: Any) -> LeanRoutes | None:
    """The app with lean routes under ``app`` when only ``BYPASSED`` wrappers are between
    them."""
    while isinstance(app, BYPASSED):
        app = app.app
    return app if isinstance(app, LeanRoutes) else None


class DirectAnswer:
    """The ASGI app one lean request runs as: its endpoint, with its 200 written whole on
    the request's cycle."""

    __slots__ = ("cycle", "endpoint")

    def __init__(self, endpoint: LeanEndpoint, cycle: RequestResponseCycle) -> None:
        self.endpoint = endpoint
        self.cycle = cycle

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.endpoint.answer(scope, receive, send, self.write)

    def write(self, content: bytes, headers: tuple[tuple[bytes, bytes], ...]) -> bool:
        return write_json(self.cycle, content, headers)


def write_json(cycle: RequestResponseCycle, content: bytes,
               headers: tuple[tuple[bytes, bytes], ...]) -> bool:
    """Write a 200 answer whole and complete ``cycle`` as uvicorn's ``send`` does for the
    two messages ``http.response.start`` (content-length, content-type, ``headers``) and
    ``http.response.body``; False, having done nothing, when ``send`` must (see above)."""
    if cycle.flow.write_paused or cycle.response_started:
        return False
    if cycle.disconnected:  # what send does: nothing
        return True
    cycle.response_started = True
    cycle.waiting_for_100_continue = False
    parts = [_OK]
    for name, value in cycle.default_headers:  # the date (and what --header adds)
        parts += (name, b": ", value, b"\r\n")
    parts.append(_JSON_HEAD % len(content))
    for name, value in headers:  # ours: names lower case, values checked (request ids)
        parts += (name, b": ", value, b"\r\n")
    if not cycle.keep_alive:
        parts.append(b"connection: close\r\n")
    parts += (b"\r\n", content)
    cycle.transport.write(b"".join(parts))
    cycle.response_complete = True
    cycle.message_event.set()
    if not cycle.keep_alive:
        cycle.transport.close()
    cycle.on_response()
    return True
