"""Hostile input over HTTP, in process: every bad body gets a clear 4xx naming the field
and the value, never a 500, and changes nothing; a stream always ends with its summary;
field names are bounded and a full registry never locks anyone out."""

from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import numpy as np
import pytest
from service_helpers import running_app, some_events

from ftrl_core.fields import OVERFLOW_FIELD, OVERFLOW_NAME
from ftrl_core.hashing import MAX_FIELDS, field_seed, make_key, xxh64
from service.ndjson import LineTooLong, iter_pieces
from service.settings import Settings

pytestmark = pytest.mark.anyio

JSON = {"content-type": "application/json"}
NDJSON = {"content-type": "application/x-ndjson"}
GOOD = '{"label": 1, "features": {"a": "x"}}'


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with running_app(Settings(max_body_bytes=64 << 10)) as c:
        yield c


def fingerprint(client: httpx.AsyncClient) -> tuple[Any, ...]:
    """Everything a learned or half-learned body would change."""
    svc = client.app.state.learner  # type: ignore[attr-defined]
    model = svc._model
    digest = hashlib.sha256(model.optimizer.table.records().tobytes()).hexdigest()
    return (model.rows, tuple(model.registry.names), digest, svc.events_learned,
            model.metrics.as_dict()["logloss"] if model.rows else None)


def problem(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    return dict(r.json())


def nest(depth: int, inner: str = "1") -> str:
    return "[" * depth + inner + "]" * depth


def deep_bodies(depth: int) -> list[str]:
    ev = '{"label": 1, "features": {"a": "x"}'
    return [
        '{"events": [' + ev + ', "z": ' + nest(depth) + "}]}",      # an unknown key
        '{"events": [{"label": ' + nest(depth) + ', "features": {"a": "x"}}]}',
        '{"events": [{"label": 1, "features": {"a": ' + nest(depth) + "}}]}",
        '{"events": ' + nest(depth) + "}",
        nest(depth),
        '{"events": [' + ev + "}], " + '"other": ' + nest(depth, "{}") + "}",
    ]


@pytest.mark.parametrize("depth", [5, 1020, 1024, 1025, 1100, 20000])
async def test_any_nesting_depth_is_a_4xx_or_accepted(client: httpx.AsyncClient,
                                                     depth: int) -> None:
    before = fingerprint(client)
    for body in deep_bodies(depth):
        for route in ("/v1/train", "/v1/predict"):
            r = await client.post(route, content=body, headers=JSON)
            assert r.status_code < 500, (route, depth, r.text[:300])
            if route == "/v1/train" and r.status_code != 200:
                assert fingerprint(client) == before
            if r.status_code == 200 and route == "/v1/train":
                before = fingerprint(client)
    r = await client.post("/v1/train", content=deep_bodies(depth)[0], headers=JSON)
    if depth > 1024:
        body = problem(r, 400)
        assert "nested" in body["detail"] and "1024" in body["detail"]


async def test_a_stream_always_ends_with_its_summary(client: httpx.AsyncClient) -> None:
    deep = '{"label": 1, "features": {"a": "x"}, "z": ' + nest(1100) + "}"
    deeper = nest(20000)  # (under the 64 KiB line limit)
    body = "\n".join([GOOD, deep, GOOD, deeper, GOOD]) + "\n"
    r = await client.post("/v1/train/stream", content=body, headers=NDJSON)
    assert r.status_code == 200, r.text
    summary = r.json()
    assert summary["accepted"] == 3 and summary["rejected"] == 2
    assert [e["line"] for e in summary["errors"]] == [2, 4]
    assert "nested deeper than 1024" in summary["errors"][0]["detail"]
    assert summary["model_version"] == 3


async def test_the_line_limit_holds_inside_one_chunk() -> None:
    async with running_app(Settings(max_body_bytes=4096)) as c:
        long = json.dumps({"label": 1, "features": {"a": "x" * 5000}})
        body = (GOOD + "\n" + long + "\n" + GOOD + "\n").encode()  # one chunk, in process
        r = await c.post("/v1/train/stream", content=body, headers=NDJSON)
        out = problem(r, 413)
        assert out["line"] == 2 and out["accepted"] == 1 and out["model_version"] == 1
        assert "the 1 events before it were learned" in out["detail"]


async def _pieces(chunks: list[bytes], limit: int) -> list[bytes]:
    async def gen() -> AsyncIterator[bytes]:
        for ch in chunks:
            yield ch

    return [p async for p in iter_pieces(gen(), limit, piece_seconds=1e9)]


@pytest.mark.parametrize("cut", [1, 7, 11, 12, 13, 25, 40])
async def test_iter_pieces_finds_a_long_line_wherever_chunks_cut(cut: int) -> None:
    text = b"aaaa\nbbbbbbbbbbbb\ncc\n"  # line 2 has 12 bytes
    chunks = [text[i:i + cut] for i in range(0, len(text), cut)]
    assert b"".join(await _pieces(chunks, 12)) == text
    with pytest.raises(LineTooLong):
        await _pieces(chunks, 11)
    got: list[bytes] = []
    try:
        async def gen() -> AsyncIterator[bytes]:
            for ch in chunks:
                yield ch

        async for p in iter_pieces(gen(), 11, piece_seconds=1e9):
            got.append(p)
    except LineTooLong:
        pass
    assert b"".join(got) == b"aaaa\n"  # the lines before the long one, nothing after


async def test_errors_name_the_field_and_the_value(client: httpx.AsyncClient) -> None:
    huge = "v" * 5000
    cases = [
        ('{"label": NaN, "features": {"a": "x"}}', "label", "NaN"),
        ('{"label": 1, "weight": -Infinity, "features": {"a": "x"}}', "weight", "-Infinity"),
        ('{"label": 7, "features": {"a": "x"}}', "label", "7"),
        ('{"label": 1, "features": {"a": true}}', "features.a", "true"),
        ('{"label": 1, "features": {"a": {"k": [1, 2]}}}', "features.a", '{"k": [1, 2]}'),
        ('{"label": 1, "features": {"a": ["x", ' + f'"{huge}"' + ", 3]}}", "features.a", "3"),
        ('{"label": 1, "features": {"a": 1e999}}', "features.a", "1e999"),
        ('{"label": 1, "id": [' + f'"{huge}"' + '], "features": {"a": "x"}}', "id",
         '["' + "v" * 58 + "..."),
    ]
    for raw, field, value in cases:
        r = await client.post("/v1/train", content='{"events": [' + raw + "]}", headers=JSON)
        [err] = problem(r, 422)["errors"]
        assert (err["field"], err["value"]) == (field, value), err
        assert len(r.text) < 2000  # values are cut
        assert f"field {field}" in r.json()["detail"] and value[:20] in r.json()["detail"]


@pytest.mark.parametrize(("name", "words"), [
    ("n" * 257, "longer than 256"),
    ("m" * 60000, "longer than 256"),  # (its name in the error is cut)
    ("tab\there", "control"),
    ("bell\u0007", "control"),
    ("c1\u0085", "control"),
    ("", "empty"),
    (OVERFLOW_NAME, "reserved"),
])
async def test_field_names_are_bounded(client: httpx.AsyncClient, name: str,
                                       words: str) -> None:
    before = fingerprint(client)
    body = json.dumps({"events": [{"label": 1, "features": {"ok": "x", name: "y"}}]})
    r = await client.post("/v1/train", content=body, headers=JSON)
    [err] = problem(r, 422)["errors"]
    assert err["field"].startswith("features.") and len(err["field"]) < 200
    assert words in err["detail"]
    assert all(c.isprintable() for c in err["field"])
    assert fingerprint(client) == before  # not even "ok" was registered
    r = await client.post("/v1/predict", content=body, headers=JSON)
    problem(r, 422)


async def test_a_full_registry_never_locks_out(client: httpx.AsyncClient) -> None:
    """1,100 junk field names in 60-event requests: the registry fills up, later fields
    share the overflow field (keyed by name and value) and learning goes on."""
    names = [f"junk{i}" for i in range(1100)]
    for start in range(0, len(names), 60):
        events = [{"label": 1, "features": {n: "x"}} for n in names[start:start + 60]]
        r = await client.post("/v1/train", json={"events": events})
        assert r.status_code == 200, r.text
    model = client.app.state.learner._model  # type: ignore[attr-defined]
    assert len(model.registry) == MAX_FIELDS and model.registry.names[-1] == OVERFLOW_NAME
    # a brand-new field still learns, apart from the other overflowed ones
    for label in (1, 1, 1, 0):
        r = await client.post("/v1/train", json={"events": [
            {"label": label, "features": {"fresh": "v"}}]})
        assert r.status_code == 200
    def key(field: str, value: bytes) -> np.uint64:
        raw = np.frombuffer(value, np.uint8)
        return make_key(OVERFLOW_FIELD, xxh64(raw, 0, raw.size, field_seed(field)),
                        np.uint64(0))

    keys = np.array([key("fresh", b"v"), key("other", b"v"), key("junk1099", b"x")])
    assert (model.optimizer.table.lookup(keys) >= 0).tolist() == [True, False, True]
    assert (await client.post("/v1/predict", json={"events": [
        {"features": {"other": "v"}}]})).status_code == 200
    metrics = (await client.get("/metrics")).text
    overflow = float(next(line.split()[-1] for line in metrics.splitlines()
                          if line.startswith("ctr_overflow_features_total")))
    assert overflow == 1100 - (OVERFLOW_FIELD - 1) + 4
    assert f"ctr_fields {float(MAX_FIELDS)}" in metrics
    stats = (await client.get("/v1/stats")).json()
    assert stats["field_ids"] == {"in_use": MAX_FIELDS, "capacity": MAX_FIELDS,
                                  "overflow_features": overflow}


async def test_declared_fields_give_absent_ones_their_missing_token() -> None:
    settings = Settings(fields="site,app,hour", max_body_bytes=1 << 20)
    sparse = [{"label": i % 2, "features": {"site": f"s{i % 5}", "hour": str(i % 24)}}
              for i in range(300)]
    full = [{"label": e["label"], "features": {"site": e["features"]["site"], "app": "",
                                                "hour": e["features"]["hour"]}}
            for e in sparse]
    answers = []
    for events in (sparse, full):
        async with running_app(settings) as c:
            r = await c.post("/v1/train", json={"events": events})
            assert r.status_code == 200
            answers.append((r.json()["p"], (await c.get("/v1/model")).json()["fields"]))
    assert answers[0][0] == pytest.approx(answers[1][0], rel=1e-13, abs=0)  # (sum order)
    assert answers[0][1] == answers[1][1] == ["bias", "site", "app", "hour"]
    async with running_app(Settings(fields="site,app", strict_fields=True)) as c:
        r = await c.post("/v1/train", json={"events": [
            {"label": 1, "features": {"site": "a", "colour": "red"}}]})
        [err] = problem(r, 422)["errors"]
        assert err["field"] == "features.colour" and "declared" in err["detail"]
        r = await c.post("/v1/train", json={"events": [{"label": 1, "features": {"app": "b"}}]})
        assert r.status_code == 200


async def test_one_huge_batch_over_few_keys_keeps_the_table_small() -> None:
    async with running_app(Settings(max_body_bytes=16 << 20)) as c:
        rng = np.random.default_rng(0)
        events = [{"label": int(rng.integers(0, 2)), "features": {
            "a": f"v{rng.integers(0, 60)}", "b": f"w{rng.integers(0, 70)}"}}
            for _ in range(60000)]
        r = await c.post("/v1/train", json={"events": events})
        assert r.status_code == 200
        memory = (await c.get("/v1/model")).json()["memory"]
        assert memory["live_coordinates"] <= 131 and memory["table_capacity"] == 1024


async def test_gzip_bodies(client: httpx.AsyncClient) -> None:
    gz = {**JSON, "content-encoding": "gzip"}
    body = json.dumps({"events": some_events(20)}).encode()
    r = await client.post("/v1/train", content=gzip.compress(body), headers=gz)
    assert r.status_code == 200 and r.json()["accepted"] == 20
    r = await client.post("/v1/predict", content=gzip.compress(body), headers=gz)
    assert r.status_code == 200 and len(r.json()["p"]) == 20
    lines = "\n".join(json.dumps(e) for e in some_events(30, seed=2)).encode() + b"\n"
    two_members = gzip.compress(lines[:1000]) + gzip.compress(lines[1000:])
    r = await client.post("/v1/train/stream", content=two_members,
                          headers={**NDJSON, "content-encoding": "gzip"})
    assert r.status_code == 200 and r.json()["accepted"] == 30
    before = fingerprint(client)
    bomb = gzip.compress(b" " * (64 << 20))  # 64 MiB of blanks in about 64 KB
    assert len(bomb) < 64 << 10
    assert "decompresses" in problem(await client.post("/v1/train", content=bomb,
                                                       headers=gz), 413)["detail"]
    assert "gzip" in problem(await client.post(
        "/v1/train", content=gzip.compress(body)[:-30], headers=gz), 400)["detail"]
    assert "gzip" in problem(await client.post("/v1/predict", content=b"not gzip at all",
                                               headers=gz), 400)["detail"]
    r = await client.post("/v1/train", content=body, headers={**JSON, "content-encoding": "br"})
    assert "Content-Encoding" in problem(r, 415)["detail"]
    assert fingerprint(client) == before


async def test_labels_are_0_or_1_and_predictions_ignore_them(
        client: httpx.AsyncClient) -> None:
    for label in ("1", "0", "1.0", "0.0", "1e0"):
        r = await client.post("/v1/train", content='{"events": [{"label": ' + label
                              + ', "features": {"a": "x"}}]}', headers=JSON)
        assert r.status_code == 200, label
    before = fingerprint(client)
    for label in ("-1", "true", "false", '"1"', "2", "0.5", "null", "[1]", "{}"):
        r = await client.post("/v1/train", content='{"events": [{"label": ' + label
                              + ', "features": {"a": "x"}}]}', headers=JSON)
        [err] = problem(r, 422)["errors"]
        assert err["field"] == "label"
    assert fingerprint(client) == before
    for label in ("-1", "true", '"yes"', "2", "null", "[1]", '{"a": 1}', "NaN", "-Infinity"):
        r = await client.post("/v1/predict", content='{"events": [{"label": ' + label
                              + ', "features": {"a": "x"}}]}', headers=JSON)
        assert r.status_code == 200, (label, r.text)


async def test_complete_lines_are_learned_while_the_producer_pauses() -> None:
    """A producer that sends two lines and then waits: those lines are handed on (and so
    learned and counted) without waiting for its next bytes."""
    gate = anyio.Event()

    async def chunks() -> AsyncIterator[bytes]:
        yield b"a\nb\n"
        await gate.wait()
        yield b"c\n"

    got: list[bytes] = []
    with anyio.fail_after(60):  # (a hang is the failure; nothing is timed)
        async for piece in iter_pieces(chunks(), 100, piece_seconds=0.01):
            got.append(piece)
            gate.set()
    assert got == [b"a\nb\n", b"c\n"]
