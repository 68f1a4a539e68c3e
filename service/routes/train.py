"""Learning: ``POST /v1/train`` (a batch, whole or nothing) and ``/v1/train/stream``."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from ..bodies import json_response, read_body, require_json, require_ndjson
from ..schemas import (
    NDJSON_BODY,
    StreamResponse,
    TrainRequest,
    TrainResponse,
    problems,
    request_body,
)
from ..stream import learn_stream
from .deps import check_key, learner_of

router = APIRouter(tags=["training"])


@router.post("/v1/train", response_model=TrainResponse,
             responses=problems(400, 401, 403, 413, 415, 422, 503),
             openapi_extra=request_body(TrainRequest))
async def train(request: Request) -> Response:
    """Learn the events in order. Each `p` is predicted before its event is learned. A
    batch with any invalid event is rejected whole (422) and nothing of it is learned."""
    check_key(request)
    require_json(request)
    learner = learner_of(request)
    learner.require_ready()
    body = await read_body(request, learner.settings.max_body_bytes)
    p, version = await learner.train(body)
    return json_response({"p": p.tolist(), "accepted": int(p.size), "model_version": version})


@router.post("/v1/train/stream", response_model=StreamResponse,
             responses=problems(401, 403, 413, 415, 503), openapi_extra=NDJSON_BODY)
async def train_stream(request: Request) -> Response:
    """Learn an NDJSON body (one event per line) while it arrives. Bad lines are skipped
    and reported; the size limit applies to one line, not to the stream."""
    check_key(request)
    require_ndjson(request)
    learner = learner_of(request)
    learner.require_ready()
    summary = await learn_stream(learner, request.stream(), learner.settings.max_body_bytes)
    return json_response(summary)
