"""Training ingest with the model shared through a local 3-master Redis Cluster: `ctr replay`
into `ctr serve --workers 2 --state redis+cluster://...`, beside the same replay into two
standalone shards (`redis://A,redis://B`) and `ctr train` on the same rows.

    python bench/cluster_ingest.py DATA.tsv [--rows 200000] [--batch-size 1000]
        [--concurrency 4] [--workers 2] [--sync-ms 0] [--no-standalone]

Each run starts fresh `redis-server` processes (loopback, free ports, no persistence; the
cluster's nodes joined with CLUSTER MEET and ADDSLOTSRANGE, as the tests do) and a fresh
server, replays the rows, stops the server (its workers flush what is left), reads the
shared model back (`ctr load-state --snapshot-out`) and prints events/s, the progressive
logloss (each event predicted before it was learned, by whichever worker took it) and its
distance to `ctr train` (one process, file order; target: within 0.002), the rows the
stored model counts, the CPU seconds the Redis servers used, and how the model's keys are
spread over the masters.
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
from _server import Server, cpu_seconds
from redis_servers import RedisServer, start_cluster, start_redis

from ftrl_core.model import Model

LEARNER = ("--alpha", "0.2")


def stored_model(state: str, tmp: Path) -> Model:
    out = tmp / "stored.ctr"
    res = subprocess.run(ctr("load-state", "--snapshot-out", str(out), "--state", state),
                         capture_output=True, text=True)
    if res.returncode:
        raise SystemExit(f"ctr load-state failed:\n{res.stderr}")
    return Model.load(out)


def run(name: str, state: str, servers: list[RedisServer], a: argparse.Namespace,
        reference: float, tmp: Path, limit: list[str]) -> None:
    flags = ["--batch-size", str(a.batch_size), "--concurrency", str(a.concurrency)]
    sync = ["--sync-every-ms", str(a.sync_ms)] if a.sync_ms > 0 else []
    cpu0 = sum(cpu_seconds(s.proc.pid) for s in servers)
    with Server(*LEARNER, "--workers", str(a.workers), "--state", state, *sync) as server:
        m = replay_json(server.url, a.data, tmp / "m.json", *flags, *limit)
    redis_cpu = sum(cpu_seconds(s.proc.pid) for s in servers) - cpu0
    stored = stored_model(state, tmp)
    keys = [int(s.client().dbsize()) for s in servers]
    gap = m["logloss"] - reference
    print(f"{name}: {m['rows']:,} rows, {a.workers} workers, "
          f"{'every batch' if a.sync_ms <= 0 else f'sync {a.sync_ms:g} ms'}: "
          f"{m['events_per_second']:,.0f} events/s; logloss {m['logloss']:.6f} ({gap:+.6f} vs "
          f"ctr train; |d| <= 0.002: {'ok' if abs(gap) <= 0.002 else 'MISS'}), auc "
          f"{m['auc']:.5f}")
    print(f"  stored model: {stored.rows:,} rows "
          f"({'ok' if stored.rows == m['rows'] else 'MISS'}: = rows replayed), "
          f"{stored.optimizer.table.size:,} coordinates; redis cpu {redis_cpu:.2f} s; keys "
          f"per server {keys}")
    sys.stdout.flush()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", type=Path)
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--batch-size", type=int, default=1000)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--sync-ms", type=float, default=0.0,
                    help="--sync-every-ms of the servers (0: a flush after every batch)")
    ap.add_argument("--no-standalone", action="store_true",
                    help="skip the peer run on two standalone shards")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp_:
        tmp = Path(tmp_)
        limit, same_rows = first_rows(a.data, a.rows, tmp)
        res = subprocess.run(ctr("train", str(same_rows), *LEARNER, "--quiet",
                                 "--metrics-json", str(tmp / "train.json")),
                             capture_output=True, text=True)
        if res.returncode:
            raise SystemExit(f"ctr train failed:\n{res.stderr}")
        reference = float(json.loads((tmp / "train.json").read_text())["logloss"])
        print(f"ctr train (one process, file order): logloss {reference:.6f}")

        cluster = start_cluster(tmp / "cluster")
        try:
            run("redis+cluster, 3 masters", cluster.url, cluster.nodes, a, reference, tmp,
                limit)
        finally:
            cluster.stop()
        if not a.no_standalone:
            shards = [start_redis(tmp / f"shard{i}") for i in range(2)]
            try:
                run("redis://, 2 standalone shards", ",".join(s.url for s in shards), shards,
                    a, reference, tmp, limit)
            finally:
                for s in shards:
                    s.stop()


if __name__ == "__main__":
    main()
