"""``POST /v1/train/stream``: NDJSON learned as it arrives, bad lines skipped and reported."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest
from service_helpers import running_app, some_events

from ftrl_core.metrics import logloss
from service.settings import Settings

pytestmark = pytest.mark.anyio
NDJSON = {"content-type": "application/x-ndjson"}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def ndjson(events: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(e).encode() + b"\n" for e in events)


async def tiny_chunks(data: bytes, size: int) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i:i + size]


async def test_stream_in_tiny_chunks_equals_batch() -> None:
    events = some_events(400, seed=5)
    lines = ndjson(events).split(b"\n")
    lines.insert(10, b"")  # a blank line: skipped, but counted
    lines.insert(20, b'{"label": 3, "features": {"a": "x"}}')
    lines.insert(30, b'{"label": 1, "features": {"a": NaN}}')
    lines.insert(40, b"{not json")
    lines.insert(50, b'{"label": 1, "features": {}}')
    lines.insert(60, b'{"label": 1, "weight": 1e300, "features": {"a": "x"}}')
    body = b"\n".join(lines)
    assert not body.endswith(b"\n\n")
    async with running_app(Settings()) as client:
        r = await client.post("/v1/train/stream", content=tiny_chunks(body, 7), headers=NDJSON)
        assert r.status_code == 200, r.text
        out = r.json()
    assert out["accepted"] == 400 and out["rejected"] == 5
    assert [(e["line"], e["field"]) for e in out["errors"]] == [
        (21, "label"), (31, "features.a"), (41, ""), (51, "features"), (61, "weight")]
    assert "finite" in out["errors"][1]["detail"]
    assert "malformed JSON" in out["errors"][2]["detail"]
    assert out["model_version"] == 400
    # the same events as one batch on a fresh service: same predictions, same logloss
    async with running_app(Settings()) as client:
        p = (await client.post("/v1/train", json={"events": events})).json()["p"]
        info = (await client.get("/v1/model")).json()
    y = np.array([e["label"] for e in events])
    assert out["logloss"] == pytest.approx(logloss(y, np.array(p)), rel=1e-12)
    assert out["logloss"] == pytest.approx(info["logloss"], rel=1e-12)


async def test_stream_last_line_without_newline_and_many_pieces() -> None:
    events = some_events(3000, seed=2)  # about 2 MB: several pieces
    body = ndjson(events).rstrip(b"\n")
    async with running_app(Settings()) as client:
        r = await client.post("/v1/train/stream", content=tiny_chunks(body, 65536),
                              headers=NDJSON)
        assert r.json()["accepted"] == 3000 and r.json()["errors"] == []


async def test_stream_line_too_long_keeps_what_was_learned() -> None:
    good = ndjson(some_events(50))
    long_line = b'{"label": 1, "features": {"a": "' + b"x" * 5000 + b'"}}\n'
    async with running_app(Settings(max_body_bytes=4096)) as client:
        r = await client.post("/v1/train/stream", content=tiny_chunks(good + long_line, 1000),
                              headers=NDJSON)
        assert r.status_code == 413
        body = r.json()
        assert body["type"].endswith("/line-too-long") and body["line"] == 51
        assert body["accepted"] == 50
        assert (await client.get("/v1/model")).json()["rows"] == 50
        # the limit is per line: a stream longer than it is fine
        r = await client.post("/v1/train/stream", content=good * 3, headers=NDJSON)
        assert r.status_code == 200 and r.json()["accepted"] == 150


async def test_stream_of_nothing() -> None:
    async with running_app(Settings()) as client:
        r = await client.post("/v1/train/stream", content=b"\n\n", headers=NDJSON)
        assert r.json() == {"accepted": 0, "rejected": 0, "errors": [], "logloss": None,
                            "model_version": 0}
