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
Label = Annotated[Literal[0, 1], Field(description=(
    "1: a click; 0: none. A JSON number equal to 0 or 1 (1.0 is accepted: JSON has one "
    "number type); -1, true, false and strings are refused"))]
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

    label: Any = Field(None, description="ignored, whatever its value")
    features: dict[str, FeatureValue] = Field(min_length=1, description=_FEATURES_DOC)
    weight: Weight = 1.0
    id: str | None = None


class TrainRequest(BaseModel):
    events: list[Event]


class PredictRequest(BaseModel):
    events: list[PredictEvent]
    log: bool = Field(False, description="also remember the events that carry an `id` as "
                      "shown, as /v1/impressions does (their `ts` is read as there)")


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
    value: str | None = Field(None, description="the bad value's JSON text (cut)")


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
    rows: int = Field(description="events the model has learned; with a shared store, "
                                  "read from the store: every worker's flushed events, the "
                                  "same from every worker once flushed")
    unflushed_rows: int = Field(description="events this worker learned whose deltas the "
                                            "shared store has not confirmed yet (0 with "
                                            "the memory store)")
    nnz: int
    coordinates: int
    l1_norm: float
    logloss: float | None = Field(description="this worker's progressive logloss")
    auc: float | None
    model_version: int = Field(description="the same as rows")
    state_store: str
    worker: str | None = Field(None, description="this worker's id in a shared store (its "
                                                 "flush ids; kept by its data directory)")
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
    models: list[dict[str, Any]] = Field(description=(
        "every learner, the primary first: its /v1/variants summary, `fields` (per field "
        "name: coordinates, nnz, l1), `abs_w_counts`, `calibration_buckets`, and "
        "`bounded_fields`: null without --admit/--evict-idle/--max-coordinates, else per "
        "field name {admitted, refused, evicted, live} (running totals of features given "
        "a coordinate, occurrences refused one, coordinates dropped; coordinates stored "
        "now)"))
    history: dict[str, Any]
    field_ids: dict[str, int] | None = Field(None, description=(
        "field ids in use, their capacity, and the feature occurrences learned in the "
        "overflow field that fields past the capacity share"))


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
    value: str | None = Field(None, description="the bad value's JSON text (cut)")


class InvalidEventsProblem(Problem):
    errors: list[EventErrorItem]
    error_count: int


class ParameterErrorItem(BaseModel):
    field: str
    detail: str


class InvalidParametersProblem(Problem):
    errors: list[ParameterErrorItem]


class ImpressionEvent(BaseModel):
    """An item shown: scored now, learned when the join says (``--join-policy``)."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"example": {
        "id": "imp-1", "ts": 1767225600.0, "features": {"site": "a.com", "price": 0.37}}})

    id: str = Field(min_length=1, description="unique per impression, at most 128 UTF-8 "
                                              "bytes; feedback names it")
    ts: float | None = Field(None, ge=0, description="seconds since the epoch (event "
                             "time), at most a day ahead of the service's clock (a 422 "
                             "otherwise); absent: the arrival time")
    features: dict[str, FeatureValue] = Field(min_length=1, description=_FEATURES_DOC)


class ImpressionsRequest(BaseModel):
    events: list[ImpressionEvent]


class FeedbackEvent(BaseModel):
    id: str = Field(min_length=1, description="the impression's id")
    ts: float | None = Field(None, ge=0, description="seconds since the epoch, at most a "
                             "day ahead of the service's clock (a 422 otherwise); absent: "
                             "the arrival time")
    label: Literal[0, 1] = Field(1, description="1: a click; 0: close the impression as a "
                                                "negative now")


class FeedbackRequest(BaseModel):
    events: list[FeedbackEvent]


class FeedbackResponse(BaseModel):
    joined: int = Field(description="clicks joined to a pending impression")
    closed: int = Field(description="impressions closed by a label 0")
    late: int = Field(description="ids whose window had passed")
    unknown: int = Field(description="ids never seen (or closed too long ago to tell)")
    repeated: int = Field(description="second clicks on an impression (not joined again)")
    forwarded: int = Field(0, description="with a Redis store: clicks for ids this worker "
                           "does not hold, published for the worker that does")
    model_version: int


class DelayHistogram(BaseModel):
    le: list[float | str] = Field(description="bucket upper bounds in seconds")
    counts: list[int]


class JoinStatus(BaseModel):
    policy: str
    window_seconds: float
    max_pending: int
    negative_rate: float
    pending: int
    impressions: int
    duplicates: int = Field(description="impressions whose id was pending or closed already")
    joined: int
    expired: int = Field(description="impressions closed by their window")
    closed_early: int = Field(description="closed by --max-pending")
    closed_by_label: int
    late: int
    unknown: int
    repeated_clicks: int
    learned_positives: int
    learned_negatives: int
    negatives_dropped: int = Field(description="by --negative-rate")
    pending_bytes: int
    bytes_per_pending: float
    watermark: float | None = Field(description="newest event time seen")
    arrival_clock: float | None
    click_delay_seconds: DelayHistogram
    forwarded: int = Field(0, description="Redis store: clicks published for other workers")
    marks_matched: int = Field(0, description="Redis store: clicks other workers published "
                               "for impressions this worker holds")
    worker: str | None = Field(None, description="Redis store: this worker's id (the "
                               "counters above are this worker's)")
    cluster: dict[str, float | int] | None = Field(
        None, description="Redis store: every worker's counters as last reported (each "
        "reports every second), summed; unmatched_clicks = forwarded - marks_matched")


_COMPONENTS = (TrainRequest, PredictRequest, ImpressionsRequest, FeedbackRequest, Problem,
               InvalidEventsProblem, InvalidParametersProblem)
_REF = "#/components/schemas/{model}"


def components() -> dict[str, Any]:
    """Schemas to add to the OpenAPI components (request bodies and problems)."""
    out: dict[str, Any] = {}
    for model in _COMPONENTS:
        schema = model.model_json_schema(ref_template=_REF)
        out.update(schema.pop("$defs", {}))
        out[model.__name__] = schema
    return out


def request_body(model: type[BaseModel], media_type: str = "application/json",
                 headers: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """``openapi_extra`` for a route that reads its body (and ``headers``) itself."""
    out: dict[str, Any] = {"requestBody": {"required": True, "content": {
        media_type: {"schema": {"$ref": _REF.format(model=model.__name__)}}}}}
    if headers:
        out["parameters"] = headers
    return out


#: the ``Idempotency-Key`` request header (``learner.idempotency``)
IDEMPOTENCY_PARAMETER: dict[str, Any] = {
    "name": "Idempotency-Key", "in": "header", "required": False,
    "description": "makes a retry safe: a key seen within the dedupe window (600 s by "
                   "default) gets its first answer again and is not learned twice",
    "schema": {"type": "string", "minLength": 1, "maxLength": 128,
               "pattern": "^[\\x21-\\x7e]+$"}}


NDJSON_BODY = {"requestBody": {"required": True, "content": {"application/x-ndjson": {
    "schema": {"type": "string", "format": "binary",
               "description": "one Event (JSON) per line"},
    "example": '{"label": 1, "features": {"site": "a.com"}}\n'
               '{"label": 0, "features": {"site": "b.org"}}\n'}}}}

_PROBLEM_DESCRIPTIONS = {
    400: "Malformed JSON", 401: "Missing credentials", 403: "Invalid credentials",
    408: "Body (or stream line) too slow (--body-timeout)", 409: "Conflict",
    413: "Body (or stream line) too large", 415: "Unsupported media type",
    422: "Invalid events", 500: "Unexpected failure",
    501: "Not available with this state store or worker count", 503: "Not ready",
}


def problems(*codes: int, invalid: type[Problem] = InvalidEventsProblem,
             keyed: bool = False) -> dict[int | str, dict[str, Any]]:
    """``responses`` entries for problem statuses (422 uses ``invalid``'s schema; with
    ``keyed``, a route that takes an Idempotency-Key, a plain problem too: the key was
    used for another body)."""
    out: dict[int | str, dict[str, Any]] = {}
    for code in (*codes, 500):
        model = invalid if code == 422 else Problem
        schema: dict[str, Any] = {"$ref": _REF.format(model=model.__name__)}
        if code == 422 and keyed:
            schema = {"anyOf": [schema, {"$ref": _REF.format(model=Problem.__name__)}]}
        out[code] = {"description": _PROBLEM_DESCRIPTIONS[code], "content": {
            "application/problem+json": {"schema": schema}}}
    return out
