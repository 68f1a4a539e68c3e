"""Training ingest with the model shared through Redis: `ctr replay` into
`ctr serve --workers 2 --state redis://A,redis://B` (two local shards), beside the memory
store with one worker, and how quality and Redis memory come out.

    python bench/redis_ingest.py /tmp/syn1m.tsv [--rows 1000000] [--batch-size 1000]
        [--concurrency 4] [--sync-ms default,0,250] [--hash-bits 24]
        [--runs memory,exact,hashed] [--no-data-dir]

Each run starts fresh `redis-server` processes (loopback, free ports, no persistence) and a
fresh server (each worker with its write-ahead log in a fresh data directory, as a durable
deployment runs; `--no-data-dir`: none, so answers wait for their flush), replays the rows,
stops the server (its workers flush what is left) and
prints events/s, the progressive logloss (each event predicted before it was learned, by
whichever worker took it) and its distance to `ctr train` on the same rows (one process,
file order; target: within 0.002), then Redis `used_memory` above an empty server per
stored coordinate (target: at most 40 B) and the most the shards held during the run (their
`used_memory_peak`: with the delta log, the entries not yet compacted too). Runs:

- `memory`: `--state memory://`, 1 worker (the reference the issue asks for beside it);
- `exact`: exact 64-bit keys (the default layout: the delta log beside bucketed small
  hashes), 2 workers;
- `hashed`: `--hash-bits B`: dense chunk strings, BITFIELD INCRBY of fixed-point integers;

the Redis runs once per `--sync-ms` value (`default`: no sync flag, the store's own policy:
adaptive with a data directory, immediate without; 0: a flush after every batch).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from _common import ctr, first_rows, replay_json
from _server import Server
from redis_servers import RedisServer, start_redis

LEARNER = ("--alpha", "0.2")


def used_memory(server: RedisServer, key: str = "used_memory") -> int:
    return int(server.client().info("memory")[key])


def stored_coordinates(state: str) -> int:
    """Live coordinates of the shared model (read back with `ctr load-state`)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "m.ctr"
        res = subprocess.run(ctr("load-state", "--snapshot-out", str(out), "--state", state),
                             capture_output=True, text=True)
        if res.returncode:
            raise SystemExit(f"ctr load-state failed:\n{res.stderr}")
        res = subprocess.run(ctr("inspect", str(out), "--json"), capture_output=True,
                             text=True)
        if res.returncode:
            raise SystemExit(f"ctr inspect failed:\n{res.stderr}")
        return int(json.loads(res.stdout)["memory"]["live_coordinates"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", type=Path)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--batch-size", type=int, default=1000)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--sync-ms", default="default,0,250",
                    help="--sync-every-ms values of the Redis runs (default: no flag, the "
                         "store's policy; 0: --sync-every-events 1, every batch)")
    ap.add_argument("--no-data-dir", action="store_true",
                    help="run the Redis workers without a data directory")
    ap.add_argument("--hash-bits", type=int, default=24)
    ap.add_argument("--runs", default="memory,exact,hashed")
    ap.add_argument("--buckets", type=int, default=0,
                    help="--buckets of the exact layout (0: the store's default)")
    a = ap.parse_args()
    runs = [r.strip() for r in a.runs.split(",") if r.strip()]
    with tempfile.TemporaryDirectory() as tmp_:
        tmp = Path(tmp_)
        limit, same_rows = first_rows(a.data, a.rows, tmp)
        size = ["--batch-size", str(a.batch_size), "--concurrency", str(a.concurrency)]
        reference: dict[str, float] = {}
        for hashed in (False, True):
            flags = [*LEARNER, *(["--hash-bits", str(a.hash_bits)] if hashed else [])]
            res = subprocess.run(ctr("train", str(same_rows), *flags, "--quiet",
                                     "--metrics-json", str(tmp / "train.json")),
                                 capture_output=True, text=True)
            if res.returncode:
                raise SystemExit(f"ctr train failed:\n{res.stderr}")
            reference["hashed" if hashed else "exact"] = \
                json.loads((tmp / "train.json").read_text())["logloss"]
        print(f"ctr train (one process, file order): logloss {reference['exact']:.6f} exact "
              f"keys, {reference['hashed']:.6f} with --hash-bits {a.hash_bits}")

        if "memory" in runs:
            with Server(*LEARNER) as server:
                m = replay_json(server.url, a.data, tmp / "m.json", *size, *limit)
            print(f"memory store, 1 worker: {m['events_per_second']:,.0f} events/s, logloss "
                  f"{m['logloss']:.6f} ({m['logloss'] - reference['exact']:+.6f} vs ctr train)")
        for layout in ("exact", "hashed"):
            if layout not in runs:
                continue
            extra = ["--hash-bits", str(a.hash_bits)] if layout == "hashed" else \
                (["--buckets", str(a.buckets)] if a.buckets else [])
            for ms_text in a.sync_ms.split(","):
                ms = -1.0 if ms_text == "default" else float(ms_text)
                shards = [start_redis(tmp / f"r{i}-{layout}-{ms_text}") for i in range(2)]
                empty = [used_memory(s) for s in shards]
                state = ",".join(s.url for s in shards)
                sync = (["--sync-every-ms", str(ms)] if ms > 0 else
                        ["--sync-every-events", "1"] if ms == 0 else [])
                durable = [] if a.no_data_dir else ["--data-dir",
                                                    str(tmp / f"d-{layout}-{ms_text}")]
                try:
                    with Server(*LEARNER, *extra, "--workers", str(a.workers), "--state",
                                state, *sync, *durable) as server:
                        m = replay_json(server.url, a.data, tmp / "m.json", *size, *limit)
                    used = sum(used_memory(s) - e for s, e in zip(shards, empty, strict=True))
                    # the most the shards held at once, the delta log's entries included
                    peak = sum(used_memory(s, "used_memory_peak") - e
                               for s, e in zip(shards, empty, strict=True))
                    coords = stored_coordinates(state)
                finally:
                    for s in shards:
                        s.stop()
                target = "ok" if m["events_per_second"] >= 100_000 else "MISS"
                gap = m["logloss"] - reference[layout]
                policy = ("the default policy" if ms < 0 else "every batch" if ms == 0
                          else f"sync {ms:g} ms")
                print(f"redis {layout} ({policy}{', no data dir' if a.no_data_dir else ''}), "
                      f"{a.workers} workers, 2 shards: {m['events_per_second']:,.0f} events/s "
                      f"(>= 100,000: {target}); logloss {m['logloss']:.6f} ({gap:+.6f} vs "
                      f"ctr train; |d| <= 0.002: {'ok' if abs(gap) <= 0.002 else 'MISS'}); "
                      f"{coords:,} coordinates, used_memory {used / 1e6:,.1f} MB = "
                      f"{used / max(coords, 1):.1f} B/coordinate (<= 40: "
                      f"{'ok' if used / max(coords, 1) <= 40 else 'MISS'}); peak during the "
                      f"run {peak / 1e6:,.1f} MB")
                sys.stdout.flush()


if __name__ == "__main__":
    main()
