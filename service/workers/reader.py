"""A prediction worker: ``POST /v1/predict`` from the learner's shared model, ``/healthz``
and ``/readyz`` of its own, and everything else forwarded to the learner (``proxy``).

Predictions go through the same code as the learner's lean path (``jsonroutes`` with the
``PREDICT`` route: keys, media type, size limit, problems) and the same request middleware
(request ids, 500 problems); their counts and latencies go to this worker's row of the
shared counters (``stats``), which the learner's ``/metrics`` adds up.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from ftrl_core.model import Model
from ftrl_core.readers.jsonl import JsonlFormat

from ..auth import ApiKeys, load_keys
from ..errors import Problem, not_ready
from ..events import body_problem
from ..fastpath import LeanEndpoint
from ..observability import REQUEST_ID_KEY, RequestMiddleware
from ..routes.predict import PREDICT
from ..settings import Settings
from . import shm
from .proxy import LearnerProxy
from .stats import ReaderRow
from .view import SharedModel

log = logging.getLogger(__name__)

_OK = b'{"status":"ok"}'
_WARM_UP = json.dumps({"events": [{"features": {"site": "a.com", "price": 0.37,
                                                "tags": ["x", "y"], "c9": None}}]}).encode()


class ReaderService:
    """What the predict route needs of a service, from the shared model."""

    def __init__(self, settings: Settings, directory: Path) -> None:
        self.settings = settings
        self.directory = directory
        self.shared = SharedModel(directory, settings.strict)
        self.ready = False
        self.row: ReaderRow | None = None

    def start(self) -> None:
        """Claim a counters row, map the published model, load the kernels."""
        self.row = ReaderRow(self.directory)
        if not self.shared.refresh():
            raise RuntimeError(f"no model is published in {self.directory} yet")
        assert self.shared.model is not None
        throwaway = Model.from_config(self.shared.model.config())
        throwaway.predict_json(bytearray(_WARM_UP),
                               JsonlFormat(throwaway.registry, throwaway.options))
        self.ready = True

    def require_ready(self) -> None:
        if not self.ready or not self.shared.refresh():
            raise not_ready("the model is loading and the kernels are compiling")

    def predict(self, body: bytes | bytearray, events_only: bool = False
                ) -> tuple[np.ndarray, np.ndarray, int] | None:
        version = self.shared.version  # the prediction reflects at least this version
        scored = self.shared.predict(body, events_only)
        if scored is None:
            return None
        p, u, errors = scored
        if errors:
            raise body_problem(body, sorted(errors, key=lambda e: e.index),
                               "nothing was predicted")
        if self.row is not None:
            self.row.add_predictions(p.size)
        return p, u, version


class ReaderMetrics:
    """The request middleware's metrics: predictions into this worker's shared row."""

    def __init__(self, service: ReaderService) -> None:
        self.service = service

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        if route == PREDICT.path and method == PREDICT.method and self.service.row is not None:
            self.service.row.observe(status, seconds)


class ReaderApp:
    """The ASGI app of a prediction worker."""

    def __init__(self, settings: Settings, directory: Path) -> None:
        self.settings = settings
        self.service = ReaderService(settings, directory)
        self.state = SimpleNamespace(keys=None, learner=None)
        self.proxy = LearnerProxy(shm.learner_socket(directory))
        metrics: Any = ReaderMetrics(self.service)
        label = SimpleNamespace(path=PREDICT.path)

        def wrap(app: ASGIApp) -> ASGIApp:
            return RequestMiddleware(app, metrics=metrics)

        self._local: dict[tuple[str, str], ASGIApp] = {
            (PREDICT.method, PREDICT.path): LeanEndpoint(self.state, PREDICT, label, metrics),
            ("GET", "/healthz"): wrap(self._healthz),
            ("GET", "/readyz"): wrap(self._readyz)}
        self._forward = wrap(self._proxied)

    def lean_endpoint(self, path: str, method: str) -> LeanEndpoint | None:
        """The lean route answering ``method path`` (predictions), for the connection to
        run itself (``direct``)."""
        app = self._local.get((method, path))
        return app if isinstance(app, LeanEndpoint) else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            app = self._local.get((scope["method"], scope["path"]), self._forward)
            await app(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        await receive()  # startup
        try:
            self.state.keys = ApiKeys(load_keys(self.settings), self.settings.predict_open)
            self.service.start()
            self.state.learner = self.service
        except Exception as exc:
            log.exception("the prediction worker could not start")
            await send({"type": "lifespan.startup.failed", "message": str(exc)})
            return
        await send({"type": "lifespan.startup.complete"})
        await receive()  # shutdown
        await self.proxy.aclose()
        await send({"type": "lifespan.shutdown.complete"})

    async def _healthz(self, scope: Scope, receive: Receive, send: Send) -> None:
        await Response(_OK, media_type="application/json")(scope, receive, send)

    async def _readyz(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            self.service.require_ready()
        except Problem as exc:
            await exc.response()(scope, receive, send)
            return
        await Response(_OK, media_type="application/json")(scope, receive, send)

    async def _proxied(self, scope: Scope, receive: Receive, send: Send) -> None:
        # the learner answers with the request id the middleware gave this request (its
        # own X-Request-ID header is dropped: the middleware adds the same one)
        rid = (b"x-request-id", scope[REQUEST_ID_KEY].encode())
        scope = {**scope, "headers": [*((k, v) for k, v in scope["headers"]
                                        if k != b"x-request-id"), rid]}

        async def send_untagged(message: Any) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [(k, v) for k, v in message["headers"]
                                      if k.lower() != b"x-request-id"]
            await send(message)

        await self.proxy(scope, receive, send_untagged)


def create_reader_app(settings: Settings, directory: Path) -> ReaderApp:
    """The factory uvicorn calls in each prediction worker process."""
    return ReaderApp(settings, directory)
