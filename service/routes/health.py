"""Liveness, readiness and Prometheus metrics (always open, no API key)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import Response

from ..bodies import json_response
from ..errors import Problem, not_ready
from ..schemas import Health, problems
from .deps import Learner

router = APIRouter(tags=["operations"])

_OK = b'{"status":"ok"}'


@router.get("/healthz", response_model=Health)
async def healthz() -> Response:
    """The process answers (200 always)."""
    return Response(_OK, media_type="application/json")


@router.get("/readyz", response_model=Health, responses=problems(503))
async def readyz(learner: Learner) -> Response:
    """200 once the model is loaded and the kernels are compiled, and while the state store
    works; 503 before, and while it is degraded (a shard that does not answer a PING within
    a second, a flush kept after a failure, a write-ahead log that failed): training
    answers 503 then, predictions keep serving. The body has the store's state."""
    if not learner.ready:
        raise not_ready("the model is loading and the kernels are compiling")
    store = learner.store.status()
    if not store.get("healthy"):
        raise Problem(503, "store-unavailable", f"degraded: {store.get('error')}",
                      headers={"Retry-After": "1"}, status_detail="degraded", store=store)
    return json_response({"status": "ok", "store": store})


@router.get("/metrics", response_class=Response, responses={200: {
    "content": {CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}},
    "description": "Prometheus text format"}})
async def metrics(request: Request, learner: Learner) -> Response:
    """Events learned, predictions, latency per route, nnz, L1 norm, progressive logloss."""
    if learner.ready:
        await learner.stats()  # refresh the cached sparsity figures (once per version)
    return Response(generate_latest(request.app.state.metrics.registry),
                    media_type=CONTENT_TYPE_LATEST)
