"""The client's exceptions: one class per kind of failure, each carrying the problem.

The service answers every error with an RFC 9457 problem (``application/problem+json``:
``type``, ``title``, ``status``, ``detail`` and extension members such as ``errors``); the
client raises the class of its status with those fields as attributes, so callers can write
``except ValidationError as e: e.errors`` without parsing anything::

    CTRError
    ├── BadRequestError            400 (malformed JSON)
    ├── AuthenticationError        401 (no or unknown API key)
    ├── PermissionDeniedError      403
    ├── NotFoundError              404
    ├── MethodNotAllowedError      405
    ├── ConflictError              409 (e.g. a snapshot with no snapshot directory)
    ├── PayloadTooLargeError       413
    ├── UnsupportedMediaTypeError  415
    ├── ValidationError            422 (``errors``: index, field, detail of each bad event)
    ├── ServerError                5xx
    │   └── ServiceUnavailableError  503 (``retry_after`` in seconds, if the server said)
    └── CTRConnectionError         no response at all (refused, reset, timed out)
        └── CTRTimeoutError
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AuthenticationError", "BadRequestError", "CTRConnectionError", "CTRError",
    "CTRTimeoutError", "ConflictError", "MethodNotAllowedError", "NotFoundError",
    "PayloadTooLargeError", "PermissionDeniedError", "ServerError", "ServiceUnavailableError",
    "UnsupportedMediaTypeError", "ValidationError", "error_for_status",
]


class CTRError(Exception):
    """A request the service did not carry out; ``status`` is None when it never answered."""

    def __init__(self, status: int | None = None, title: str = "", detail: str = "",
                 type: str = "about:blank", errors: list[dict[str, Any]] | None = None,
                 body: Any = None) -> None:
        self.status = status
        self.title = title
        self.detail = detail
        self.type = type
        #: the problem's ``errors`` member (for 422: ``index``, ``field``, ``detail``)
        self.errors: list[dict[str, Any]] = list(errors or [])
        #: the whole decoded problem (extension members included), or the raw text
        self.body = body
        super().__init__(self._message())

    def _message(self) -> str:
        head = f"{self.status} {self.title}".strip() if self.status else self.title
        text = f"{head}: {self.detail}" if self.detail and head else (head or self.detail)
        if self.errors:
            shown = "; ".join(_describe(e) for e in self.errors[:3])
            more = f" (+{len(self.errors) - 3} more)" if len(self.errors) > 3 else ""
            text = f"{text} [{shown}{more}]"
        return text

    def __reduce__(self) -> tuple[Any, ...]:  # picklable across processes, fields intact
        return (_rebuild, (type(self), self.__dict__))


def _rebuild(cls: type[CTRError], state: dict[str, Any]) -> CTRError:
    err = cls.__new__(cls)
    err.__dict__.update(state)
    Exception.__init__(err, err._message())
    return err


def _describe(e: dict[str, Any]) -> str:
    where = ", ".join(f"{k} {e[k]}" for k in ("index", "line", "field") if e.get(k) is not None)
    return f"{where}: {e.get('detail', '')}" if where else str(e.get("detail", e))


class BadRequestError(CTRError):
    """400: the body is not JSON, or not the expected shape."""


class AuthenticationError(CTRError):
    """401: the request carried no API key, or one the server does not know."""


class PermissionDeniedError(CTRError):
    """403: the key is known but may not do this."""


class NotFoundError(CTRError):
    """404: no such route (or resource)."""


class MethodNotAllowedError(CTRError):
    """405: the route exists, not with this method."""


class ConflictError(CTRError):
    """409: the server cannot do this in its configuration (e.g. no snapshot directory)."""


class PayloadTooLargeError(CTRError):
    """413: the body is over the server's limit; send smaller batches."""


class UnsupportedMediaTypeError(CTRError):
    """415: wrong ``Content-Type`` for the route."""


class ValidationError(CTRError):
    """422: some events are invalid; the whole batch was rejected and nothing learned."""


class ServerError(CTRError):
    """5xx: the server failed; the problem carries no internals."""


class ServiceUnavailableError(ServerError):
    """503: not ready yet, or shutting down; worth retrying after ``retry_after`` seconds."""

    def __init__(self, *args: Any, retry_after: float | None = None, **kw: Any) -> None:
        self.retry_after = retry_after
        super().__init__(*args, **kw)


class CTRConnectionError(CTRError):
    """No response: connection refused or reset, or the server closed it mid-request."""

    def __init__(self, detail: str, sent: bool = False) -> None:
        #: whether the request may have reached the server (then a retry is not safe for
        #: training: the batch might be learned twice)
        self.sent = sent
        super().__init__(None, "connection error", detail)


class CTRTimeoutError(CTRConnectionError):
    """The server did not answer within the client's timeout."""


_BY_STATUS: dict[int, type[CTRError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    405: MethodNotAllowedError,
    409: ConflictError,
    413: PayloadTooLargeError,
    415: UnsupportedMediaTypeError,
    422: ValidationError,
    503: ServiceUnavailableError,
}


def error_for_status(status: int, problem: dict[str, Any] | None, text: str = "",
                     retry_after: float | None = None) -> CTRError:
    """The exception for an error response with decoded problem ``problem`` (None if the
    body was not a JSON object; ``text`` is then the body)."""
    cls = _BY_STATUS.get(status) or (ServerError if status >= 500 else CTRError)
    p = problem or {}
    errors = p.get("errors")
    kw: dict[str, Any] = {
        "title": str(p.get("title") or ""),
        "detail": str(p.get("detail") or ("" if problem is not None else text[:500])),
        "type": str(p.get("type") or "about:blank"),
        "errors": errors if isinstance(errors, list) else None,
        "body": problem if problem is not None else text,
    }
    if cls is ServiceUnavailableError:
        return ServiceUnavailableError(status, retry_after=retry_after, **kw)
    return cls(status, **kw)
