"""The join across workers: impressions + clicks per second on ``ctr serve --workers 2``
with a Redis state store (two shards), against one worker with the memory store, over HTTP
(``redis1``: one worker with the Redis store).

    python bench/join_redis.py /tmp/syn1m.tsv [--rows 100000] [--rate 1000] [--window 60]
        [--slice 10] [--batch 500] [--clients 4] [--modes redis2 redis1 memory1]

The stream is ``delayed_feedback.py``'s (the bench kit's ``gen_events.py`` over the TSV's
first ``--rows`` rows), micro-batched per ``--slice`` seconds of event time (impressions,
then clicks) and cut into requests of ``--batch`` events. Each run of same-kind requests is
sent by ``--clients`` threads at once, each on its own keep-alive connection (so with two
workers behind one port both take requests, and a click often reaches the worker that did
not take its impression); the next run starts when it is answered (a click still follows
its impression). Every server has a data directory (``--fsync`` as given).

Printed per mode: events (impressions + clicks) sent per second while sending, the seconds
until every window has closed after the last request (a far-ahead click closes them), the
rate over both (with Redis, windows close on the workers' ticks, not in the requests), and
the join's sums over the workers (``/v1/join``: ``cluster`` with Redis): clicks joined,
forwarded to another worker and matched there, impressions expired.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent / "tests"))

from _common import DEFAULT_SHARED  # noqa: E402
from delayed_feedback import make_events, requests_of, reslice  # noqa: E402
from redis_servers import start_redis  # type: ignore[import-not-found]  # noqa: E402
from servers import start_server  # type: ignore[import-not-found]  # noqa: E402


def phases(reqs: list[tuple[bool, bytes, int]]) -> list[tuple[bool, list[bytes]]]:
    """Runs of consecutive requests of one kind, in order."""
    out: list[tuple[bool, list[bytes]]] = []
    for imp, body, _ in reqs:
        if out and out[-1][0] == imp:
            out[-1][1].append(body)
        else:
            out.append((imp, [body]))
    return out


def send_all(url: str, runs: list[tuple[bool, list[bytes]]], clients: int) -> float:
    """Send every run, ``clients`` requests at a time; the seconds it took."""
    local = threading.local()
    made: list[httpx.Client] = []

    def post(path: str, body: bytes) -> None:
        client = getattr(local, "client", None)
        if client is None:
            client = local.client = httpx.Client(base_url=url, timeout=60)
            made.append(client)
        r = client.post(path, content=body, headers={"content-type": "application/json"})
        if r.status_code != 200:
            raise RuntimeError(f"{path}: {r.status_code} {r.text[:300]}")

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        for imp, bodies in runs:
            path = "/v1/impressions" if imp else "/v1/feedback"
            list(pool.map(lambda b, p=path: post(p, b), bodies))  # type: ignore[misc]
    seconds = time.perf_counter() - start
    for c in made:
        c.close()
    return seconds


def sums(url: str) -> dict[str, Any]:
    """The join's counters summed over the workers (one worker: its own)."""
    status: dict[str, Any] = httpx.get(url + "/v1/join", timeout=30).json()
    cluster: dict[str, Any] | None = status.get("cluster")
    return cluster if cluster is not None else {"workers": 1, **status}


def run(mode: str, runs: list[tuple[bool, list[bytes]]], n_imps: int, n_events: int,
        args: argparse.Namespace, work: Path) -> dict[str, Any]:
    flags = ["--alpha", "0.2", "--join-window", str(args.window), "--data-dir",
             str(work / "data"), "--fsync", args.fsync]
    shards = []
    workers = 1
    if mode.startswith("redis"):
        shards = [start_redis(work / f"redis{i}") for i in range(2)]
        workers = int(mode[len("redis"):])
        flags += ["--workers", str(workers), "--state", ",".join(s.url for s in shards)]
    server = start_server(work / "serve", *flags)
    try:
        # every worker loaded (each answers /v1/join once it has)
        seen: set[str] = set()
        deadline = time.monotonic() + 120
        while len(seen) < workers and time.monotonic() < deadline:
            r = httpx.get(server.url + "/v1/join", timeout=30)
            if r.status_code == 200:
                seen.add(r.json().get("worker", "one"))
        seconds = send_all(server.url, runs, args.clients)
        far = json.dumps({"events": [{"id": "bench-closes-all",
                                      "ts": args.last_ts + 2 * args.window}]}).encode()
        drain = time.perf_counter()
        httpx.post(server.url + "/v1/feedback", content=far,
                   headers={"content-type": "application/json"}, timeout=60)
        while True:
            s = sums(server.url)
            if s.get("workers", 1) >= workers and s["expired"] >= n_imps - s["pending"] \
                    and s["pending"] == 0:
                break
            if time.perf_counter() - drain > 300:
                break
            time.sleep(0.05)
        drained = time.perf_counter() - drain
        # the workers report their counters every second: read them once they settle
        while True:
            time.sleep(2.5)
            again = sums(server.url)
            if again == s:
                break
            s = again
    finally:
        server.stop()
        for sh in shards:
            sh.stop()
    return {"mode": mode, "events": n_events, "seconds": seconds,
            "events_per_s": n_events / seconds, "close_all_seconds": drained,
            # sending, then closing what is still pending (learned by the ticks, with Redis)
            "events_per_s_through_close": n_events / (seconds + drained),
            **{k: s.get(k) for k in ("impressions", "joined", "late", "unknown",
                                     "repeated_clicks", "forwarded", "marks_matched",
                                     "unmatched_clicks", "expired", "learned_positives",
                                     "learned_negatives")}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("tsv", type=Path)
    ap.add_argument("--shared", type=Path, default=DEFAULT_SHARED)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--rate", type=float, default=1000.0)
    ap.add_argument("--window", type=float, default=60.0)
    ap.add_argument("--slice", type=float, default=10.0)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--fsync", default="always", choices=["always", "everysec", "no"])
    ap.add_argument("--modes", nargs="+", default=["redis2", "memory1"],
                    choices=["redis2", "redis1", "memory1"])
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "delayed_fb")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    events = reslice(make_events(args.tsv, args.rows, args.rate, args.work, args.shared),
                     args.slice)
    reqs, _ = requests_of(events, args.batch)
    with open(events, "rb") as fh:
        args.last_ts = max(float(json.loads(line)["ts"]) for line in fh if line.strip())
    n_imps = sum(n for imp, _, n in reqs if imp)
    n_events = sum(n for _, _, n in reqs)
    runs = phases(reqs)
    print(f"{events.name}: {n_imps} impressions, {n_events - n_imps} clicks, "
          f"{len(reqs)} requests in {len(runs)} runs, {args.clients} clients")
    for mode in args.modes:
        with tempfile.TemporaryDirectory() as tmp:
            out = run(mode, runs, n_imps, n_events, args, Path(tmp))
        print(json.dumps(out))


if __name__ == "__main__":
    main()
