"""Helpers of the service tests: a running app (lifespan included) behind an httpx client,
and Criteo rows as JSON events."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
from datagen import criteo_lines

from service.app import create_app
from service.settings import Settings

CRITEO_FIELDS = [f"I{j + 1}" for j in range(13)] + [f"C{j + 1}" for j in range(26)]


def criteo_events(lines: list[str]) -> list[dict[str, Any]]:
    """Criteo TSV lines as events: every column a string token, "" for an empty one."""
    out = []
    for line in lines:
        cols = line.split("\t")
        out.append({"label": int(cols[0]), "features": dict(zip(CRITEO_FIELDS, cols[1:],
                                                                strict=True))})
    return out


def some_events(n: int, seed: int = 0) -> list[dict[str, Any]]:
    return criteo_events(criteo_lines(n, seed=seed))


@contextlib.asynccontextmanager
async def running_app(settings: Settings | None = None, *, wait_ready: bool = True
                      ) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan running, and a client talking to it in-process."""
    app = create_app(settings or Settings(_env_file=None))  # type: ignore[call-arg]
    async with app.router.lifespan_context(app):
        if wait_ready:
            deadline = time.monotonic() + 300  # a cold Numba cache compiles everything
            while not app.state.learner.ready:
                assert time.monotonic() < deadline, "the service never became ready"
                await anyio.sleep(0.02)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ctr.test") as client:
            client.app = app  # type: ignore[attr-defined]
            yield client


async def wait_ready_status(client: Any, status: int, seconds: float = 10.0) -> dict[str, Any]:
    """Poll /readyz until it answers ``status``; its body."""
    deadline = anyio.current_time() + seconds
    while True:
        r = await client.get("/readyz")
        if r.status_code == status:
            return dict(r.json())
        assert anyio.current_time() < deadline, r.text
        await anyio.sleep(0.05)
