"""Liveness, readiness and Prometheus metrics (always open, no API key)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import Response

from ..bodies import json_response
from ..errors import not_ready
from ..schemas import Health, problems
from ..stores import MemoryStore
from .deps import Learner

router = APIRouter(tags=["operations"])

_OK = b'{"status":"ok"}'


@router.get("/healthz", response_model=Health)
async def healthz() -> Response:
    """The process answers (200 always)."""
    return Response(_OK, media_type="application/json")


@router.get("/readyz", response_model=Health, responses=problems(503))
async def readyz(learner: Learner) -> Response:
    """200 once the model is loaded and the kernels are compiled; 503 before. With a
    shared state store, the body says whether it is reachable ("degraded": training answers
    503, predictions serve from the cache)."""
    if not learner.ready:
        raise not_ready("the model is loading and the kernels are compiling")
    if isinstance(learner.store, MemoryStore):
        return Response(_OK, media_type="application/json")
    store = learner.store.status()
    return json_response({"status": "ok" if store.get("healthy") else "degraded",
                          "store": store})


@router.get("/metrics", response_class=Response, responses={200: {
    "content": {CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}},
    "description": "Prometheus text format"}})
async def metrics(request: Request, learner: Learner) -> Response:
    """Events learned, predictions, latency per route, nnz, L1 norm, progressive logloss."""
    if learner.ready:
        await learner.stats()  # refresh the cached sparsity figures (once per version)
    return Response(generate_latest(request.app.state.metrics.registry),
                    media_type=CONTENT_TYPE_LATEST)
