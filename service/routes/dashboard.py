"""The sparsity dashboard: the page, its feed (``/v1/stats``) and ``/v1/variants``.

The page and its scripts are public (they hold no data); the page asks for an API key,
keeps it in the browser's localStorage and sends it as a Bearer token to ``/v1/stats``,
which follows the read rule of ``service.auth``.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Query, Request
from starlette.responses import HTMLResponse, Response

from ftrl_core.hashing import MAX_FIELDS

from ..bodies import json_response
from ..errors import not_ready
from ..history import StatsHistory
from ..schemas import InvalidParametersProblem, StatsResponse, VariantsResponse, problems
from .deps import Learner, NeedsReadKey

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"

router = APIRouter(tags=["dashboard"])


@functools.cache
def _page() -> bytes:
    return (STATIC_DIR / "dashboard.html").read_bytes()


@router.get("/dashboard", include_in_schema=False)
async def dashboard() -> Response:
    """The dashboard page (its data comes from ``/v1/stats``)."""
    return HTMLResponse(_page(), headers={"Cache-Control": "no-cache"})


@router.get("/v1/variants", response_model=VariantsResponse, dependencies=[NeedsReadKey],
            responses=problems(401, 403, 503))
async def variants(learner: Learner) -> Response:
    """The primary (first, `primary: true`) and each shadow variant: learner, parameters,
    progressive metrics and sparsity, all at `model_version`."""
    stats = await learner.all_stats()
    return json_response({"model_version": stats[0].version,
                          "variants": [s.summary() for s in stats]})


@router.get("/v1/stats", response_model=StatsResponse, dependencies=[NeedsReadKey],
            responses=problems(401, 403, 422, 503, invalid=InvalidParametersProblem))
async def stats(request: Request,
                since: Annotated[int, Query(ge=0, description=(
                    "return only the history samples after this `seq`"))] = 0) -> Response:
    """The dashboard's feed: every learner's latest figures (per-field non-zeros and L1
    mass, |w| histogram, calibration by bucket) and the sampled history."""
    history: StatsHistory | None = request.app.state.history
    if history is None:
        raise not_ready("the service is starting")
    payload = history.payload(since)
    learner = request.app.state.learner
    if learner is not None and learner._model is not None:
        payload["field_ids"] = {"in_use": len(learner._model.registry),
                                "capacity": MAX_FIELDS,
                                "overflow_features": learner.overflow_features}
    return json_response(payload)
