"""How long one eviction sweep call blocks a Redis shard, and what the ages cost.

    python bench/redis_sweep.py [--coordinates 1000000] [--per-bucket 100]
        [--budget 256] [--cap-to 0.5]

Starts a fresh `redis-server` (loopback, free port, no persistence), fills it with
`--coordinates` FTRL coordinates through the flush script of a worker with
`--evict-idle` (so each one has an age beside it), in buckets of about `--per-bucket`,
and reports Redis `used_memory` per coordinate. Then two sweeps, each to the end:

- `idle`: every coordinate idle (a sweep far in the future): the whole store is deleted in
  slices of `--budget` coordinates a call;
- `cap`: refilled, then `--max-coordinates` at `--cap-to` of the coordinates: each call
  samples 5 buckets and drops the oldest eighth of the pool.

For each: calls, total seconds, per-call round trip (median, p99, max) and the longest call
Redis itself timed (SLOWLOG, commands over 0.5 ms: a script's run time, without the network).
A script blocks the shard while it runs: those are the figures of how long other clients
may wait behind a sweep.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from redis_servers import RedisServer, start_redis

from ftrl_core.batch import Batch
from ftrl_core.bounded import make_bounds
from ftrl_core.fields import FieldRegistry
from ftrl_core.model import Model
from ftrl_core.optimizers import OPTIMIZERS
from ftrl_core.readers import FeatureOptions
from service.stores.redis import RedisState
from service.stores.redis.sweep import SharedSweep

ROW = 500  # features a row


def fill(server: RedisServer, n: int, buckets: int, idle: str, name: str) -> RedisState:
    opt = OPTIMIZERS["ftrl"](alpha=0.2)
    opt.set_bounds(make_bounds(None, idle, None))
    model = Model(opt, FieldRegistry(), FeatureOptions(), "criteo")
    state = RedisState(server.url, name, buckets=buckets)
    state.attach(model)
    rng = np.random.default_rng(1)
    keys = (np.uint64(2) << np.uint64(56)) + rng.choice(1 << 40, size=n, replace=False
                                                        ).astype(np.uint64) + np.uint64(1)
    for start in range(0, n, 200 * ROW):  # a flush every 200 rows
        part = keys[start:start + 200 * ROW]
        indptr = np.arange(0, part.size + 1, ROW)
        if indptr[-1] != part.size:
            indptr = np.append(indptr, part.size)
        batch = Batch.from_arrays(indptr, part, np.ones(part.size),
                                  labels=np.ones(indptr.size - 1))
        state.before_learn(model, batch)
        model.learn(batch)
        state.after_learn(model, batch)
        state.sync(model)
    return state


def sweep_all(state: RedisState, sweeper: SharedSweep, now: int, done: object) -> str:
    r = state.shards[0].client
    r.config_set("slowlog-log-slower-than", 500)
    r.config_set("slowlog-max-len", 100_000)
    r.slowlog_reset()
    times: list[float] = []
    t0 = time.perf_counter()
    while True:
        report = sweeper.run(now, start_pass=not times)
        times += report.times
        if done(report):  # type: ignore[operator]
            break
    seconds = time.perf_counter() - t0
    evals = [e["duration"] for e in r.slowlog_get(100_000)
             if e["command"][:4].lower() == b"eval"]
    ms = np.array(times) * 1e3
    return (f"{len(times):,} calls in {seconds:.2f} s; round trip per call median "
            f"{np.median(ms):.2f} ms, p99 {np.percentile(ms, 99):.2f} ms, max {ms.max():.2f} "
            f"ms; longest in Redis {max(evals, default=500) / 1e3:.2f} ms "
            f"({len(evals)} calls over 0.5 ms); live after {report.live:,}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--coordinates", type=int, default=1_000_000)
    ap.add_argument("--per-bucket", type=int, default=100)
    ap.add_argument("--budget", type=int, default=256)
    ap.add_argument("--cap-to", type=float, default=0.5)
    args = ap.parse_args()
    n = args.coordinates
    buckets = max(n // args.per_bucket, 1)
    with tempfile.TemporaryDirectory() as tmp:
        server = start_redis(Path(tmp))
        try:
            client = server.client()
            empty = int(client.info("memory")["used_memory"])
            t0 = time.perf_counter()
            state = fill(server, n, buckets, "1000", "idle")
            used = int(client.info("memory")["used_memory"]) - empty
            ages = sum(client.memory_usage(k) or 0
                       for k in client.scan_iter(match="ctr:idle:a:*", count=1000))
            print(f"{n:,} coordinates in {buckets:,} buckets filled in "
                  f"{time.perf_counter() - t0:.1f} s: {used / n:.1f} B/coordinate in Redis, "
                  f"of which ages {ages / n:.1f} B")
            assert state.model is not None and state.model.optimizer.eviction is not None
            spec = state.model.optimizer.eviction.spec
            idle = SharedSweep(state, spec, buckets, budget=args.budget)
            print("idle:", sweep_all(state, idle, 10**9, lambda r: r.passes > 0))
            state.close()
            client.flushall()
            state = fill(server, n, buckets, "1000000000", "cap")
            cap = int(n * args.cap_to)
            assert state.model is not None and state.model.optimizer.eviction is not None
            spec = make_bounds(None, None, cap).eviction.spec  # type: ignore[union-attr]
            capper = SharedSweep(state, spec, buckets, budget=args.budget)
            print(f"cap {cap:,}:", sweep_all(state, capper, state.sweep_now(),
                                            lambda r: r.live <= cap))
            state.close()
        finally:
            server.stop()


if __name__ == "__main__":
    main()
