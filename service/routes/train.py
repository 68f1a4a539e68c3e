"""Learning: ``POST /v1/train`` (a batch, whole or nothing) and ``/v1/train/stream``.

``/v1/train`` is served by the lean path (``service.fastpath``); its FastAPI route documents
it and answers with the same code (``jsonroutes``) when a request reaches FastAPI.
"""

from __future__ import annotations

import msgspec
from fastapi import APIRouter, Request
from starlette.responses import Response

from ..bodies import content_encoding, decoded_stream, json_response, require_ndjson
from ..jsonroutes import JsonRoute, Reply, RequestHeaders, respond
from ..learner import LearnerService
from ..learner.idempotency import REPLAYED_HEADER
from ..learner.idempotency import check_key as check_idempotency_key
from ..ndjson import learn_stream
from ..schemas import (
    IDEMPOTENCY_PARAMETER,
    NDJSON_BODY,
    StreamResponse,
    TrainRequest,
    TrainResponse,
    problems,
    request_body,
)
from .deps import check_key, learner_of

router = APIRouter(tags=["training"])


_REPLAYED = ((REPLAYED_HEADER.lower().encode(), b"true"),)


async def _answer(learner: LearnerService, body: bytearray, headers: RequestHeaders
                  ) -> Reply:
    key = check_idempotency_key(headers.idempotency_key)
    p, version, replayed = await learner.train(body, key)
    content = msgspec.json.encode({"p": p.tolist(), "accepted": int(p.size),
                                   "model_version": version})
    return Reply(content, _REPLAYED if replayed else ())


TRAIN = JsonRoute("POST", "/v1/train", _answer)


@router.post("/v1/train", response_model=TrainResponse,
             responses=problems(400, 401, 403, 408, 409, 413, 415, 422, 503, keyed=True),
             openapi_extra=request_body(TrainRequest, headers=[IDEMPOTENCY_PARAMETER]))
async def train(request: Request) -> Response:
    """Learn the events in order. Each `p` is predicted before its event is learned. A
    batch with any invalid event is rejected whole (422) and nothing of it is learned. The
    answer comes once the batch is durable (with a data directory: in its write-ahead log).
    Gzip bodies are accepted (`Content-Encoding: gzip`).

    `Idempotency-Key: <1-128 visible ASCII>` makes a retry safe: a key seen within the
    dedupe window gets its first answer again (header `Idempotent-Replayed: true`) and is
    not learned twice; 409 while its first request is still being made durable, 422 if it
    was used for another body."""
    return await respond(request, TRAIN)


@router.post("/v1/train/stream", response_model=StreamResponse,
             responses=problems(400, 401, 403, 408, 413, 415, 503),
             openapi_extra=NDJSON_BODY)
async def train_stream(request: Request) -> Response:
    """Learn an NDJSON body (one event per line) while it arrives. Bad lines are skipped
    and reported; the size limit applies to one line, not to the stream, and so does the
    body timeout. A failure that stops the stream carries the summary of what was learned
    before it."""
    check_key(request)
    require_ndjson(request)
    content_encoding(request)
    learner = learner_of(request)
    learner.require_ready()
    settings = learner.settings
    summary = await learn_stream(learner, decoded_stream(request), settings.max_body_bytes,
                                 settings.body_timeout)
    return json_response(summary)
