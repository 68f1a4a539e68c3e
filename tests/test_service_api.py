"""The HTTP API in process: round trips, whole-batch rejection, and one test per error kind
(each answered with an RFC 9457 problem)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from service_helpers import running_app, some_events

from service.settings import Settings

pytestmark = pytest.mark.anyio

PROBLEM = "application/problem+json"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def client() -> Any:
    async with running_app(Settings(max_row_features=50, max_body_bytes=256 << 10)) as c:
        yield c


def assert_problem(r: httpx.Response, status: int, slug: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM
    body: dict[str, Any] = r.json()
    assert body["status"] == status
    assert body["title"] and isinstance(body["detail"], str)
    assert body["type"] == ("about:blank" if slug is None
                            else f"https://ctr-online.dev/problems/{slug}")
    return body


async def model_state(client: httpx.AsyncClient) -> tuple[int, int, list[str]]:
    info = (await client.get("/v1/model")).json()
    return info["model_version"], info["rows"], info["fields"]


async def test_train_then_predict_round_trip(client: httpx.AsyncClient) -> None:
    events = some_events(300)
    r = await client.post("/v1/train", json={"events": events})
    assert r.status_code == 200
    body = r.json()
    assert body["accepted"] == 300 and body["model_version"] == 300
    assert len(body["p"]) == 300 and all(0 < p < 1 for p in body["p"])
    assert body["p"][0] == 0.5  # nothing learned before the first event
    unlabeled = [{"features": e["features"]} for e in events[:5]]
    r = await client.post("/v1/predict", json={"events": unlabeled})
    assert r.status_code == 200
    pred = r.json()
    assert pred["model_version"] == 300
    assert len(pred["p"]) == len(pred["uncertainty"]) == 5
    # labels are ignored by predict, and predicting learns nothing
    r2 = await client.post("/v1/predict", json={"events": events[:5]})
    assert r2.json()["p"] == pred["p"]
    assert (await model_state(client))[:2] == (300, 300)


async def test_predict_does_not_register_fields(client: httpx.AsyncClient) -> None:
    await client.post("/v1/train", json={"events": [{"label": 1, "features": {"a": "x"}}]})
    r = await client.post("/v1/predict", json={"events": [{"features": {"zz": "q", "a": "x"}}]})
    assert r.status_code == 200
    assert (await model_state(client))[2] == ["bias", "a"]
    r = await client.post("/v1/train", json={"events": [{"label": 0, "features": {"b": "y"}}]})
    assert (await model_state(client))[2] == ["bias", "a", "b"]


async def test_empty_batch(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/train", json={"events": []})
    assert r.json() == {"p": [], "accepted": 0, "model_version": 0}


async def test_bad_batch_is_rejected_whole(client: httpx.AsyncClient) -> None:
    await client.post("/v1/train", json={"events": some_events(10)})
    before = await model_state(client)
    events = some_events(6, seed=3)
    events[1]["features"]["brand_new_field"] = "v"  # a good event with a new field
    events[2]["label"] = 2
    events[4]["weight"] = "heavy"
    r = await client.post("/v1/train", json={"events": events})
    body = assert_problem(r, 422, "invalid-events")
    assert body["errors"] == [
        {"index": 2, "field": "label", "detail": body["errors"][0]["detail"], "value": "2"},
        {"index": 4, "field": "weight", "detail": body["errors"][1]["detail"],
         "value": '"heavy"'}]
    assert "label" in body["errors"][0]["detail"] and body["error_count"] == 2
    assert await model_state(client) == before  # nothing learned, no field registered


@pytest.mark.parametrize(("raw_event", "field", "words"), [
    ('{"label": 1, "features": {"price": NaN}}', "features.price", "finite"),
    ('{"label": 1, "features": {"price": -Infinity}}', "features.price", "finite"),
    ('{"label": 1, "features": {"price": 1e999}}', "features.price", "finite"),
    ('{"label": 2, "features": {"a": "x"}}', "label", "0 or 1"),
    ('{"label": -1, "features": {"a": "x"}}', "label", "0 or 1"),
    ('{"label": true, "features": {"a": "x"}}', "label", "0 or 1"),
    ('{"label": NaN, "features": {"a": "x"}}', "label", "finite"),
    ('{"label": 1, "weight": NaN, "features": {"a": "x"}}', "weight", "finite"),
    ('{"features": {"a": "x"}}', "label", "missing"),
    ('{"label": 1, "weight": "1.0", "features": {"a": "x"}}', "weight", "weight"),
    ('{"label": 1, "features": {}}', "features", "empty"),
    ('{"label": 1, "features": {"a": true}}', "features.a", "type"),
    ('{"label": 1, "features": {"a": {"b": 1}}}', "features.a", "type"),
    ('{"label": 1, "features": {"a": ["x", 3]}}', "features.a", "type"),
    ('{"label": 1, "id": 7, "features": {"a": "x"}}', "id", "type"),
    # past these, one event would overflow the float32 state and poison the model with NaN
    ('{"label": 1, "weight": 6e306, "features": {"a": "x"}}', "weight", "above"),
    ('{"label": 1, "features": {"price": -4e141}}', "features.price", "beyond"),
    ("[1, 2]", "", "object"),
])
async def test_invalid_event(client: httpx.AsyncClient, raw_event: str, field: str,
                             words: str) -> None:
    good = '{"label": 0, "features": {"a": "y"}}'
    r = await client.post("/v1/train", content=f'{{"events": [{good}, {raw_event}]}}',
                          headers={"content-type": "application/json"})
    body = assert_problem(r, 422, "invalid-events")
    [err] = body["errors"]
    assert err["index"] == 1 and err["field"] == field
    assert words in err["detail"], err
    assert (await model_state(client))[:2] == (0, 0)


async def test_model_stays_finite_at_the_limits(client: httpx.AsyncClient) -> None:
    edge = {"label": 1, "weight": 1e6, "features": {"price": 1e9, "a": "x"}}
    r = await client.post("/v1/train", json={"events": [edge] * 50})
    assert r.status_code == 200
    r = await client.post("/v1/predict", json={"events": [edge, {"features": {"a": "x"}}]})
    assert r.status_code == 200
    assert all(0 <= p <= 1 for p in r.json()["p"]), r.text
    info = (await client.get("/v1/model")).json()
    assert info["l1_norm"] is not None and info["logloss"] is not None
    r = await client.post("/v1/predict", json={"events": [{"features": {"a": 2e9}}]})
    assert_problem(r, 422, "invalid-events")


async def test_empty_list_adds_nothing(client: httpx.AsyncClient) -> None:
    """``[]`` as a feature value registers the field and adds no feature."""
    raw = b'{"events": [{"label":1,"features":{"c":[],"d":"x"}}]}'
    r = await client.post("/v1/train", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text
    assert r.json()["accepted"] == 1
    assert (await model_state(client))[2] == ["bias", "c", "d"]
    # the same event without c: the same prediction (c added nothing)
    r1 = await client.post("/v1/predict", json={"events": [{"features": {"c": [], "d": "x"}}]})
    r2 = await client.post("/v1/predict", json={"events": [{"features": {"d": "x"}}]})
    assert r1.status_code == 200 and r1.json()["p"] == r2.json()["p"]


async def test_too_many_features(client: httpx.AsyncClient) -> None:
    event = {"label": 1, "features": {f"f{i}": "x" for i in range(60)}}
    body = assert_problem(await client.post("/v1/train", json={"events": [event]}), 422,
                          "invalid-events")
    assert body["errors"][0]["index"] == 0
    assert "too many features" in body["errors"][0]["detail"]


async def test_unknown_key_only_in_strict_mode(client: httpx.AsyncClient) -> None:
    event = {"label": 1, "features": {"a": "x"}, "colour": "red"}
    assert (await client.post("/v1/train", json={"events": [event]})).status_code == 200
    async with running_app(Settings(strict=True)) as strict:
        r = await strict.post("/v1/train", json={"events": [event]})
        body = assert_problem(r, 422, "invalid-events")
        assert body["errors"][0] == {"index": 0, "field": "colour",
                                     "detail": body["errors"][0]["detail"], "value": '"red"'}


@pytest.mark.parametrize("raw", [
    b'{"events": [{"label": 1, "features": {"a": "x",}}]}',
    b'{"events": [{"label": 1, "features": {"a": "x"}}',
    b"not json at all",
    b"",
    b'{"events": [{"label": 1, "features": {"a": "\xff"}}]}',
])
async def test_malformed_json(client: httpx.AsyncClient, raw: bytes) -> None:
    r = await client.post("/v1/train", content=raw, headers={"content-type": "application/json"})
    body = assert_problem(r, 400, "malformed-json")
    assert "malformed JSON" in body["detail"] and "nothing was learned" in body["detail"]
    if raw:
        assert "byte" in body["detail"] and isinstance(body["position"], int)


async def test_body_without_events_list(client: httpx.AsyncClient) -> None:
    for raw in (b"{}", b'{"rows": []}', b'{"events": 3}'):
        r = await client.post("/v1/train", content=raw,
                              headers={"content-type": "application/json"})
        body = assert_problem(r, 422, "invalid-events")
        assert body["errors"][0]["index"] is None
        assert body["errors"][0]["field"] == "events"


async def test_wrong_content_type(client: httpx.AsyncClient) -> None:
    body = json.dumps({"events": some_events(2)})
    for headers in ({"content-type": "text/plain"}, {"content-type": "application/x-ndjson"},
                    {}):
        r = await client.post("/v1/train", content=body, headers=headers)
        assert_problem(r, 415, "unsupported-media-type")
    r = await client.post("/v1/train/stream", content=body,
                          headers={"content-type": "application/json"})
    assert_problem(r, 415, "unsupported-media-type")
    r = await client.post("/v1/predict", content=body,
                          headers={"content-type": "application/json; charset=utf-8"})
    assert r.status_code == 200


async def test_unknown_route_and_wrong_method(client: httpx.AsyncClient) -> None:
    body = assert_problem(await client.get("/v2/nothing"), 404)
    assert "/v2/nothing" in body["detail"]
    r = await client.get("/v1/train")
    body = assert_problem(r, 405)
    assert r.headers["allow"] == "POST"
    assert_problem(await client.delete("/v1/model"), 405)


async def test_body_too_large_by_content_length(client: httpx.AsyncClient) -> None:
    events = some_events(600)  # about 390 KB, over the 256 KiB limit
    r = await client.post("/v1/train", json={"events": events})
    body = assert_problem(r, 413, "body-too-large")
    assert body["limit"] == 256 << 10
    assert r.headers["connection"] == "close"
    assert (await model_state(client))[:2] == (0, 0)


async def test_body_too_large_while_streaming(client: httpx.AsyncClient) -> None:
    sent = []

    async def chunks() -> Any:
        for _ in range(1000):  # 8 MB if it were all read
            sent.append(1)
            yield b" " * 8192

    r = await client.post("/v1/train", content=chunks(),
                          headers={"content-type": "application/json"})
    assert "content-length" not in r.request.headers
    assert_problem(r, 413, "body-too-large")
    assert len(sent) < 60  # refused after the limit, not after reading it all


async def test_bad_content_length(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/predict", content=b"{}",
                          headers={"content-type": "application/json",
                                   "content-length": "two"})
    body = assert_problem(r, 400)
    assert "Content-Length" in body["detail"]


async def test_features_top_parameter(client: httpx.AsyncClient) -> None:
    await client.post("/v1/train", json={"events": some_events(200)})
    r = await client.get("/v1/model/features", params={"top": 5})
    feats = r.json()["features"]
    assert len(feats) == 5
    assert {"field", "value", "weight", "key"} <= set(feats[0])
    weights = [abs(f["weight"]) for f in feats]
    assert weights == sorted(weights, reverse=True)
    for bad in ("0", "10001", "many"):
        body = assert_problem(await client.get("/v1/model/features", params={"top": bad}),
                              422, "invalid-parameters")
        assert body["errors"][0]["field"] == "top"


async def test_request_id_is_echoed(client: httpx.AsyncClient) -> None:
    r = await client.get("/healthz", headers={"x-request-id": "abc-123"})
    assert r.json() == {"status": "ok"} and r.headers["x-request-id"] == "abc-123"
    assert len((await client.get("/healthz")).headers["x-request-id"]) == 32
