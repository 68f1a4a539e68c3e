"""What routes need from the app: the learner service and the API-key checks.

Cold routes take them as FastAPI dependencies (``Learner``, ``NeedsKey``). The hot JSON
routes check keys and readiness in ``jsonroutes`` (shared with the lean path), and the
stream route calls ``learner_of``/``check_key`` itself: resolving dependencies costs FastAPI
more than the whole prediction of one event (and a plain ``def`` dependency would even run
in a worker thread), so the dependency versions here are ``async def`` wrappers of the
plain calls.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from ..auth import ApiKeys
from ..errors import not_ready
from ..learner import LearnerService


def learner_of(request: Request) -> LearnerService:
    learner: LearnerService | None = request.app.state.learner
    if learner is None:  # before the lifespan has opened the model
        raise not_ready("the service is starting")
    return learner


def _keys(request: Request) -> ApiKeys:
    keys: ApiKeys | None = request.app.state.keys
    if keys is None:  # loaded by the lifespan
        raise not_ready("the service is starting")
    return keys


def check_key(request: Request) -> None:
    _keys(request).check(request)


def check_predict_key(request: Request) -> None:
    keys = _keys(request)
    if not keys.predict_open:
        keys.check(request)


def check_read_key(request: Request) -> None:
    """The dashboard's reads (aggregates only) follow the rule of predictions."""
    check_predict_key(request)


async def _learner(request: Request) -> LearnerService:
    return learner_of(request)


async def _require_key(request: Request) -> None:
    check_key(request)


async def _require_read_key(request: Request) -> None:
    check_read_key(request)


Learner = Annotated[LearnerService, Depends(_learner)]
NeedsKey = Depends(_require_key)
NeedsReadKey = Depends(_require_read_key)
