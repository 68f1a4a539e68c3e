"""CPU time per request of the app itself, in process (no server, no sockets):

    python bench/app_cpu.py [--rounds 15] [--requests 2000]

Calls each ASGI app directly with a prepared request (the body in one message, the answer
dropped) and prints the CPU time per request, the minimum over `--rounds` rounds (the
least disturbed by other jobs on a shared machine: this is the figure to compare when wall
clock rates are noisy). Rows: the bare ASGI app and the trivial FastAPI route of
bench/_ref_apps.py, and `POST /v1/predict` (1 event and 100 candidates) of the service's
app with its lean path and without it (every route through FastAPI), on a model trained on
5,000 synthetic events. The server's own work (uvicorn, httptools, the socket system calls)
comes on top of every row alike.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from _ref_apps import bare, trivial_fastapi
from predict_latency import synthetic_events

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from service.app import create_app
from service.settings import Settings

App = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


def request(path: str, body: bytes) -> dict[str, Any]:
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
            "method": "POST", "scheme": "http", "path": path, "raw_path": path.encode(),
            "query_string": b"", "root_path": "", "client": ("127.0.0.1", 40000),
            "server": ("127.0.0.1", 8000),
            "headers": [(b"host", b"127.0.0.1:8000"), (b"user-agent", b"bench"),
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode())]}


async def cpu_per_request(app: App, path: str, body: bytes, rounds: int, n: int) -> float:
    """Microseconds of CPU per request, the minimum over the rounds."""
    scope = request(path, body)
    statuses: list[int] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    best = float("inf")
    for _ in range(rounds):
        start = time.process_time()
        for _ in range(n):
            await app(dict(scope), receive, send)
        best = min(best, (time.process_time() - start) / n * 1e6)
    if set(statuses) != {200}:
        raise SystemExit(f"{path}: statuses {sorted(set(statuses))}")
    return best


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--requests", type=int, default=2000)
    a = ap.parse_args()
    events = synthetic_events(5101)
    one = json.dumps({"events": [{"features": events[-1]["features"]}]}).encode()
    many = json.dumps({"events": [{"features": e["features"]}
                                  for e in events[5000:5100]]}).encode()
    rows: list[tuple[str, float]] = []
    rows.append(("bare ASGI app", await cpu_per_request(
        bare, "/v1/predict", one, a.rounds, a.requests)))
    rows.append(("trivial FastAPI route", await cpu_per_request(
        trivial_fastapi(), "/v1/predict", one, a.rounds, a.requests)))
    for lean in (True, False):
        app = create_app(Settings(_env_file=None, alpha=0.2), lean=lean)  # type: ignore[call-arg]
        async with app.router.lifespan_context(app):
            while not app.state.learner.ready:
                await asyncio.sleep(0.05)
            for i in range(0, 5000, 1000):
                await app.state.learner.train(json.dumps({"events": events[i:i + 1000]})
                                              .encode())
            how = "lean path" if lean else "through FastAPI"
            rows.append((f"POST /v1/predict, 1 event, {how}", await cpu_per_request(
                app, "/v1/predict", one, a.rounds, a.requests)))
            rows.append((f"POST /v1/predict, 100 candidates, {how}", await cpu_per_request(
                app, "/v1/predict", many, a.rounds, max(a.requests // 10, 1))))
    print(f"CPU per request in process, min of {a.rounds} rounds of {a.requests} "
          "(100 candidates: a tenth as many)")
    for name, us in rows:
        print(f"  {name:<50} {us:8.1f} us")


if __name__ == "__main__":
    asyncio.run(main())
