"""Bounded memory in the Redis state store: the sweep that evicts shared coordinates, and
the trimming of a worker's cache.

Where each part of ``--admit``, ``--evict-idle`` and ``--max-coordinates`` lives with Redis:

- admission is decided per worker, by its own filter (``admission.gate``), before a row
  is learned. A coordinate admitted by any worker exists in the shared state, and a key the
  shared state holds counts as admitted for every worker: with bounds the worker reads the
  keys its cache lacks before each batch (``RedisState.fetch_missing``), so the gate finds
  them. A key no worker has admitted yet is counted by each worker's filter separately:
  ``bloom:N`` admits at the N-th occurrence *one worker* saw (up to N x workers occurrences
  overall); ``poisson:P`` trials are a hash of the key and the row's stream position, the
  same on every worker for the same position.
- ages: the flush script stamps each coordinate it writes with the flush's time in a hash
  beside its bucket (``a:<bucket>``, the key -> the time; Monolith's per-slot expire time),
  and counts the coordinates it creates per shard (``n``). Ages are as fresh as the last
  flush: a coordinate in use on a worker whose flushes lag by F looks F older in Redis.
- eviction: a worker's timer (``SWEEP_EVERY``) runs ``sweep.lua`` in slices: one call
  visits about ``BUDGET`` coordinates (whole buckets, from a cursor kept on the shard, so
  several workers share one pass) and drops those idle past ``--evict-idle``; over the cap,
  a call samples ``CAP_SAMPLES`` buckets (a pool of a few hundred coordinates) and drops the
  oldest eighth of the pool (Redis's approximate LRU: sample, evict the oldest; no LRU list).
  A script blocks its shard while it runs, so the work of one call is bounded, not the
  work of a pass: other clients are served between two calls (``tests/test_redis_bounded``
  reports the longest call). An idle pass starts once half an idle window has passed since
  the last one began (as the memory store's sweep), and goes on tick by tick, at most
  ``MAX_CALLS`` calls per shard a tick.
- a Redis Cluster (``redis+cluster://``): the shards are the model's slot groups
  (``cluster``), and everything above is per group under its hash tag: the ages
  (``ctr:{<name>:<g>}:a:<bucket>``), the live count and the cursor live beside the group's
  buckets, so the flush's stamps and every sweep call touch one slot. A call goes to the
  master serving its group's slot and follows MOVED and ASK as the flush does; it declares
  the group's ``n`` and ``pause`` keys, so a group being migrated answers TRYAGAIN and is
  swept once the migration ends. A snapshot's ``pause`` stops the sweep on its group too.
  A sweep makes at least one call per group (16 by default) each tick.
- a worker's cache: the keys a sweep dropped leave the cache of the worker that ran it at
  once; every worker also trims its cache by its own ages (a record it has not touched for
  an idle window, or the oldest ones over the cap), so its memory is bounded as well. A
  record trimmed while still shared is read again when a row meets it; a record evicted
  in Redis but cached elsewhere is stale there until that worker trims it, at most an idle
  window (plus the flush lag) later: a prediction there may still use it meanwhile.
- a worker holding unflushed deltas for a coordinate evicted meanwhile: the flush script
  finds the coordinate gone while the delta's base is not zero (it was read before the
  eviction) and drops the delta instead of recreating the coordinate from a fragment; the
  reply is the zero record and the worker drops its copy: the next occurrence meets a key
  never seen (admission decides again). Learning between the flush's preparation and its
  reply on such a key is kept (it becomes the new coordinate's first delta).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from importlib import resources
from typing import TYPE_CHECKING

import numpy as np

from ftrl_core.eviction import EvictSpec

if TYPE_CHECKING:
    from .state import RedisState

#: coordinates one call's idle pass visits (whole buckets: it stops at a bucket's end)
BUDGET = 256
#: buckets sampled by one call over the cap (about 100 coordinates each at the advised
#: buckets = coordinates / 100)
CAP_SAMPLES = 5
#: calls per shard per sweep at most (the rest of a pass waits for the next tick)
MAX_CALLS = 64
#: seconds between two sweeps of a worker
SWEEP_EVERY = 1.0

SCRIPT = resources.files(__package__).joinpath("lua", "sweep.lua").read_text()


@dataclass
class SweepReport:
    """What one sweep did, over every shard."""

    evicted: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.uint64))
    calls: int = 0
    #: the longest call's round trip in seconds (an upper bound on how long it blocked
    #: its shard: the script's own run time plus the network)
    longest: float = 0.0
    #: every call's round trip in seconds, in order
    times: list[float] = field(default_factory=list)
    #: every call's dropped coordinates, in order
    sizes: list[int] = field(default_factory=list)
    #: live coordinates over every shard after the sweep
    live: int = 0
    #: idle passes that ended in this sweep (one per shard)
    passes: int = 0
    #: shards (slot groups) skipped because a snapshot paused them
    paused: int = 0


class SharedSweep:
    """A worker's part in evicting the shared state: when to sweep, one sweep's calls."""

    def __init__(self, state: RedisState, spec: EvictSpec, buckets: int,
                 budget: int = BUDGET, max_calls: int = MAX_CALLS,
                 seed: int | None = None) -> None:
        self.state = state
        self.spec = spec
        self.buckets = buckets
        self.budget = budget
        self.max_calls = max_calls
        self.rng = np.random.default_rng(seed)
        self.pass_started: int | None = None
        #: shards whose idle pass has not ended yet
        self.passing: set[int] = set()

    def _owned(self, shard: int) -> int:
        """How many buckets ``shard`` holds (bucket b lives on shard b % shards)."""
        shards = len(self.state.shards)
        return (self.buckets - 1 - shard) // shards + 1

    def run(self, now: int, start_pass: bool = False) -> SweepReport:
        """One sweep at time ``now`` (in the unit of ``--evict-idle``): the idle pass when
        one is due (or ``start_pass``) or under way, the cap on every shard. Sockets only
        (no cache access): a worker thread may run it while the cache learns."""
        spec = self.spec
        shards = len(self.state.shards)
        due = self.pass_started is None or now - self.pass_started >= max(spec.idle // 2, 1)
        if spec.idle and not self.passing and (due or start_pass):
            self.passing = set(range(shards))
            self.pass_started = now
        share = -(-spec.max_coordinates // shards) if spec.max_coordinates else 0
        report = SweepReport()
        dropped: list[bytes] = []
        for shard in self.state.shards:
            i = shard.index
            live = 0
            for _ in range(self.max_calls):
                idle = spec.idle if i in self.passing else 0
                samples = b""
                if share:
                    picks = i + shards * self.rng.integers(self._owned(i), size=CAP_SAMPLES)
                    samples = picks.astype("<u4").tobytes()
                t0 = time.perf_counter()
                cursor, live, keys = self.state.call(
                    i, "eval", SCRIPT, 2, shard.prefix + "n", shard.prefix + "pause",
                    shard.prefix, now, idle, self.buckets, shards, i, self.budget, share,
                    samples)
                report.times.append(time.perf_counter() - t0)
                report.longest = max(report.longest, report.times[-1])
                report.calls += 1
                dropped.append(bytes(keys))
                report.sizes.append(len(keys) // 8)
                if int(cursor) < 0:  # paused by a snapshot: tried again at the next tick
                    report.paused += 1
                    break
                if idle and int(cursor) == 0:
                    self.passing.discard(i)
                    report.passes += 1
                if i not in self.passing and not (share and int(live) > share):
                    break
            report.live += int(live)
        blob = b"".join(dropped)
        report.evicted = np.frombuffer(blob, dtype="<u8").astype(np.uint64)
        return report


def trim_cache(keys: np.ndarray, ages: np.ndarray, pending: np.ndarray, now: int,
               spec: EvictSpec) -> np.ndarray:
    """The cached keys a worker drops (``keys``/``ages``: its live records; ``pending``: a
    mask of those with unflushed deltas, kept: their flush decides): those idle past
    ``--evict-idle`` by the worker's own ages, then, over ``--max-coordinates``, the oldest."""
    drop = np.zeros(keys.size, dtype=np.bool_)
    if spec.idle:
        drop = (now - ages > spec.idle) & ~pending
    if spec.max_coordinates:
        over = int(keys.size - drop.sum()) - spec.max_coordinates
        candidates = np.flatnonzero(~drop & ~pending)
        if over > 0 and candidates.size:
            over = min(over, candidates.size)
            oldest = np.argpartition(ages[candidates], over - 1)[:over]
            drop[candidates[oldest]] = True
    return keys[drop]
