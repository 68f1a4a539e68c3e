"""CPU time per request of the app itself, in process (no server, no sockets):

    python bench/app_cpu.py [--rounds 15] [--requests 2000]

Calls each ASGI app directly with a prepared request (the body in one message, the answer
dropped) and prints the CPU time per request, the minimum over `--rounds` rounds (the
least disturbed by other jobs on a shared machine: this is the figure to compare when wall
clock rates are noisy), on uvloop when it is installed, as `ctr serve` runs. Rows: the bare
ASGI app and the trivial FastAPI route of bench/_ref_apps.py, and `POST /v1/predict` (1
event and 100 candidates) of the service's app with its lean path and without it (every
route through FastAPI), on a model trained on 5,000 synthetic events. The server's own
work (uvicorn, httptools, the socket system calls) comes on top of every row alike.

The "through uvicorn" rows send the raw HTTP request to uvicorn's protocol object instead
(the class `ctr serve` gives uvicorn, the app wrapped as uvicorn wraps it, a transport that
keeps what is written): uvicorn's parsing and request cycle included, the sockets not. Once
with the connection answering the lean routes itself (`service/direct.py`, what `ctr serve`
does), once the ASGI way (the app and its middleware called, the answer sent as two ASGI
messages), their rounds taken in turn.
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

import uvicorn
from _ref_apps import bare, trivial_fastapi
from predict_latency import synthetic_events
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from service.app import create_app
from service.connections import LimitedHttpToolsProtocol
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


class KeptWrites(asyncio.Transport):
    """A connection's transport that keeps what is written (the bench's peer)."""

    def __init__(self) -> None:
        super().__init__()
        self.written: list[bytes] = []
        self.closed = False

    def write(self, data: Any) -> None:
        self.written.append(bytes(data))

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 40000)}.get(
            name, default)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class AsgiWay(LimitedHttpToolsProtocol):
    """``ctr serve``'s protocol with every request started as uvicorn starts it."""

    _start_asgi_task = HttpToolsProtocol._start_asgi_task


class UvicornConnection:
    """A connection of uvicorn's protocol ``protocol`` to ``app`` (wrapped as uvicorn
    wraps it), sent ``body`` as a raw HTTP request."""

    def __init__(self, app: App, protocol: type[HttpToolsProtocol], body: bytes) -> None:
        config = uvicorn.Config(app, access_log=False, lifespan="off", server_header=False,
                                http=protocol, log_level="warning")
        config.load()
        self.conn = protocol(config=config, server_state=ServerState(),  # type: ignore[call-arg]
                             app_state={})
        self.transport = KeptWrites()
        self.conn.connection_made(self.transport)
        self.raw = (b"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nContent-Type: "
                    b"application/json\r\nContent-Length: %d\r\n\r\n" % len(body)) + body

    async def send(self, n: int) -> float:
        """Send ``n`` requests, each answered before the next: CPU us per request."""
        self.transport.written.clear()
        start = time.process_time()
        for _ in range(n):
            self.conn.data_received(self.raw)
            for _ in range(3):  # the request's task, and the joined writes' flush
                await asyncio.sleep(0)
        spent = (time.process_time() - start) / n * 1e6
        answered = b"".join(self.transport.written).count(b"HTTP/1.1 200 OK")
        if answered != n:
            raise SystemExit(f"through uvicorn: {answered} answers to {n} requests: "
                             f"{b''.join(self.transport.written)[:200]!r}")
        return spent


async def cpu_through_uvicorn(app: App, protocols: list[type[HttpToolsProtocol]],
                              body: bytes, rounds: int, n: int) -> list[float]:
    """Microseconds of CPU per request through each of uvicorn's ``protocols``, the
    minimum over the rounds, taken in turn (the rows compared in the same moments)."""
    conns = [UvicornConnection(app, p, body) for p in protocols]
    for conn in conns:
        await conn.send(10)
    best = [float("inf")] * len(conns)
    for _ in range(rounds):
        for i, conn in enumerate(conns):
            best[i] = min(best[i], await conn.send(n))
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
            if not lean:
                continue
            ways = ["the connection answers", "the ASGI way"]
            protocols = [LimitedHttpToolsProtocol, AsgiWay]
            for what, body, n in (("1 event", one, a.requests),
                                  ("100 candidates", many, max(a.requests // 10, 1))):
                spent = await cpu_through_uvicorn(app, protocols, body, a.rounds, n)
                rows += [(f"{what}, through uvicorn, {way}", us)
                         for way, us in zip(ways, spent, strict=True)]
    print(f"CPU per request in process, min of {a.rounds} rounds of {a.requests} "
          "(100 candidates: a tenth as many)")
    for name, us in rows:
        print(f"  {name:<56} {us:8.1f} us")


if __name__ == "__main__":
    try:  # the loop ctr serve runs on (uvicorn takes uvloop when it is installed)
        import uvloop
    except ImportError:
        asyncio.run(main())
    else:
        uvloop.run(main())
