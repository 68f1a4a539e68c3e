"""``POST /v1/predict``: probabilities and uncertainty, without learning."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from ..bodies import json_response, read_body, require_json
from ..schemas import PredictRequest, PredictResponse, problems, request_body
from .deps import check_predict_key, learner_of

router = APIRouter(tags=["prediction"])


@router.post("/v1/predict", response_model=PredictResponse,
             responses=problems(400, 401, 403, 413, 415, 422, 503),
             openapi_extra=request_body(PredictRequest))
async def predict(request: Request) -> Response:
    """Score events (in request order). Labels are ignored; nothing is learned."""
    check_predict_key(request)
    require_json(request)
    learner = learner_of(request)
    learner.require_ready()
    body = await read_body(request, learner.settings.max_body_bytes)
    p, u, version = learner.predict(body)
    return json_response({"p": p.tolist(), "uncertainty": u.tolist(),
                          "model_version": version})
