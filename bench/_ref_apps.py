"""The reference apps of bench/predict_latency.py, each served alone by uvicorn with the
options `ctr serve` gives it (service/cli/serve.py: httptools and uvloop when installed, no
access log, no server header, lifespan on):

    python bench/_ref_apps.py bare|fastapi PORT [WORKERS]

- ``bare``: a plain ASGI callable that reads the request body and answers a constant JSON
  (the server's limit: uvicorn, httptools and the event loop, nothing else);
- ``fastapi``: a FastAPI app whose one route (any path, GET or POST) does the same, returning
  a ready ``Response`` (the cheapest FastAPI route: no body model, no serialisation).
"""

from __future__ import annotations

import sys
from pathlib import Path

import uvicorn
from fastapi import FastAPI, Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

BODY = b'{"status":"ok"}'
HEADERS = [(b"content-length", str(len(BODY)).encode()), (b"content-type", b"application/json")]


async def bare(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})


def trivial_fastapi() -> FastAPI:
    app = FastAPI()

    @app.api_route("/{path:path}", methods=["GET", "POST"])
    async def trivial(request: Request) -> Response:
        await request.body()
        return Response(BODY, media_type="application/json")

    return app


def main() -> None:
    kind, port = sys.argv[1], int(sys.argv[2])
    workers = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    options = dict(host="127.0.0.1", port=port, log_level="warning", access_log=False,
                   lifespan="on", server_header=False)
    if workers > 1:  # uvicorn's worker processes import the app by name
        uvicorn.run(f"_ref_apps:{'bare' if kind == 'bare' else 'trivial_fastapi'}",
                    factory=kind != "bare", workers=workers,
                    app_dir=str(Path(__file__).resolve().parent), **options)  # type: ignore[arg-type]
        return
    uvicorn.run(bare if kind == "bare" else trivial_fastapi(), **options)  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
