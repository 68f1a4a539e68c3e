"""Single-event prediction latency: POST /v1/predict against the trivial GET /healthz.

    python bench/predict_latency.py [--seconds 20] [--concurrency 16] [--tool auto|wrk|python]

Starts `ctr serve --alpha 0.2` (1 worker), trains it on a few thousand synthetic events, then
drives single-event POST /v1/predict with `concurrency` keep-alive connections for
`seconds`, and GET /healthz (a trivial route of the same app) the same way, in the same
server and run. Prints req/s and p50/p99 latency of each and their ratio (target: predict
>= 60% of the trivial route's req/s). The load generator is `wrk` (one thread) when it is
installed, else the asyncio generator in `_loadgen.py`, each in its own process.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from _server import Server

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from clients import CTRClient

HERE = Path(__file__).resolve().parent


def synthetic_events(n: int, seed: int = 1) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        feats = {f"f{j}": f"v{min(int(rng.paretovariate(1.2)), 500)}" for j in range(20)}
        feats["price"] = round(rng.random(), 3)
        score = sum(hash(v) % 7 for v in list(feats.values())[:3]) / 21.0
        out.append({"label": int(rng.random() < 0.05 + 0.2 * score), "features": feats})
    return out


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]


def with_wrk(url: str, method: str, path: str, body: bytes, concurrency: int,
             seconds: float, tmp: Path) -> dict[str, object]:
    script = tmp / "req.lua"
    script.write_text(f"wrk.method = {json.dumps(method)}\n"
                      f"wrk.body = {json.dumps(body.decode())}\n"
                      'wrk.headers["Content-Type"] = "application/json"\n')
    res = subprocess.run(["wrk", "-t1", f"-c{concurrency}", f"-d{int(seconds)}s", "--latency",
                          "-s", str(script), url + path], capture_output=True, text=True,
                         check=True)
    out = res.stdout
    lat = dict(re.findall(r"^\s+(50|99)%\s+(\S+)$", out, re.M))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return {"requests": int(re.search(r"(\d+) requests in", out).group(1)),  # type: ignore
            "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore
            "p50_ms": _ms(lat["50"]), "p99_ms": _ms(lat["99"]),
            "non_2xx": int(bad.group(1)) if bad else 0,
            "socket_errors": errors.group(1) if errors else ""}


def with_python(url: str, method: str, path: str, body: bytes, concurrency: int,
                seconds: float, tmp: Path) -> dict[str, object]:
    (tmp / "body").write_bytes(body)
    cmd = [sys.executable, str(HERE / "_loadgen.py"), url, method, path, "--concurrency",
           str(concurrency), "--seconds", str(seconds)]
    if body:
        cmd += ["--body", str(tmp / "body")]
    res = subprocess.run(cmd, capture_output=True, text=True, check=True)
    r: dict[str, object] = json.loads(res.stdout)
    statuses: dict[str, int] = r.pop("statuses")  # type: ignore[assignment]
    r["non_2xx"] = sum(n for s, n in statuses.items() if not s.startswith("2"))
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--train-events", type=int, default=5000)
    ap.add_argument("--tool", choices=["auto", "wrk", "python"], default="auto")
    a = ap.parse_args()
    tool = a.tool if a.tool != "auto" else ("wrk" if shutil.which("wrk") else "python")
    drive = with_wrk if tool == "wrk" else with_python
    events = synthetic_events(a.train_events + 1)
    one = json.dumps({"events": [{"features": events[-1]["features"]}]}).encode()
    with Server("--alpha", "0.2") as server, tempfile.TemporaryDirectory() as tmp:
        with CTRClient(server.url) as client:
            for i in range(0, a.train_events, 1000):
                client.train(events[i:min(i + 1000, a.train_events)])
            assert len(client.predict(one).p) == 1
            rows = client.model()["rows"]
        results = {}
        for name, method, path, body in (("predict", "POST", "/v1/predict", one),
                                         ("healthz", "GET", "/healthz", b"")):
            results[name] = drive(server.url, method, path, body, a.concurrency, a.seconds,
                                  Path(tmp))
    print(f"load generator: {tool}; server: 1 worker, model trained on {rows:,} events; "
          f"{a.concurrency} connections, {a.seconds:g} s per route")
    for name, r in results.items():
        extra = f", non-2xx {r['non_2xx']}" if r.get("non_2xx") else ""
        print(f"  {name:<8} {r['rps']:>9,.0f} req/s   p50 {r['p50_ms']:.2f} ms   "
              f"p99 {r['p99_ms']:.2f} ms   ({r['requests']:,} requests{extra})")
    ratio = float(results["predict"]["rps"]) / float(results["healthz"]["rps"])  # type: ignore
    print(f"  predict / healthz req/s: {ratio:.1%} (target >= 60%: "
          f"{'ok' if ratio >= 0.6 else 'MISS'})")


if __name__ == "__main__":
    main()
