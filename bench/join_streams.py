"""The join consumer: ``ctr consume --impressions-stream --clicks-stream`` on two Redis
streams, with a SIGKILL in the middle.

    python bench/join_streams.py DATA.tsv [--rows 200000] [--rate 50] [--window 3600]
                                 [--batch-size 1000] [--kill-at 0.5] [--shared ../shared]

1. Makes the mixed event stream of the first N rows with the bench kit's ``gen_events.py``
   (``--rate`` impressions per second of event time) and XADDs its impressions to one stream
   and its clicks to another (field ``event``), on a redis-server of its own.
2. Runs ``ctr consume --alpha 0.2 --join-window W`` on a fresh data directory; when the
   group has acknowledged ``--kill-at`` of the impressions, SIGKILLs it (0: no kill), then
   runs it again (another consumer name) until nothing is left (``--exit-when-idle``).
3. Prints: the entries XADDed; the join's counts (impressions: once each, no duplicate;
   joined, expired, pending); the entries the restart found in the log already; events/s
   (from the first entry read to the last acknowledgement: of the restart, or with
   ``--kill-at 0`` of one uninterrupted run).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from _common import ctr, head
from redis_servers import RedisServer, start_redis

ROOT = Path(__file__).resolve().parent.parent
IMPS, CLICKS, GROUP = "imps", "clicks", "joiner"


def xadd_events(server: RedisServer, events: Path) -> tuple[int, int, float]:
    client = server.client()
    start = time.perf_counter()
    counts = {IMPS: 0, CLICKS: 0}
    pipe = client.pipeline(transaction=False)
    with open(events, "rb") as fh:
        for n, line in enumerate(fh, 1):
            stream = CLICKS if line.startswith(b'{"type": "click"') else IMPS
            pipe.xadd(stream, {"event": line.rstrip(b"\n")})
            counts[stream] += 1
            if n % 2000 == 0:
                pipe.execute()
    pipe.execute()
    return counts[IMPS], counts[CLICKS], time.perf_counter() - start


def consume(server: RedisServer, data: Path, name: str, window: float, batch: int,
            metrics: Path, log: Path, idle: bool) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CTR_")}
    cmd = ctr("consume", "--source", server.url, "--impressions-stream", IMPS,
              "--clicks-stream", CLICKS, "--group", GROUP, "--consumer", name,
              "--data-dir", str(data), "--join-window", str(window), "--alpha", "0.2",
              "--batch-size", str(batch), "--block-ms", "100", "--quiet",
              "--metrics-json", str(metrics), *(["--exit-when-idle"] if idle else []))
    with open(log, "wb") as fh:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data", type=Path)
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--rate", type=float, default=50.0)
    ap.add_argument("--window", type=float, default=3600.0)
    ap.add_argument("--batch-size", type=int, default=1000)
    ap.add_argument("--kill-at", type=float, default=0.5)
    ap.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="join-streams-") as tmp:
        work = Path(tmp)
        prefix = head(args.data, args.rows, work / "prefix.tsv")
        events = work / "events.jsonl"
        with open(events, "wb") as fh:
            subprocess.run([sys.executable, str(args.shared / "bench" / "gen_events.py"),
                            str(prefix), "--rate", str(args.rate)], stdout=fh,
                           stderr=subprocess.DEVNULL, check=True)
        server = start_redis(work / "redis")
        try:
            n_imps, n_clicks, xadd_s = xadd_events(server, events)
            print(f"XADDed {n_imps:,} impressions and {n_clicks:,} clicks in {xadd_s:.1f} s")
            client = server.client()
            data = work / "data"
            first = work / "a.json"
            proc = consume(server, data, "a", args.window, args.batch_size, first,
                           work / "a.log", idle=args.kill_at <= 0)
            if args.kill_at > 0:
                goal = int(n_imps * args.kill_at)
                deadline = time.monotonic() + 1800
                while int(client.hget(f"{IMPS}:stats:{GROUP}", "impressions") or 0) < goal:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        sys.exit((work / "a.log").read_text())
                    time.sleep(0.01)
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                acked = int(client.hget(f"{IMPS}:stats:{GROUP}", "impressions") or 0) + \
                    int(client.hget(f"{IMPS}:stats:{GROUP}", "clicks") or 0)
                held = sum(int(client.xpending(s, GROUP)["pending"]) for s in (IMPS, CLICKS))
                print(f"SIGKILLed after {acked:,} entries acknowledged ({held:,} pending)")
                second = work / "b.json"
                start = time.perf_counter()
                proc = consume(server, data, "b", args.window, args.batch_size, second,
                               work / "b.log", idle=True)
                if proc.wait() != 0:
                    sys.exit((work / "b.log").read_text())
                wall = time.perf_counter() - start
                m = json.loads(second.read_text())
                print(f"restart: {wall:.1f} s wall (start-up, the log learned again, "
                      f"kernels); {m['claimed']:,} pending entries taken over, "
                      f"{m['duplicates']:,} found in the log, "
                      f"{m['impressions'] + m['clicks']:,} applied at "
                      f"{m['events_per_second']:,.0f} events/s")
            else:
                if proc.wait() != 0:
                    sys.exit((work / "a.log").read_text())
                m = json.loads(first.read_text())
                print(f"{m['impressions'] + m['clicks']:,} entries at "
                      f"{m['events_per_second']:,.0f} events/s")
            j, g = m["join"], m["group"]
            print(f"join: impressions {j['impressions']:,} (duplicates {j['duplicates']}), "
                  f"joined {j['joined']:,}, expired {j['expired']:,}, late {j['late']:,}, "
                  f"pending {j['pending']:,}; model rows {m['model_rows']:,}")
            print(f"group totals: {g}")
            assert j["impressions"] == n_imps and j["duplicates"] == 0
            assert g.get("impressions", 0) + g.get("clicks", 0) + g.get("duplicates", 0) \
                == n_imps + n_clicks
        finally:
            server.stop()


if __name__ == "__main__":
    main()
