"""A keep-alive HTTP/1.1 load generator in pure asyncio (the fallback when ``wrk`` is not
installed): ``concurrency`` connections, each sending one request after another for a fixed
time; prints JSON with requests/s and latency percentiles.

    python bench/_loadgen.py URL METHOD PATH [--body FILE] [--concurrency 16] [--seconds 20]

Requests are pre-encoded bytes and responses are parsed only as far as Content-Length, so
the generator costs little per request; with uvloop installed it uses uvloop.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from urllib.parse import urlsplit


async def _connection(host: str, port: int, request: bytes, stop_at: float,
                      latencies: list[float], statuses: dict[int, int]) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.perf_counter() < stop_at:
            t0 = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            if length:
                await reader.readexactly(length)
            latencies.append(time.perf_counter() - t0)
            statuses[status] = statuses.get(status, 0) + 1
    finally:
        writer.close()


async def run(url: str, method: str, path: str, body: bytes, concurrency: int,
              seconds: float) -> dict[str, object]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    head = (f"{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Content-Length: {len(body)}\r\n")
    if body:
        head += "Content-Type: application/json\r\n"
    request = head.encode() + b"\r\n" + body
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    start = time.perf_counter()
    stop_at = start + seconds
    await asyncio.gather(*(_connection(host, port, request, stop_at, latencies, statuses)
                           for _ in range(concurrency)))
    wall = time.perf_counter() - start
    latencies.sort()

    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1e3

    return {"requests": len(latencies), "rps": len(latencies) / wall, "p50_ms": pct(0.50),
            "p99_ms": pct(0.99), "statuses": statuses}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("method")
    ap.add_argument("path")
    ap.add_argument("--body", type=Path)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=20.0)
    a = ap.parse_args()
    body = a.body.read_bytes() if a.body else b""
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    print(json.dumps(asyncio.run(run(a.url, a.method, a.path, body, a.concurrency,
                                     a.seconds))))


if __name__ == "__main__":
    main()
