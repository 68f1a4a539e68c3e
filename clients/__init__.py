"""Python clients of the CTR service (``ctr serve``), sync and async, over httpx.

This package talks HTTP only: it imports neither ``ftrl_core`` nor ``service``; the OpenAPI
schema of the service is the contract.

>>> from clients import CTRClient, ValidationError                 # doctest: +SKIP
>>> with CTRClient("http://127.0.0.1:8000", api_key="k") as ctr:    # doctest: +SKIP
...     r = ctr.train([{"label": 0, "features": {"site": "a.com", "price": 0.37}}])
...     ctr.predict([{"features": {"site": "a.com"}}]).p
"""

from .async_client import AsyncCTRClient
from .exceptions import (
    AuthenticationError,
    BadRequestError,
    ConflictError,
    CTRConnectionError,
    CTRError,
    CTRTimeoutError,
    MethodNotAllowedError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    ServerError,
    ServiceUnavailableError,
    UnsupportedMediaTypeError,
    ValidationError,
)
from .results import DownloadResult, PredictResult, StreamError, StreamResult, TrainResult
from .sync_client import CTRClient

__all__ = [
    "AsyncCTRClient",
    "AuthenticationError",
    "BadRequestError",
    "CTRClient",
    "CTRConnectionError",
    "CTRError",
    "CTRTimeoutError",
    "ConflictError",
    "DownloadResult",
    "MethodNotAllowedError",
    "NotFoundError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "PredictResult",
    "ServerError",
    "ServiceUnavailableError",
    "StreamError",
    "StreamResult",
    "TrainResult",
    "UnsupportedMediaTypeError",
    "ValidationError",
]
