"""A lean ASGI path in front of the FastAPI app, for the hot routes.

FastAPI's routing, dependency and middleware machinery costs several times a bare ASGI app
per request: on the machine this was built on, a trivial FastAPI route answered at a third
of a bare ASGI app's rate on the same uvicorn, and single-event predictions through FastAPI
at a fifth (bench/predict_latency.py prints both references beside the predictions).

``LeanFastAPI.__call__`` looks the request's (method, path) up in a dict; the routes of
``LEAN_ROUTES`` are answered there, everything else goes to FastAPI as before (another
method, a trailing slash: FastAPI's 405, redirect or 404 problems). A lean route:

- runs ``jsonroutes.run``, the checks and answer its FastAPI route runs too (API key in
  constant time, media type, body size, readiness), on the raw ASGI headers and
  ``receive``, with no ``Request`` or ``Response`` object on the way of a 200;
- turns a ``Problem`` into its problem+json response exactly as the app's handler does;
- does what ``observability.RequestMiddleware`` does for the other routes, with its
  helpers: request ids, the latency histogram per route (labelled by the FastAPI route's
  path, as FastAPI's) and 500 problems carrying the request id for unexpected errors.

The FastAPI routes stay: OpenAPI documents the lean routes from them, and they answer with
the same code when a request reaches FastAPI (tests/test_service_fastpath.py sends the same
requests both ways over HTTP and compares the answers). Adding a route is one line in
``LEAN_ROUTES`` (its FastAPI route must call ``jsonroutes.respond`` with the same
``JsonRoute``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.datastructures import State
from starlette.types import Message, Receive, Scope, Send

from .errors import Problem
from .jsonroutes import JsonRoute, request_headers, run
from .observability import (
    REQUEST_ID_KEY,
    AppMetrics,
    RequestIds,
    answer_failure,
    sane_request_id,
)
from .routes.join import FEEDBACK, IMPRESSIONS
from .routes.predict import PREDICT
from .routes.train import TRAIN

#: the routes answered by the lean path
LEAN_ROUTES: tuple[JsonRoute, ...] = (
    PREDICT,
    TRAIN,
    IMPRESSIONS,
    FEEDBACK,
)

_JSON = (b"content-type", b"application/json")

#: writes a whole 200 JSON answer (body, the headers after content-length and content-type)
#: on the connection; False: declined, the answer goes the ASGI way (``direct``)
WholeWriter = Callable[[bytes, tuple[tuple[bytes, bytes], ...]], bool]


class LeanEndpoint:
    """One ``JsonRoute`` as a plain ASGI app. ``state`` holds ``keys`` and ``learner`` (the
    app's state); ``label`` is what ``scope["route"]`` gets: the metrics read its ``path``
    (the FastAPI route object, as FastAPI's router sets it).

    It does the request middleware's duties itself, with its helpers (request ids, the
    latency histogram, 500 problems): wrapping ``send`` and scanning the headers twice
    cost a fifth of a single-event prediction in the app."""

    def __init__(self, state: Any, route: JsonRoute, label: Any, metrics: Any) -> None:
        self.state = state
        self.route = route
        self.label = label
        self.metrics = metrics
        self._ids = RequestIds()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.answer(scope, receive, send, None)

    async def answer(self, scope: Scope, receive: Receive, send: Send,
                     whole: WholeWriter | None) -> None:
        """The route's answer; a 200 goes to ``whole`` (the response's body and headers
        beside the usual two) when given, unless it declines (then, as without it, to
        ``send``)."""
        start = time.perf_counter()
        headers = request_headers(scope["headers"])
        given = sane_request_id(headers.request_id)
        rid_bytes = given.encode() if given is not None else self._ids.next_bytes()
        rid_header = (b"x-request-id", rid_bytes)
        rid = scope[REQUEST_ID_KEY] = given or rid_bytes.decode()
        scope["route"] = self.label
        status = 500
        started = False
        try:
            try:
                reply = await run(self.route, self.state, headers, receive)
            except Problem as exc:
                response = exc.response()
                response.raw_headers.append(rid_header)
                status, started = exc.status, True
                await response(scope, receive, send)
            else:
                # the headers Starlette's Response(content, media_type="application/json")
                # sends, and the request id
                status, started = 200, True
                content = reply.content
                if whole is not None and whole(content, (*reply.headers, rid_header)):
                    return
                await send({"type": "http.response.start", "status": 200, "headers": [
                    (b"content-length", b"%d" % len(content)), _JSON, *reply.headers,
                    rid_header]})
                await send({"type": "http.response.body", "body": content})
        except Exception as exc:

            async def send_tagged(message: Message) -> None:
                if message["type"] == "http.response.start":
                    message["headers"] = [*message.get("headers", ()), rid_header]
                await send(message)

            status = await answer_failure(exc, scope, receive, send_tagged, rid, started)
        finally:
            self.metrics.observe(self.label.path, scope["method"], status,
                                 time.perf_counter() - start)


class PlainState(State):
    """Starlette's ``State`` whose attributes are plain instance attributes too, so reading
    one needs no ``__getattr__`` call (the lean path reads two per request)."""

    def __setattr__(self, key: Any, value: Any) -> None:
        super().__setattr__(key, value)
        object.__setattr__(self, key, value)

    def __delattr__(self, key: Any) -> None:
        super().__delattr__(key)
        object.__delattr__(self, key)

    def __setitem__(self, key: str, value: Any) -> None:
        self.__setattr__(key, value)

    def __delitem__(self, key: str) -> None:
        self.__delattr__(key)


class LeanFastAPI(FastAPI):
    """FastAPI, with the routes given to ``serve_lean`` answered in front of it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.state = PlainState()
        self._lean: dict[str, tuple[str, LeanEndpoint]] = {}

    def serve_lean(self, routes: Iterable[JsonRoute], metrics: AppMetrics) -> None:
        """Answer ``routes`` on the lean path, counted in ``metrics``. Each must have its
        FastAPI route (included already), which documents it."""
        api_routes = _api_routes(self)
        lean: dict[str, tuple[str, LeanEndpoint]] = {}  # path: (method, endpoint)
        for route in routes:
            found = [r for r in api_routes
                     if r.path == route.path and route.method in (r.methods or ())]
            if len(found) != 1:
                raise LookupError(f"lean route {route.method} {route.path}: "
                                  f"{len(found)} FastAPI routes document it")
            if route.path in lean:
                raise ValueError(f"lean routes: one method per path ({route.path})")
            lean[route.path] = (route.method, LeanEndpoint(self.state, route, found[0],
                                                           metrics))
        self._lean = lean

    def lean_endpoint(self, path: str, method: str) -> LeanEndpoint | None:
        """The lean route answering ``method path``, if one does."""
        lean = self._lean.get(path)
        return lean[1] if lean is not None and lean[0] == method else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            endpoint = self.lean_endpoint(scope["path"], scope["method"])
            if endpoint is not None:
                await endpoint(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


def _api_routes(app: FastAPI) -> list[APIRoute]:
    """The app's API routes, those of included routers too (recent FastAPI versions include
    routers lazily; older ones copy their routes into ``app.routes``)."""
    try:
        from fastapi.routing import iter_route_contexts  # type: ignore[attr-defined]
    except ImportError:  # an older FastAPI
        return [r for r in app.routes if isinstance(r, APIRoute)]
    return [c.route for c in iter_route_contexts(app.routes) if isinstance(c.route, APIRoute)]
