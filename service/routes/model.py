"""The model: what it is, what it learned, snapshots and downloads."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Query
from starlette.background import BackgroundTask
from starlette.responses import FileResponse, Response

from ..bodies import json_response
from ..model_info import describe
from ..schemas import (
    FeaturesResponse,
    InvalidParametersProblem,
    ModelInfo,
    SnapshotResponse,
    problems,
)
from .deps import Learner, NeedsKey

router = APIRouter(tags=["model"], dependencies=[NeedsKey])

#: the response header of ``/v1/model/download`` that carries the model version
#: (``clients``' ``DownloadResult.model_version`` reads it)
MODEL_VERSION_HEADER = "X-Model-Version"


@router.get("/v1/model", response_model=ModelInfo, responses=problems(401, 403, 503))
async def model_info(learner: Learner) -> Response:
    """Optimizer and parameters, rows learned, sparsity, progressive metrics, state store."""
    return json_response(await describe(learner))


@router.get("/v1/model/features", response_model=FeaturesResponse,
            responses=problems(401, 403, 422, 503, invalid=InvalidParametersProblem))
async def top_features(learner: Learner,
                       top: Annotated[int, Query(ge=1, le=10_000)] = 20) -> Response:
    """The `top` weights by |w|, with their field and value names."""
    features = await learner.read(lambda m: m.top_features(top))
    return json_response({"features": features})


@router.post("/v1/model/snapshot", response_model=SnapshotResponse,
             responses=problems(401, 403, 409, 503))
async def snapshot(learner: Learner) -> Response:
    """Write the model to the snapshot directory now (atomically: temporary file, rename)."""
    written = await learner.snapshot()
    assert written is not None
    return json_response(written)


@router.get("/v1/model/download", response_class=FileResponse,
            responses={200: {"content": {"application/octet-stream": {
                "schema": {"type": "string", "format": "binary"}}},
                "description": "The model file (`ctr predict --model`, `ctr inspect`)",
                "headers": {MODEL_VERSION_HEADER: {
                    "description": "the model version of the file (events learned)",
                    "schema": {"type": "integer"}}}},
                **problems(401, 403, 503)})
async def download(learner: Learner) -> Response:
    """The model file, as `ctr train --model-out` writes it; the header `X-Model-Version`
    holds the model version of the copy (the events it had learned)."""
    tmp = Path(tempfile.mkdtemp(prefix="ctr-download-"))
    try:
        version, path = await learner.save_copy(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return FileResponse(path, media_type="application/octet-stream",
                        filename=f"model-{version}.ctr",
                        headers={MODEL_VERSION_HEADER: str(version)},
                        background=BackgroundTask(shutil.rmtree, tmp, ignore_errors=True))
