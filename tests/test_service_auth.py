"""API keys: 401 without one, 403 with a wrong one, predictions optionally open."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr
from service_helpers import running_app, some_events

from service.settings import Settings

pytestmark = pytest.mark.anyio

PROTECTED = [("POST", "/v1/train"), ("POST", "/v1/train/stream"), ("POST", "/v1/predict"),
             ("GET", "/v1/model"), ("GET", "/v1/model/features"),
             ("POST", "/v1/model/snapshot"), ("GET", "/v1/model/download")]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_keys_from_env_and_file(tmp_path: Path) -> None:
    key_file = tmp_path / "keys"
    key_file.write_text("# operators\nfile-key\n\n")
    settings = Settings(api_keys=SecretStr("env-key-1, env-key-2"), api_key_file=key_file)
    async with running_app(settings) as client:
        for method, path in PROTECTED:
            r = await client.request(method, path)
            assert r.status_code == 401, (path, r.text)
            assert r.headers["www-authenticate"].startswith("Bearer")
            assert r.headers["content-type"] == "application/problem+json"
            r = await client.request(method, path, headers={"authorization": "Bearer nope"})
            assert r.status_code == 403, (path, r.text)
            assert "nope" not in r.text
        r = await client.get("/v1/model", headers={"authorization": "Basic env-key-1"})
        assert r.status_code == 401
        for key in ("env-key-1", "env-key-2", "file-key"):
            r = await client.get("/v1/model", headers={"authorization": f"Bearer {key}"})
            assert r.status_code == 200
        for path in ("/healthz", "/readyz", "/metrics", "/openapi.json"):
            assert (await client.get(path)).status_code == 200


async def test_predict_open() -> None:
    settings = Settings(api_keys=SecretStr("k"), predict_open=True)
    events = {"events": some_events(3)}
    async with running_app(settings) as client:
        assert (await client.post("/v1/predict", json=events)).status_code == 200
        assert (await client.post("/v1/train", json=events)).status_code == 401
        r = await client.post("/v1/train", json=events, headers={"authorization": "Bearer k"})
        assert r.status_code == 200


async def test_no_keys_means_open() -> None:
    async with running_app(Settings()) as client:
        assert (await client.get("/v1/model")).status_code == 200


def test_configured_but_empty_keys_refused(tmp_path: Path) -> None:
    from service.auth import load_keys

    empty = tmp_path / "keys"
    empty.write_text("\n# nothing\n")
    with pytest.raises(ValueError, match="none is non-empty"):
        load_keys(Settings(api_key_file=empty))
    with pytest.raises(ValueError, match="--api-key-file"):
        load_keys(Settings(api_key_file=tmp_path / "missing"))
