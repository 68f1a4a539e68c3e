"""The hot JSON routes (``POST /v1/predict``, ``POST /v1/train``): their checks, in order,
written once for both ways a request can reach them.

A ``JsonRoute`` is a method, a path, a key rule and an ``answer`` (learner, body -> JSON
bytes). ``run`` does what such a route does, on raw ASGI pieces (the request's headers and
``receive``):

1. the API key (401/403; 503 before the lifespan loaded the keys), unless the route is a
   prediction and ``--predict-open`` is set;
2. the media type (415);
3. the learner, loaded and ready (503);
4. the body, refused by its size before it is read (413), or on a Content-Length it
   exceeds (400); gzip bodies decompressed (another encoding: 415); a body that does not
   arrive within ``--body-timeout`` is a 408;
5. the answer, which may raise a problem of its own (400, 409, 422, 503), and may add
   response headers (``Idempotent-Replayed``).

The FastAPI route calls ``respond`` (its ``Request`` in, a ``Response`` out; a problem goes
to the app's handler), and the lean path (``fastpath``) calls ``run`` and sends the answer
itself: both answer with the same code.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive

from .bodies import check_json, declared, encoding_of, read_received
from .errors import not_ready, store_problem
from .settings import Settings
from .stores.errors import StoreError


class Service(Protocol):
    """What the routes need of the service they answer for: the learner service, or a
    prediction worker's (``workers.reader``)."""

    settings: Settings

    def require_ready(self) -> None: ...




class Reply(NamedTuple):
    """A 200 answer: its JSON, and response headers beside the usual ones."""

    content: bytes
    headers: tuple[tuple[bytes, bytes], ...] = ()


class RequestHeaders(NamedTuple):
    """The request headers the routes (and the lean path's request ids) read: the first of
    each, as Starlette's ``Headers.get`` returns; names arrive lower-cased from the
    server."""

    authorization: str | None
    content_type: str | None
    content_length: str | None
    request_id: str | None
    content_encoding: str | None
    idempotency_key: str | None


_WANTED = {b"authorization": 0, b"content-type": 1, b"content-length": 2, b"x-request-id": 3,
           b"content-encoding": 4, b"idempotency-key": 5}


@dataclass(frozen=True)
class JsonRoute:
    method: str
    path: str
    #: service, body (read whole, under the size limit), request headers -> the answer
    answer: Callable[[Any, bytearray, RequestHeaders], Awaitable[Reply]]
    #: the key rule of predictions: open with ``--predict-open``
    predict: bool = False


def request_headers(raw: Iterable[tuple[bytes, bytes]]) -> RequestHeaders:
    found: list[str | None] = [None, None, None, None, None, None]
    for name, value in raw:
        i = _WANTED.get(name)
        if i is not None and found[i] is None:
            found[i] = value.decode("latin-1")
    return RequestHeaders(*found)


async def run(route: JsonRoute, state: Any, headers: RequestHeaders,
              receive: Receive) -> Reply:
    """The answer of ``route`` (raises ``Problem``); ``state`` is the app's state."""
    keys = state.keys
    if keys is None:  # loaded by the lifespan
        raise not_ready("the service is starting")
    if not (route.predict and keys.predict_open):
        keys.check_header(headers.authorization)
    check_json(headers.content_type)
    encoding = encoding_of(headers.content_encoding)
    learner: Service | None = state.learner
    if learner is None:  # before the lifespan has opened the model
        raise not_ready("the service is starting")
    learner.require_ready()
    settings = learner.settings
    body = await read_received(receive, declared(headers.content_length),
                               settings.max_body_bytes, encoding, settings.body_timeout)
    try:
        return await route.answer(learner, body, headers)
    except StoreError as exc:  # the app's handler for it is not on the lean path
        raise store_problem(exc) from exc


async def respond(request: Request, route: JsonRoute) -> Response:
    """The FastAPI route's body: ``run``, then the answer as a JSON response."""
    reply = await run(route, request.app.state, request_headers(request.scope["headers"]),
                      request.receive)
    response = Response(reply.content, media_type="application/json")
    for name, value in reply.headers:
        response.headers[name.decode("latin-1")] = value.decode("latin-1")
    return response
