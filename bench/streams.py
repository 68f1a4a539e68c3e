"""The Redis Streams consumer under a SIGKILL: two `ctr consume` processes share a consumer
group, one is killed in the middle, the other claims what it held.

    python bench/streams.py DATA.tsv [--rows 200000] [--batch-size 1000] [--kill-at 0.5]
                            [--claim-idle-ms 2000] [--state-shards 1] [--sync-every-events N]

1. Starts its own redis-server processes on free loopback ports (one holds the stream, the
   others are the state store's shards) and XADDs the first N rows of DATA as JSON events
   (`ftrl_core.readers.events`, the converter `ctr replay` uses), one per entry field
   `event`, each with an `id`.
2. Runs two `ctr consume --alpha 0.2` processes (a and b) on one group; when the group has
   acknowledged `--kill-at` of the rows, SIGKILLs a; b claims a's pending entries after
   `--claim-idle-ms` (XAUTOCLAIM) and exits once nothing is pending (`--exit-when-idle`).
3. Prints: events XADDed; events learned as the model's step counter in the state store
   counts them (exactly once: equal to the events XADDed); the group's totals (learned and
   acknowledged, duplicates skipped, dead letters); events/s (from the group's first
   acknowledged event to b's exit, the claim timeout included, and b's own busy rate); the
   final progressive logloss over the acknowledged events, beside `ctr train` on the same
   rows (one process, file order).
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

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from _common import count_lines, ctr, head
from redis_servers import RedisServer, start_redis

from ftrl_core.readers.eventsource import open_event_reader

ROOT = Path(__file__).resolve().parent.parent
LEARNER = ("--alpha", "0.2")
STREAM, GROUP = "events", "trainers"


def xadd_rows(server: RedisServer, data: Path, rows: int) -> float:
    """XADD the rows as events with ids ``r<line>``; returns the seconds it took."""
    client = server.client()
    start = time.perf_counter()
    sent = 0
    for batch in open_event_reader(str(data), "criteo", 1000, labels=True, limit=rows):
        pipe = client.pipeline(transaction=False)
        for (a, b), line in zip(batch.spans.tolist(), batch.lines.tolist(), strict=True):
            event = b'{"id":"r%d",' % line + batch.body[a + 1:b]
            pipe.xadd(STREAM, {"event": event})
        pipe.execute()
        sent += batch.rows
    if sent != rows:
        raise SystemExit(f"{data}: {sent} rows converted, {rows} expected")
    return time.perf_counter() - start


def group_stats(server: RedisServer) -> dict[str, float]:
    raw = server.client().hgetall(f"{STREAM}:stats:{GROUP}")
    return {k.decode(): float(v) for k, v in raw.items()}  # type: ignore[union-attr]


def held_by(server: RedisServer, name: str) -> int:
    return len(server.client().xpending_range(STREAM, GROUP, "-", "+", 100_000,
                                              consumername=name))


def model_rows(server: RedisServer) -> int:
    raw = server.client().hget("ctr:default:t", "1")
    return 0 if raw is None else int(np.frombuffer(raw, dtype="<f8")[0])  # type: ignore[arg-type]


def consumer(name: str, source: RedisServer, state: str, a: argparse.Namespace,
             tmp: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CTR_")}
    cmd = ctr("consume", "--source", source.url, "--stream", STREAM, "--group", GROUP,
              "--consumer", name, "--state", state, *LEARNER, "--batch-size",
              str(a.batch_size), "--claim-idle-ms", str(a.claim_idle_ms), "--dedupe-window",
              str(max(60.0, a.claim_idle_ms / 250)), "--block-ms", "200", "--quiet",
              "--sync-every-events", str(a.sync_every_events),
              "--exit-when-idle", "--metrics-json", str(tmp / f"{name}.json"))
    log = open(tmp / f"{name}.log", "wb")  # noqa: SIM115 - the child writes it until it ends
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", type=Path)
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--batch-size", type=int, default=1000)
    ap.add_argument("--kill-at", type=float, default=0.5,
                    help="SIGKILL consumer a once the group acknowledged this share of rows")
    ap.add_argument("--claim-idle-ms", type=int, default=2000)
    ap.add_argument("--state-shards", type=int, default=1)
    ap.add_argument("--sync-every-events", type=int, default=0,
                    help="consumers flush every N learned rows (default 0: every batch)")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp_:
        tmp = Path(tmp_)
        rows = min(a.rows, count_lines(a.data, a.rows))
        data = head(a.data, rows, tmp / "rows.tsv")
        servers = [start_redis(tmp / f"redis{i}") for i in range(1 + a.state_shards)]
        procs: list[subprocess.Popen[bytes]] = []
        try:
            source, shards = servers[0], servers[1:]
            state = ",".join(s.url for s in shards)
            xadd_s = xadd_rows(source, data, rows)
            print(f"XADDed {rows:,} events in {xadd_s:.2f} s ({rows / xadd_s:,.0f}/s); "
                  f"consumers a and b: batches of {a.batch_size}, flush every "
                  f"{a.sync_every_events or a.batch_size} rows, {a.state_shards} state "
                  "shard(s)")
            procs = [consumer(n, source, state, a, tmp) for n in ("a", "b")]
            killer, survivor = procs
            first = None
            killed_at = 0
            deadline = time.monotonic() + 600
            while survivor.poll() is None:
                learned = group_stats(source).get("learned", 0.0)
                if first is None and learned > 0:
                    first = time.perf_counter()
                # killed in the middle of a window: while it holds unacknowledged entries
                if killer.poll() is None and learned >= a.kill_at * rows \
                        and held_by(source, "a"):
                    killer.send_signal(signal.SIGKILL)
                    killer.wait()
                    killed_at = int(learned)
                    print(f"SIGKILL consumer a: the group had acknowledged {killed_at:,} "
                          f"events; a held {held_by(source, 'a'):,} pending entries")
                if time.monotonic() > deadline:
                    raise SystemExit("consumer b did not finish in 600 s")
                time.sleep(0.005)
            end = time.perf_counter()
            if survivor.returncode:
                raise SystemExit(f"consumer b failed:\n{(tmp / 'b.log').read_text()[-3000:]}")
            if not killed_at:
                raise SystemExit("consumer a was never killed (the stream ended first)")
            stats = group_stats(source)
            b = json.loads((tmp / "b.json").read_text())
            learned_t = model_rows(shards[0])
            pending = int(source.client().xpending(STREAM, GROUP)["pending"])
            dead = int(source.client().xlen(f"{STREAM}:dead"))
            acked = int(stats.get("learned", 0))
            ok = "yes" if learned_t == rows and pending == 0 else "NO"
            print(f"events learned (model step counter in Redis): {learned_t:,} of {rows:,} "
                  f"XADDed: exactly once: {ok}; pending left {pending}")
            print(f"group totals: learned and acknowledged {acked:,}, duplicates skipped "
                  f"{int(stats.get('duplicates', 0)):,}, dead letters "
                  f"{int(stats.get('dead_letters', 0)):,} (dead-letter stream: {dead})")
            print(f"consumer b: learned {b['learned']:,}, claimed {b['claimed']:,}, "
                  f"duplicates {b['duplicates']:,}, deferred {b['deferred']:,}, busy rate "
                  f"{b['events_per_second']:,.0f} events/s")
            assert first is not None
            print(f"events/s over the run (first acknowledged event to b's exit, "
                  f"{a.claim_idle_ms} ms claim timeout included): "
                  f"{rows / (end - first):,.0f} ({end - first:.2f} s)")
            logloss = stats["logloss_sum"] / acked
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
            for s in servers:
                s.stop()
        res = subprocess.run(ctr("train", str(data), *LEARNER, "--quiet", "--metrics-json",
                                 str(tmp / "train.json")), capture_output=True, text=True)
        if res.returncode:
            raise SystemExit(f"ctr train failed:\n{res.stderr}")
        local = json.loads((tmp / "train.json").read_text())
        print(f"final progressive logloss over the {acked:,} acknowledged events: "
              f"{logloss:.6f}; ctr train on the same rows: {local['logloss']:.6f} "
              f"(difference {logloss - local['logloss']:+.6f}; ctr train "
              f"{local['rows_per_second']:,.0f} rows/s)")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
