"""Prediction throughput and latency over HTTP, each row beside its reference, in one run.

    python bench/predict_latency.py [--seconds 10] [--repeats 3] [--candidates 100]
                                   [--workers 2] [--tool auto|wrk|python]

Starts servers on loopback, all on the same uvicorn with the options `ctr serve` uses: a
bare ASGI app and a trivial FastAPI route (bench/_ref_apps.py: each reads the body and
answers a constant JSON), `ctr serve --alpha 0.2` (1 worker, memory store) and, unless
`--workers 1`, `ctr serve --alpha 0.2 --workers N` (N prediction workers over the learner's
shared model) and the bare app on N uvicorn workers; the two `ctr serve` are trained on
5,000 synthetic events. Then, `--repeats` times in turn, for
`--seconds` each, with one load generator thread:

- the bare ASGI app and the trivial FastAPI route, sent the single-event predict body
  (16 connections): the references;
- single-event POST /v1/predict, 16 connections: req/s, p50, p99 and % of the bare app's
  req/s in the same repeat (target >= 35%, p99 <= 2 ms);
- `--candidates`-event POST /v1/predict, 8 connections: candidates/s (target >= 400k),
  p50, p99 (target <= 5 ms);
- both again on the N prediction workers, with their gain over 1 worker, beside the bare
  ASGI app on N uvicorn workers (what N processes can gain at all on this machine).

Each figure is the median over the repeats, with the range beside it; ratios are taken
repeat by repeat. The CPU column is the server's CPU time per request (its worker processes
included): on a machine shared with other jobs, the ratio of the bare app's to a row's is
what the req/s ratio would be with each server alone on a core. The load generator is
`wrk` (`apt-get install -y wrk`) with one thread; without it the script says so and uses
the asyncio generator in `_loadgen.py`, whose figures are lower and not comparable with
wrk's. Servers and load generator share the machine's cores: compare within a run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from _server import Server

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from clients import CTRClient

HERE = Path(__file__).resolve().parent
Result = dict[str, float]


def synthetic_events(n: int, seed: int = 1) -> list[dict]:
    """Events of 20 Pareto-distributed tokens and a price, labels from a stable hash of
    three of them (crc32: the same data in every run)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        feats: dict[str, object] = {
            f"f{j}": f"v{min(int(rng.paretovariate(1.2)), 500)}" for j in range(20)}
        feats["price"] = round(rng.random(), 3)
        score = sum(zlib.crc32(str(v).encode()) % 7 for v in list(feats.values())[:3]) / 21.0
        out.append({"label": int(rng.random() < 0.05 + 0.2 * score), "features": feats})
    return out


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]


def with_wrk(url: str, path: str, body: bytes, concurrency: int, seconds: float,
             tmp: Path) -> Result:
    script = tmp / "req.lua"
    script.write_text('wrk.method = "POST"\n'
                      f"wrk.body = {json.dumps(body.decode())}\n"
                      'wrk.headers["Content-Type"] = "application/json"\n')
    res = subprocess.run(["wrk", "-t1", f"-c{concurrency}", f"-d{seconds:g}s", "--latency",
                          "-s", str(script), url + path], capture_output=True, text=True,
                         check=True)
    out = res.stdout
    lat = dict(re.findall(r"^\s+(50|99)%\s+(\S+)$", out, re.M))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                       out)
    return {"requests": int(re.search(r"(\d+) requests in", out).group(1)),  # type: ignore
            "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore
            "p50_ms": _ms(lat["50"]), "p99_ms": _ms(lat["99"]),
            "non_2xx": int(bad.group(1)) if bad else 0,
            "socket_errors": sum(int(x) for x in errors.groups()) if errors else 0}


def with_python(url: str, path: str, body: bytes, concurrency: int, seconds: float,
                tmp: Path) -> Result:
    (tmp / "body").write_bytes(body)
    cmd = [sys.executable, str(HERE / "_loadgen.py"), url, "POST", path, "--concurrency",
           str(concurrency), "--seconds", str(seconds), "--body", str(tmp / "body")]
    res = subprocess.run(cmd, capture_output=True, text=True, check=True)
    r = json.loads(res.stdout)
    statuses: dict[str, int] = r.pop("statuses")
    r["non_2xx"] = sum(n for s, n in statuses.items() if not s.startswith("2"))
    r["socket_errors"] = 0
    return {k: float(v) for k, v in r.items()}


@dataclass
class Row:
    name: str
    server: str  # "bare", "fastapi", "ctr" (1 worker) or "workers" (--workers N)
    body: bytes
    connections: int
    events: int  # per request
    results: list[Result]


def _span(values: list[float], fmt: Callable[[float], str]) -> str:
    if len(values) == 1:
        return fmt(values[0])
    return f"{fmt(statistics.median(values))} ({fmt(min(values))}-{fmt(max(values))})"


def _ratios(a: Row, b: Row) -> list[float]:
    """a's req/s over b's, repeat by repeat (each pair measured minutes apart at most)."""
    return [x["rps"] / y["rps"] for x, y in zip(a.results, b.results, strict=True)]


def _report(rows: dict[str, Row], candidates: int) -> None:
    bare = rows["bare"]
    print(f"{'row':<42} {'conns':>5}  {'req/s: median (range)':<27} {'p50 ms':>7} "
          f"{'p99 ms':>7} {'CPU us':>7}  compared")
    for key, row in rows.items():
        rps = [r["rps"] for r in row.results]
        p50 = statistics.median(r["p50_ms"] for r in row.results)
        p99 = statistics.median(r["p99_ms"] for r in row.results)
        bad = sum(r["non_2xx"] + r["socket_errors"] for r in row.results)
        if row.events > 1:
            other = "1-many" if key == "workers-many" else None
            cps = _span([r * candidates for r in rps], lambda v: f"{v:,.0f}")
            note = f"{cps} candidates/s"
        else:
            other = "1-one" if key == "workers-one" else None
            note = f"{_span(_ratios(row, bare), lambda v: f'{v:.1%}')} of the bare app"
        if key == "bare-workers":
            other = "bare"
        if other is not None:
            note += f"; {_span(_ratios(row, rows[other]), lambda v: f'{v:.2f}x')} 1 worker"
        cpu = statistics.median(r["cpu_us"] for r in row.results)
        print(f"{row.name:<42} {row.connections:>5}  {_span(rps, lambda v: f'{v:,.0f}'):<27} "
              f"{p50:>7.2f} {p99:>7.2f} {cpu:>7.1f}  {note}"
              + (f"   NON-2XX OR SOCKET ERRORS: {bad:.0f}" if bad else ""))
    one, many = rows["1-one"], rows["1-many"]
    ratio = statistics.median(_ratios(one, bare))
    p99 = statistics.median(r["p99_ms"] for r in one.results)
    print(f"\nsingle-event /v1/predict, 1 worker: {ratio:.1%} of the bare app's req/s (target "
          f">= 35%: {'ok' if ratio >= 0.35 else 'MISS'}), p99 {p99:.2f} ms (target <= 2 ms: "
          f"{'ok' if p99 <= 2 else 'MISS'}); p99 over the repeats "
          f"{_span([r['p99_ms'] for r in one.results], lambda v: f'{v:.2f}')}")
    cpu_ratio = statistics.median(b["cpu_us"] / r["cpu_us"]
                                  for r, b in zip(one.results, bare.results, strict=True))
    print(f"  the servers' CPU per request (the CPU us column): the bare app's is {cpu_ratio:.1%}"
          " of the single-event prediction's, the req/s ratio when each server has a core of "
          "its own")
    cps = statistics.median(r["rps"] * candidates for r in many.results)
    p99 = statistics.median(r["p99_ms"] for r in many.results)
    print(f"{candidates}-candidate /v1/predict, 1 worker: {cps:,.0f} candidates/s (target >= "
          f"400,000: {'ok' if cps >= 400_000 else 'MISS'}), p99 {p99:.2f} ms (target <= 5 ms: "
          f"{'ok' if p99 <= 5 else 'MISS'}); p99 over the repeats "
          f"{_span([r['p99_ms'] for r in many.results], lambda v: f'{v:.2f}')}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--candidates", type=int, default=100)
    ap.add_argument("--train-events", type=int, default=5000)
    ap.add_argument("--workers", type=int, default=2,
                    help="prediction workers of the extra rows (1: no extra rows)")
    ap.add_argument("--tool", choices=["auto", "wrk", "python"], default="auto")
    a = ap.parse_args()
    have_wrk = shutil.which("wrk") is not None
    if a.tool == "wrk" and not have_wrk:
        raise SystemExit("wrk is not installed (Debian: apt-get install -y wrk)")
    tool = a.tool if a.tool != "auto" else ("wrk" if have_wrk else "python")
    if tool == "python":
        print("NOTE: " + ("wrk is not installed (apt-get install -y wrk): " if not have_wrk
                          else "") + "using the asyncio load generator (_loadgen.py); its "
              "figures are lower than wrk's and not comparable with them\n")
    drive = with_wrk if tool == "wrk" else with_python
    events = synthetic_events(a.train_events + a.candidates + 1)
    train, rest = events[:a.train_events], events[a.train_events:]
    one = json.dumps({"events": [{"features": rest[-1]["features"]}]}).encode()
    many = json.dumps({"events": [{"features": e["features"]}
                                  for e in rest[:a.candidates]]}).encode()
    rows = {"bare": Row("bare ASGI app (same uvicorn)", "bare", one, 16, 1, []),
            "fastapi": Row("trivial FastAPI route", "fastapi", one, 16, 1, []),
            "1-one": Row("POST /v1/predict, 1 event", "ctr", one, 16, 1, []),
            "1-many": Row(f"POST /v1/predict, {a.candidates} candidates", "ctr", many, 8,
                          a.candidates, [])}
    if a.workers > 1:
        rows["workers-one"] = Row(f"POST /v1/predict, 1 event, {a.workers} workers",
                                  "workers", one, 16, 1, [])
        rows["workers-many"] = Row(f"POST /v1/predict, {a.candidates} cand., {a.workers} "
                                   "workers", "workers", many, 8, a.candidates, [])
        rows["bare-workers"] = Row(f"bare ASGI app, {a.workers} workers (ceiling)",
                                   "bare-workers", one, 16, 1, [])
    load_before = os.getloadavg()
    with contextlib.ExitStack() as stack:
        servers = {"bare": stack.enter_context(Server(reference="bare")),
                   "fastapi": stack.enter_context(Server(reference="fastapi")),
                   "ctr": stack.enter_context(Server("--alpha", "0.2"))}
        if a.workers > 1:
            servers["bare-workers"] = stack.enter_context(
                Server(reference="bare", workers=a.workers))
            servers["workers"] = stack.enter_context(
                Server("--alpha", "0.2", "--workers", str(a.workers)))
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        learned = {}
        for name in ("ctr", "workers"):
            if name not in servers:
                continue
            with CTRClient(servers[name].url) as client:
                for i in range(0, len(train), 1000):
                    client.train(train[i:i + 1000])
                assert len(client.predict(one).p) == 1
                assert len(client.predict(many).p) == a.candidates
                learned[name] = client.model()["rows"]
        for _ in range(a.repeats):
            for row in rows.values():
                server = servers[row.server]
                cpu = server.cpu_seconds()
                result = drive(server.url, "/v1/predict", row.body, row.connections,
                               a.seconds, tmp)
                result["cpu_us"] = (server.cpu_seconds() - cpu) / result["requests"] * 1e6
                row.results.append(result)
    load_after = os.getloadavg()
    print(f"load generator: {tool}, one thread; {a.repeats} repeats of {a.seconds:g} s per "
          f"row, in turn; ctr serve: memory store, model trained on {learned['ctr']:,} "
          f"events; {os.cpu_count()} cores, load average {load_before[0]:.1f} before, "
          f"{load_after[0]:.1f} after\n")
    _report(rows, a.candidates)


if __name__ == "__main__":
    main()
