"""``POST /v1/predict``: probabilities and uncertainty, without learning.

Served by the lean path (``service.fastpath``); this FastAPI route documents it and answers
with the same code (``jsonroutes``) when a request reaches FastAPI.
"""

from __future__ import annotations

from typing import Any, Protocol

import msgspec
import numpy as np
from fastapi import APIRouter, Request
from starlette.responses import Response

from ..errors import Problem
from ..jsonroutes import JsonRoute, Reply, RequestHeaders, respond
from ..schemas import PredictRequest, PredictResponse, problems, request_body
from ..settings import Settings
from .join import joins_of

router = APIRouter(tags=["prediction"])


class Predicts(Protocol):
    """The learner service, or a prediction worker's (``workers.reader``)."""

    settings: Settings

    def predict(self, body: bytes | bytearray, events_only: bool = False
                ) -> tuple[np.ndarray, np.ndarray, int] | None: ...


class _Logged(msgspec.Struct):
    log: Any = False


def _logged(body: bytearray) -> bool:
    """Whether the body asks for ``"log": true``."""
    if b'"log"' not in body:
        return False
    try:
        value = msgspec.json.decode(body, type=_Logged).log
    except (msgspec.DecodeError, msgspec.ValidationError):
        return False  # the scanner reports the body's errors
    if not isinstance(value, bool):
        raise Problem(422, "invalid-events", f"log must be true or false (got "
                      f"{msgspec.json.encode(value).decode()[:80]})",
                      errors=[{"index": None, "field": "log", "detail": "log must be true or "
                               "false", "value": msgspec.json.encode(value).decode()[:80]}],
                      error_count=1)
    return value


async def _answer(learner: Predicts, body: bytearray, headers: RequestHeaders) -> Reply:
    # The scan tells whether the body holds a top-level key besides "events": only then is
    # it read again for "log" (searching a 100-event body for the word cost a tenth of its
    # prediction). The order of the answers is that of reading "log" first: its 422 before
    # the events' errors, and a logged body's errors are the join's.
    problem: Problem | None = None
    try:
        answer = learner.predict(body, events_only=True)
    except Problem as exc:
        answer, problem = None, exc
    if answer is None:
        if _logged(body):  # the events with an id are impressions too (service.join)
            if learner.settings.predict_open:
                # predictions are open to anyone here, and remembering impressions changes
                # what is learned: that stays behind the API key (/v1/impressions)
                raise Problem(403, None, '"log": true writes impressions: with '
                              "--predict-open use /v1/impressions (with an API key) instead")
            p, u, version, _ = await joins_of(learner).impressions(body, ids_required=False)
            return _reply(p, u, version)
        if problem is not None:
            raise problem
        answer = learner.predict(body)
        assert answer is not None
    return _reply(*answer)


def _reply(p: np.ndarray, u: np.ndarray, version: int) -> Reply:
    return Reply(msgspec.json.encode({"p": p.tolist(), "uncertainty": u.tolist(),
                                      "model_version": version}))


PREDICT = JsonRoute("POST", "/v1/predict", _answer, predict=True)


@router.post("/v1/predict", response_model=PredictResponse,
             responses=problems(400, 401, 403, 408, 413, 415, 422, 503),
             openapi_extra=request_body(PredictRequest))
async def predict(request: Request) -> Response:
    """Score events (in request order). Labels are ignored, whatever they are; nothing is
    learned. Gzip bodies are accepted (`Content-Encoding: gzip`).

    With `"log": true` beside `"events"`, the events that carry an `id` are also remembered
    as shown, exactly as `/v1/impressions` does (their clicks go to `/v1/feedback`); `ts`
    is read as there. Refused (403) with `--predict-open`: use `/v1/impressions`."""
    return await respond(request, PREDICT)
