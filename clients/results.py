"""What the client's calls return: small dataclasses over the service's JSON answers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class TrainResult:
    """``POST /v1/train``: ``p[i]`` is event i's probability, predicted before it was learned."""

    p: list[float]
    accepted: int
    model_version: int


@dataclass(frozen=True)
class PredictResult:
    """``POST /v1/predict``: probabilities and the core's uncertainty score, in request order."""

    p: list[float]
    uncertainty: list[float]
    model_version: int


@dataclass(frozen=True)
class StreamError:
    """One line the stream endpoint skipped (1-based ``line`` of the upload)."""

    line: int
    field: str
    detail: str


@dataclass(frozen=True)
class StreamResult:
    """``POST /v1/train/stream``: the summary of a whole NDJSON upload."""

    accepted: int
    rejected: int
    errors: list[StreamError] = field(default_factory=list)
    logloss: float | None = None
    model_version: int = 0


@dataclass(frozen=True)
class DownloadResult:
    """``GET /v1/model/download`` written to ``path``."""

    path: str
    bytes: int
    model_version: int | None = None


def stream_result(raw: dict[str, Any]) -> StreamResult:
    errors = [StreamError(int(e.get("line", 0)), str(e.get("field") or ""),
                          str(e.get("detail") or "")) for e in raw.get("errors") or []]
    ll = raw.get("logloss")
    return StreamResult(int(raw.get("accepted", 0)), int(raw.get("rejected", 0)), errors,
                        None if ll is None else float(ll), int(raw.get("model_version", 0)))
