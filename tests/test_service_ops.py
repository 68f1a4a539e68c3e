"""Operations: readiness, metrics, OpenAPI, model info, snapshots and downloads."""

from __future__ import annotations

import io
from pathlib import Path

import httpx
import numpy as np
import pytest
from service_helpers import running_app, some_events

from ftrl_core.model import Model
from service.app import create_app
from service.settings import Settings
from service.stores import StoreConfigError, checkpoints

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_readyz_before_and_after_startup() -> None:
    app = create_app(Settings())
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        # no lifespan yet: alive, not ready, and hot routes say so too
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        r = await client.get("/readyz")
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        assert r.json()["type"].endswith("/not-ready")
        r = await client.post("/v1/train", json={"events": []})
        assert r.status_code == 503
    async with running_app(Settings()) as client:
        ready = (await client.get("/readyz")).json()
        assert ready["status"] == "ok" and ready["store"]["healthy"] is True


async def test_metrics() -> None:
    async with running_app(Settings()) as client:
        await client.post("/v1/train", json={"events": some_events(100)})
        await client.post("/v1/predict", json={"events": some_events(7)})
        bad = some_events(2)
        bad[1]["label"] = 5
        await client.post("/v1/train", json={"events": bad})
        info = (await client.get("/v1/model")).json()
        r = await client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    samples = {}
    for line in r.text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    assert samples["ctr_events_learned_total"] == 100
    assert samples["ctr_predictions_total"] == 7
    assert samples["ctr_events_rejected_total"] == 2
    assert samples["ctr_ready"] == 1
    assert samples["ctr_model_version"] == 100
    assert samples["ctr_model_nnz"] == info["nnz"]
    assert samples["ctr_model_l1_norm"] == pytest.approx(info["l1_norm"])
    assert samples["ctr_progressive_logloss"] == pytest.approx(info["logloss"])
    count = 'ctr_http_request_duration_seconds_count{method="POST",route="/v1/train",status='
    assert samples[count + '"200"}'] == 1 and samples[count + '"422"}'] == 1
    assert 'route="unmatched"' not in r.text


async def test_openapi_documents_request_bodies() -> None:
    async with running_app(Settings()) as client:
        doc = (await client.get("/openapi.json")).json()
    train = doc["paths"]["/v1/train"]["post"]
    ref = train["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    schemas = doc["components"]["schemas"]
    body = schemas[ref.rsplit("/", 1)[1]]
    event = schemas[body["properties"]["events"]["items"]["$ref"].rsplit("/", 1)[1]]
    assert set(event["properties"]) >= {"label", "features", "weight", "id"}
    assert "label" in event["required"]
    for code in ("400", "413", "415", "422"):
        assert "application/problem+json" in train["responses"][code]["content"]
    assert "application/x-ndjson" in \
        doc["paths"]["/v1/train/stream"]["post"]["requestBody"]["content"]
    for path in ("/v1/predict", "/v1/model", "/v1/model/features", "/v1/model/snapshot",
                 "/v1/model/download", "/healthz", "/readyz", "/metrics"):
        assert path in doc["paths"]


async def test_model_info_and_download(tmp_path: Path) -> None:
    events = some_events(500)
    async with running_app(Settings(alpha=0.2, l1=0.5)) as client:
        await client.post("/v1/train", json={"events": events})
        info = (await client.get("/v1/model")).json()
        r = await client.get("/v1/model/download")
        p_server = (await client.post("/v1/predict", json={"events": events[:50]})).json()["p"]
    assert info["optimizer"] == "ftrl" and info["params"]["alpha"] == 0.2
    assert info["params"]["l1"] == 0.5
    assert info["rows"] == info["model_version"] == 500
    assert 0 < info["nnz"] <= info["coordinates"] and info["l1_norm"] > 0
    assert info["logloss"] > 0 and 0 <= info["auc"] <= 1
    assert info["state_store"] == "memory://"
    assert info["features"]["hash_bits"] == 0 and info["fields"][:3] == ["bias", "I1", "I2"]
    assert r.headers["content-type"] == "application/octet-stream"
    model = Model.load(io.BytesIO(r.content))
    assert model.rows == 500 and model.data_format == "jsonl"
    assert r.headers["x-model-version"] == "500"  # the version of the file sent
    # the downloaded file predicts what the service predicts (through `ctr predict`)
    data = tmp_path / "ev.jsonl"
    import json

    data.write_text("".join(json.dumps(e) + "\n" for e in events[:50]))
    (tmp_path / "m.ctr").write_bytes(r.content)
    from service.cli import main

    out = tmp_path / "p.txt"
    import contextlib

    with open(out, "w") as fh, contextlib.redirect_stdout(fh):
        assert main(["predict", "--model", str(tmp_path / "m.ctr"), str(data)]) == 0
    p_file = [float(x) for x in out.read_text().split()]
    assert np.array_equal(p_file, p_server)


async def test_snapshots(tmp_path: Path) -> None:
    async with running_app(Settings()) as client:
        r = await client.post("/v1/model/snapshot")
        assert r.status_code == 409 and r.json()["type"].endswith("/no-data-dir")
    data = tmp_path / "data"
    async with running_app(Settings(data_dir=data, snapshot_every=0)) as client:
        await client.post("/v1/train", json={"events": some_events(120)})
        r = await client.post("/v1/model/snapshot")
        written = r.json()
        assert written["model_version"] == written["rows"] == 120
        assert Path(written["path"]) == checkpoints.current(data)
        await client.post("/v1/train", json={"events": some_events(30, seed=9)})
    # the lifespan's shutdown wrote the final checkpoint, and only it is left
    final = checkpoints.load(data)
    assert final is not None and final.model.rows == 150
    current = checkpoints.current(data)
    assert current is not None
    assert sorted(p.name for p in data.iterdir()) == sorted(["CURRENT", "LOCK", "wal",
                                                            current.name])
    assert not list(data.glob("*.tmp"))
    # a restart on the data directory resumes it (no --model-in)
    async with running_app(Settings(data_dir=data)) as client:
        assert (await client.get("/v1/model")).json()["model_version"] == 150
    # --model-in into a data directory that holds a model is refused, not overwritten
    Model.from_config(final.model.config()).save(tmp_path / "other.ctr")
    with pytest.raises(StoreConfigError, match="drop --model-in"):
        async with running_app(Settings(data_dir=data, model_in=tmp_path / "other.ctr")):
            pass


async def test_periodic_snapshots(tmp_path: Path) -> None:
    import anyio

    async with running_app(Settings(data_dir=tmp_path, snapshot_every=0.05)) as client:
        await client.post("/v1/train", json={"events": some_events(10)})
        for _ in range(200):
            found = checkpoints.load(tmp_path)
            if found is not None and found.model.rows == 10:
                break
            await anyio.sleep(0.02)
        assert found is not None and found.model.rows == 10
        for _ in range(100):  # counted once its writing thread is back
            metrics = (await client.get("/metrics")).text
            if "ctr_snapshots_total 1.0" in metrics:
                break
            await anyio.sleep(0.02)
        assert "ctr_snapshots_total 1.0" in metrics


async def test_unexpected_failure_is_a_bare_500(caplog: pytest.LogCaptureFixture) -> None:
    async with running_app(Settings()) as client:
        app = client.app  # type: ignore[attr-defined]

        async def broken() -> None:
            raise RuntimeError("secret internals")

        app.add_api_route("/broken", broken)
        r = await client.get("/broken", headers={"x-request-id": "req-42"})
    assert r.status_code == 500
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert body["type"] == "about:blank" and body["request_id"] == "req-42"
    assert "secret" not in r.text and "Traceback" not in r.text
    logged = [rec for rec in caplog.records if "req-42" in rec.getMessage()]
    assert logged and logged[0].exc_info is not None
