"""The attribution join (``service.join``): ``POST /v1/impressions``, ``POST /v1/feedback``,
``GET /v1/join``.

The two POST routes are ``JsonRoute``s served by the lean path (``service.fastpath``), as
``/v1/predict`` and ``/v1/train`` are; these FastAPI routes document them and answer with
the same code when a request reaches FastAPI.
"""

from __future__ import annotations

from typing import Any

import msgspec
from fastapi import APIRouter, Request
from starlette.responses import Response

from ..bodies import json_response
from ..jsonroutes import JsonRoute, Reply, RequestHeaders, respond
from ..learner.idempotency import REPLAYED_HEADER
from ..learner.idempotency import check_key as check_idempotency_key
from ..learner.service import join_unsupported
from ..schemas import (
    IDEMPOTENCY_PARAMETER,
    FeedbackRequest,
    FeedbackResponse,
    ImpressionsRequest,
    JoinStatus,
    PredictResponse,
    problems,
    request_body,
)
from .deps import check_key, learner_of

router = APIRouter(tags=["join"])


def joins_of(service: Any) -> Any:
    """The learner service (a prediction worker's service has no join)."""
    if getattr(service, "impressions", None) is None:
        raise join_unsupported()
    return service


_REPLAYED = ((REPLAYED_HEADER.lower().encode(), b"true"),)


async def _impressions(service: Any, body: bytearray, headers: RequestHeaders) -> Reply:
    key = check_idempotency_key(headers.idempotency_key)
    p, u, version, replayed = await joins_of(service).impressions(body, key=key)
    return Reply(msgspec.json.encode({"p": p.tolist(), "uncertainty": u.tolist(),
                                      "model_version": version}),
                 _REPLAYED if replayed else ())


async def _feedback(service: Any, body: bytearray, headers: RequestHeaders) -> Reply:
    key = check_idempotency_key(headers.idempotency_key)
    answer, replayed = await joins_of(service).feedback(body, key=key)
    return Reply(msgspec.json.encode(answer), _REPLAYED if replayed else ())


IMPRESSIONS = JsonRoute("POST", "/v1/impressions", _impressions)
FEEDBACK = JsonRoute("POST", "/v1/feedback", _feedback)


@router.post("/v1/impressions", response_model=PredictResponse,
             responses=problems(400, 401, 403, 408, 409, 413, 415, 422, 501, 503,
                                keyed=True),
             openapi_extra=request_body(ImpressionsRequest, headers=[IDEMPOTENCY_PARAMETER]))
async def impressions(request: Request) -> Response:
    """Score impressions (the answer is `/v1/predict`'s) and remember each as shown until
    its click joins it or its attribution window (`--join-window`, event time: `ts`)
    closes; then it is learned as `--join-policy` says. Answered once the request is in
    the write-ahead log (with a data directory). A repeated id is scored, not remembered
    twice (`duplicates` in `/v1/join`). `id` is required (at most 128 bytes).

    `Idempotency-Key` works as on `/v1/train`: a retry gets the first answer (its `p` and
    `uncertainty` as float32 decimals, header `Idempotent-Replayed: true`)."""
    return await respond(request, IMPRESSIONS)


@router.post("/v1/feedback", response_model=FeedbackResponse,
             responses=problems(400, 401, 403, 408, 409, 413, 415, 422, 501, 503,
                                keyed=True),
             openapi_extra=request_body(FeedbackRequest, headers=[IDEMPOTENCY_PARAMETER]))
async def feedback(request: Request) -> Response:
    """Clicks (`label` 1, the default) join their pending impression; `label` 0 closes it at
    once as a negative. Ids unknown, already closed or past their window are counted
    (`unknown`, `late`), not refused. `Idempotency-Key` works as on `/v1/train`."""
    return await respond(request, FEEDBACK)


@router.get("/v1/join", response_model=JoinStatus, responses=problems(401, 403, 501, 503))
async def join_status(request: Request) -> Response:
    """The join's state: pending impressions and the bytes they hold, joins, expiries,
    late and unknown clicks, the click-delay histogram."""
    check_key(request)
    return json_response(await joins_of(learner_of(request)).join_status())
