"""The API's shapes as pydantic models: they document the API in OpenAPI and serve the cold
routes. Hot request bodies are never parsed with them (the compiled scanner reads the bytes);
``request_body`` and ``components`` put their schemas into the OpenAPI document instead.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ftrl_core.limits import MAX_ABS_VALUE, MAX_WEIGHT

FeatureValue = str | Annotated[float, Field(ge=-MAX_ABS_VALUE, le=MAX_ABS_VALUE)] | \
    list[str] | None
Label = Annotated[Literal[0, 1, -1] | bool, Field(description=(
    "1: a click; 0: none (-1 and false also mean 0, true means 1)"))]
Weight = Annotated[float | None, Field(ge=0, le=MAX_WEIGHT, description=(
    "importance weight, 0 to 1e6 (null or absent: 1)"))]

_FEATURES_DOC = (
    "Field name -> value: a string is a categorical token, a number the field's real value, "
    "a list several tokens, \"\" or null the field's missing token (as an empty Criteo "
    "column). At least one entry.")


class Event(BaseModel):
    """A labelled event to learn."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"example": {
        "label": 1, "features": {"site": "a.com", "price": 0.37, "tags": ["x", "y"],
                                 "c9": ""}, "weight": 1.0, "id": "ev-17"}})

    label: Label
    features: dict[str, FeatureValue] = Field(min_length=1, description=_FEATURES_DOC)
    weight: Weight = 1.0
    id: str | None = Field(None, description="the caller's id, not used for learning")


class PredictEvent(BaseModel):
    """An event to score; a label, if present, is ignored."""

    model_config = ConfigDict(extra="allow")

    label: Label | None = None
    features: dict[str, FeatureValue] = Field(min_length=1, description=_FEATURES_DOC)
    weight: Weight = 1.0
    id: str | None = None


class TrainRequest(BaseModel):
    events: list[Event]


class PredictRequest(BaseModel):
    events: list[PredictEvent]


class TrainResponse(BaseModel):
    p: list[float] = Field(description="probability of each event, in request order, "
                                       "predicted before learning it")
    accepted: int
    model_version: int


class PredictResponse(BaseModel):
    p: list[float]
    uncertainty: list[float] = Field(description="McMahan's uncertainty score per event")
    model_version: int


class StreamError(BaseModel):
    line: int = Field(description="1-based line number in the stream")
    field: str
    detail: str


class StreamResponse(BaseModel):
    accepted: int
    rejected: int
    errors: list[StreamError] = Field(description="the first 100 bad lines")
    logloss: float | None = Field(description="progressive logloss of this stream's "
                                               "accepted events")
    model_version: int


class ModelInfo(BaseModel):
    optimizer: str
    params: dict[str, float | str]
    field_l1: dict[str, float]
    field_l2: dict[str, float]
    rows: int
    nnz: int
    coordinates: int
    l1_norm: float
    logloss: float | None
    auc: float | None
    model_version: int
    state_store: str
    features: dict[str, Any]
    fields: list[str]
    memory: dict[str, float]


class VariantSummary(BaseModel):
    name: str = Field(description="'primary', or the variant's name")
    primary: bool = Field(description="true for the model that answers predictions")
    optimizer: str
    params: dict[str, float | str]
    rows: int = Field(description="events learned (progressive validation rows)")
    logloss: float | None
    auc: float | None
    calibration: float | None = Field(description="mean p over observed CTR")
    nnz: int
    coordinates: int
    l1_norm: float


class VariantsResponse(BaseModel):
    model_version: int
    variants: list[VariantSummary] = Field(description="the primary first")


class StatsResponse(BaseModel):
    """The dashboard's feed: the latest figures of every learner, and the history."""

    model_config = ConfigDict(extra="allow")

    boot: str = Field(description="changes when the service restarts (history restarts)")
    interval: float = Field(description="seconds between samples")
    model_version: int | None
    sampled_at: float | None
    abs_w_edges: list[float]
    models: list[dict[str, Any]]
    history: dict[str, Any]


class FeatureWeight(BaseModel):
    field: str
    value: str
    weight: float
    key: str = Field(description="the 64-bit key, hexadecimal")


class FeaturesResponse(BaseModel):
    features: list[FeatureWeight]


class SnapshotResponse(BaseModel):
    path: str
    model_version: int
    rows: int


class Health(BaseModel):
    #: "degraded": a shared state store cannot be reached (training answers 503,
    #: predictions serve from the worker's cache)
    status: Literal["ok", "degraded"]
    #: a shared state store's state (``/readyz`` with ``--state redis://``)
    store: dict[str, Any] | None = None


class Problem(BaseModel):
    """RFC 9457 problem details."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    detail: str | None = None


class EventErrorItem(BaseModel):
    index: int | None = Field(description="0-based position in events (null: the body)")
    field: str
    detail: str


class InvalidEventsProblem(Problem):
    errors: list[EventErrorItem]
    error_count: int


class ParameterErrorItem(BaseModel):
    field: str
    detail: str


class InvalidParametersProblem(Problem):
    errors: list[ParameterErrorItem]


_COMPONENTS = (TrainRequest, PredictRequest, Problem, InvalidEventsProblem,
               InvalidParametersProblem)
_REF = "#/components/schemas/{model}"


def components() -> dict[str, Any]:
    """Schemas to add to the OpenAPI components (request bodies and problems)."""
    out: dict[str, Any] = {}
    for model in _COMPONENTS:
        schema = model.model_json_schema(ref_template=_REF)
        out.update(schema.pop("$defs", {}))
        out[model.__name__] = schema
    return out


def request_body(model: type[BaseModel], media_type: str = "application/json"
                 ) -> dict[str, Any]:
    """``openapi_extra`` for a route that reads its body itself."""
    return {"requestBody": {"required": True, "content": {
        media_type: {"schema": {"$ref": _REF.format(model=model.__name__)}}}}}


NDJSON_BODY = {"requestBody": {"required": True, "content": {"application/x-ndjson": {
    "schema": {"type": "string", "format": "binary",
               "description": "one Event (JSON) per line"},
    "example": '{"label": 1, "features": {"site": "a.com"}}\n'
               '{"label": 0, "features": {"site": "b.org"}}\n'}}}}

_PROBLEM_DESCRIPTIONS = {
    400: "Malformed JSON", 401: "Missing credentials", 403: "Invalid credentials",
    409: "Conflict", 413: "Body (or stream line) too large", 415: "Unsupported media type",
    422: "Invalid events", 500: "Unexpected failure", 503: "Not ready",
}


def problems(*codes: int, invalid: type[Problem] = InvalidEventsProblem
             ) -> dict[int | str, dict[str, Any]]:
    """``responses`` entries for problem statuses (422 uses ``invalid``'s schema)."""
    out: dict[int | str, dict[str, Any]] = {}
    for code in (*codes, 500):
        model = invalid if code == 422 else Problem
        out[code] = {"description": _PROBLEM_DESCRIPTIONS[code], "content": {
            "application/problem+json": {"schema": {"$ref": _REF.format(
                model=model.__name__)}}}}
    return out
