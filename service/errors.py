"""Problems (RFC 9457): every error the service returns is ``application/problem+json``.

A problem has ``type`` (a URI naming the kind of problem, ``about:blank`` when the status
says it all), ``title`` (the same for every problem of a type), ``status``, ``detail`` (this
occurrence, in words) and extension members (``errors`` for invalid events, ``request_id``
for failures). Routes and the learner service raise ``Problem``; the handlers here turn it,
Starlette's HTTP errors (404, 405), FastAPI's parameter errors and the state stores' errors
(``stores.errors``: 503 with ``Retry-After``, nothing learned) into problem responses.
Unexpected exceptions are turned into 500 problems by ``observability.RequestMiddleware``,
which knows the request id.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

import msgspec
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from .stores.errors import DurabilityError, NotYetDurable, StoreError

PROBLEM_MEDIA_TYPE = "application/problem+json"
TYPE_BASE = "https://ctr-online.dev/problems/"

#: slug -> title, for the problems that have a type of their own
TITLES = {
    "malformed-json": "Malformed JSON",
    "invalid-events": "Invalid events",
    "invalid-parameters": "Invalid parameters",
    "body-too-large": "Request body too large",
    "line-too-long": "Stream line too large",
    "stream-failed": "Stream failed",
    "body-timeout": "Request body too slow",
    "header-timeout": "Request head too slow",
    "too-many-fields": "Too many fields",
    "unsupported-media-type": "Unsupported media type",
    "missing-credentials": "Missing credentials",
    "invalid-credentials": "Invalid credentials",
    "not-ready": "Service not ready",
    "no-data-dir": "No data directory",
    "store-unavailable": "State store unavailable",
    "not-durable": "Write-ahead log unavailable",
    "not-yet-durable": "Learned, not yet durable",
    "invalid-idempotency-key": "Invalid Idempotency-Key",
    "idempotency-key-in-use": "Idempotency-Key in use",
    "join-unsupported": "The attribution join is not available here",
    "idempotency-key-reused": "Idempotency-Key reused",
}


class Problem(Exception):
    """An error response: raise it anywhere below a route."""

    def __init__(self, status: int, slug: str | None = None, detail: str | None = None,
                 headers: dict[str, str] | None = None, **extensions: Any) -> None:
        self.status = status
        self.slug = slug
        self.detail = detail
        self.headers = headers
        self.extensions = extensions
        super().__init__(detail or HTTPStatus(status).phrase)

    def body(self) -> dict[str, Any]:
        if self.slug is None:
            type_, title = "about:blank", HTTPStatus(self.status).phrase
        else:
            type_, title = TYPE_BASE + self.slug, TITLES[self.slug]
        out: dict[str, Any] = {"type": type_, "title": title, "status": self.status}
        if self.detail is not None:
            out["detail"] = self.detail
        out.update(self.extensions)
        return out

    def response(self) -> Response:
        return Response(msgspec.json.encode(self.body()), status_code=self.status,
                        headers=self.headers, media_type=PROBLEM_MEDIA_TYPE)


def not_ready(detail: str) -> Problem:
    return Problem(503, "not-ready", detail, headers={"Retry-After": "1"})


async def _problem(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Problem)
    return exc.response()


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail if exc.detail != HTTPStatus(exc.status_code).phrase else None
    if exc.status_code == 404:
        detail = f"no route {request.url.path}"
    elif exc.status_code == 405:
        allow = (exc.headers or {}).get("Allow") or (exc.headers or {}).get("allow")
        detail = f"{request.method} is not allowed on {request.url.path}" + (
            f" (allowed: {allow})" if allow else "")
    return Problem(exc.status_code, None, detail,
                   headers=dict(exc.headers) if exc.headers else None).response()


async def _invalid_parameters(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = []
    for err in exc.errors():
        loc = [str(part) for part in err.get("loc", ()) if part not in ("query", "path", "body")]
        errors.append({"field": ".".join(loc), "detail": str(err.get("msg", "invalid"))})
    detail = "; ".join(f"{e['field']}: {e['detail']}" for e in errors) or "invalid parameters"
    return Problem(422, "invalid-parameters", detail, errors=errors).response()


def store_problem(exc: StoreError) -> Problem:
    """The problem of a store error: the request was refused having learned nothing (but
    ``NotYetDurable``, which says what happened instead)."""
    if isinstance(exc, NotYetDurable):
        return Problem(503, "not-yet-durable", str(exc), headers={"Retry-After": "1"})
    slug = "not-durable" if isinstance(exc, DurabilityError) else "store-unavailable"
    what = "the write-ahead log" if isinstance(exc, DurabilityError) else "the state store"
    return Problem(503, slug, f"{what} cannot take this request now; nothing was learned "
                   f"({exc})", headers={"Retry-After": "1"})


async def _store_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StoreError)
    return store_problem(exc).response()


def install_problem_handlers(app: FastAPI) -> None:
    app.add_exception_handler(StoreError, _store_error)
    app.add_exception_handler(Problem, _problem)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _invalid_parameters)
