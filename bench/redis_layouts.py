"""What a flush costs Redis, per layout: server microseconds per coordinate (the server's
CPU, ``INFO cpu``, over the flushes; for the delta log, its appends and the compaction that
folds them into the buckets, which is plain commands, not the script) and bytes of
used_memory per coordinate.

Starts its own redis-server on a free loopback port (``--save '' --appendonly no``), seeds
N coordinates of an FTRL model, then runs flushes of M distinct coordinates each through
``RedisState`` (the production path: compiled pre-pass, packed RESP, one script call).

  python bench/redis_layouts.py [--coordinates 500000] [--per-flush 20000] [--flushes 5]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from redis_servers import start_redis

from ftrl_core.batch import Batch
from ftrl_core.deltas import store_records
from ftrl_core.fields import FieldRegistry
from ftrl_core.hashing import HASHED_FIELD, VALUE_BITS
from ftrl_core.model import Model
from ftrl_core.optimizers import FTRLProximal
from ftrl_core.readers import FeatureOptions
from service.stores.redis import RedisState, seed


def model(hash_bits: int) -> Model:
    return Model(FTRLProximal(alpha=0.2), FieldRegistry(), FeatureOptions(hash_bits=hash_bits),
                 "criteo")


def server_usec(client) -> int:  # type: ignore[no-untyped-def]
    """The server's CPU so far (user and system), in microseconds."""
    cpu = client.info("cpu")
    return round(1e6 * (float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])))


def run(layout: str, n: int, per_flush: int, flushes: int, hash_bits: int, workdir: Path
        ) -> None:
    server = start_redis(workdir / layout)
    try:
        client = server.client()
        rng = np.random.default_rng(1)
        if layout != "chunks":
            keys = np.unique(rng.integers(1, 2**63, size=n, dtype=np.uint64))
        else:
            slots = rng.choice(1 << hash_bits, size=n, replace=False).astype(np.uint64)
            keys = (np.uint64(HASHED_FIELD + 1) << np.uint64(VALUE_BITS)) | slots
        src = model(hash_bits if layout == "chunks" else 0)
        recs = rng.random((keys.size, 2), dtype=np.float32) * np.float32(10)
        store_records(src.optimizer.table, keys, recs.view(np.uint64))
        client.info("memory")
        kind = None if layout == "chunks" else layout
        warm = RedisState(server.url, "warm", layout=kind)
        warm.attach(model(hash_bits if layout == "chunks" else 0))
        mem0 = int(client.info("memory")["used_memory"])
        buckets = max(keys.size // 100, 1)
        seed(RedisState(server.url, "bench", buckets=buckets, layout=kind), src)
        mem1 = int(client.info("memory")["used_memory"])
        worker = RedisState(server.url, "bench", layout=kind)
        m = worker.attach(model(hash_bits if layout == "chunks" else 0))
        usec = 0
        coords = 0
        wall = 0.0
        for _ in range(flushes):
            touched = rng.choice(keys, size=per_flush, replace=False)
            batch = Batch.from_arrays(np.array([0, touched.size]), touched,
                                      np.ones(touched.size))
            worker.before_learn(m, batch)  # fetches the keys this cache lacks
            cur = np.ascontiguousarray(m.optimizer.state_of(touched)["z"], dtype=np.float32)
            new = np.stack([cur + np.float32(0.5), cur], axis=1).astype(np.float32)
            store_records(m.optimizer.table, touched, new.view(np.uint64))
            worker.rows_pending = 1
            u0 = server_usec(client)
            t0 = time.perf_counter()
            worker.sync(m)
            wall += time.perf_counter() - t0
            u1 = server_usec(client)
            usec += u1 - u0
            coords += per_flush
        u0 = server_usec(client)
        t0 = time.perf_counter()
        worker.compact(force=True)  # the delta log's: folded into the buckets (else none)
        wall += time.perf_counter() - t0
        u1 = server_usec(client)
        usec += u1 - u0
        per = "chunk slot" if layout == "chunks" else "bucket"
        extra = (f"{keys.size / buckets:.0f} coordinates per {per}" if layout != "chunks"
                 else f"2^{hash_bits} slots, {(mem1 - mem0) / (1 << hash_bits):.1f} B per slot")
        print(f"{layout:8s} {keys.size:>9,} coordinates ({extra}): "
              f"server {usec / coords:.2f} us/coordinate, client+server wall "
              f"{1e6 * wall / coords:.2f} us/coordinate, used_memory "
              f"{(mem1 - mem0) / keys.size:.1f} B/coordinate")
    finally:
        server.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--coordinates", type=int, default=500_000)
    ap.add_argument("--per-flush", type=int, default=20_000)
    ap.add_argument("--flushes", type=int, default=5)
    ap.add_argument("--hash-bits", type=int, default=20)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/ctr-bench-redis"))
    args = ap.parse_args()
    for layout in ("log", "buckets", "chunks"):
        run(layout, args.coordinates, args.per_flush, args.flushes, args.hash_bits,
            args.workdir)


if __name__ == "__main__":
    main()
