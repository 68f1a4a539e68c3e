"""The FastAPI application, built by ``create_app(settings)``.

Nothing is built at import time. The lifespan opens the state store and loads (or builds)
the model, which must succeed for the server to start, then warms the kernels up in the
background (``/readyz`` says when) and snapshots periodically; on shutdown, after uvicorn
has drained the requests in flight, it writes the final snapshot.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from starlette.staticfiles import StaticFiles

from . import connections, schemas
from .auth import ApiKeys, load_keys
from .errors import install_problem_handlers
from .fastpath import LEAN_ROUTES, LeanFastAPI
from .history import Sampler, StatsHistory
from .learner import LearnerService
from .observability import AppMetrics, RequestMiddleware
from .routes import ROUTERS
from .routes.dashboard import STATIC_DIR
from .settings import Settings
from .startup import check_startup, model_builder, store_for

log = logging.getLogger(__name__)

DESCRIPTION = """\
Learns click-through rates from events as they arrive (FTRL-Proximal, L1-RDA, L1-FOBOS,
truncated gradient, all exact and sparse) and predicts at once.

Every error is `application/problem+json` (RFC 9457). With API keys configured, `/v1/` routes
need `Authorization: Bearer <key>` (`/v1/predict`, `/v1/variants` and `/v1/stats` may be
left open); `/healthz`, `/readyz`, `/metrics` and the `/dashboard` page are always open.
"""


def create_app(settings: Settings | None = None, *, lean: bool = True,
               shared_dir: Path | None = None) -> FastAPI:
    """The app; ``lean=False`` leaves every route to FastAPI (the lean path's reference in
    tests/test_service_fastpath.py). With ``shared_dir``, the app is the learner process of
    prediction workers (``service.workers``): its model is published there for them."""
    settings = settings if settings is not None else Settings()
    connections.configure(settings.header_timeout, settings.max_connections)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        check_startup(settings)
        app.state.keys = ApiKeys(load_keys(settings), settings.predict_open)
        store = store_for(settings, shared_dir=shared_dir)
        learner = LearnerService(settings, store, model_builder(settings))
        try:
            await learner.open()
        except BaseException:
            await store.close()
            raise
        app.state.learner = learner
        history = StatsHistory(settings.stats_history, settings.stats_every)
        app.state.history = history
        sampler = Sampler(learner, history, app.state.metrics.predict_latency)
        tasks = [asyncio.create_task(_warm_up(learner), name="ctr-warm-up"),
                 asyncio.create_task(sampler.run(), name="ctr-stats-sampler")]
        if settings.data_dir is not None and settings.snapshot_every > 0 \
                and not getattr(store, "shared", False):
            tasks.append(asyncio.create_task(learner.snapshot_loop(settings.snapshot_every),
                                             name="ctr-snapshots"))
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await learner.close()

    app = LeanFastAPI(title="ctr-online", version="0.1.0", description=DESCRIPTION,
                      lifespan=lifespan)
    app.state.settings = settings
    app.state.learner = None
    app.state.keys = None
    app.state.history = None
    app.state.metrics = metrics = AppMetrics(lambda: app.state.learner)
    if shared_dir is not None:
        metrics.add_prediction_workers(shared_dir)
    install_problem_handlers(app)
    app.add_middleware(RequestMiddleware, metrics=metrics)
    for router in ROUTERS:
        app.include_router(router)
    if lean:
        app.serve_lean(LEAN_ROUTES, metrics)
    app.mount("/dashboard/static", StaticFiles(directory=STATIC_DIR), name="dashboard-static")

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version,
                                 description=app.description, routes=app.routes)
            schema.setdefault("components", {}).setdefault("schemas", {}).update(
                schemas.components())
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def create_app_from_env() -> FastAPI:
    """The app of a ``ctr serve --workers N`` worker process: settings from the CTR_*
    variables the parent set (``uvicorn.run("service.app:create_app_from_env",
    factory=True)``). A worker is a new interpreter: its log is set up here, as the
    parent's ``ctr`` command set up its own."""
    settings = Settings()
    service_log = logging.getLogger("service")
    service_log.setLevel(settings.log_level.upper())
    if not service_log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(
            f"%(asctime)s %(levelname)s [{os.getpid()}] %(name)s: %(message)s"))
        service_log.addHandler(handler)
        service_log.propagate = False
    return create_app(settings)


async def _warm_up(learner: LearnerService) -> None:
    try:
        await learner.warm_up()
    except Exception:
        log.exception("warming the kernels up failed; /readyz stays 503")
