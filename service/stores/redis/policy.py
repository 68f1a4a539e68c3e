"""When a worker pushes its pending deltas to the shards: the one flush policy.

A flush carries each *distinct* coordinate touched since the last one, and the distinct
coordinates per event fall as the window grows (syn1m: 9.8 per event at 1,000 events, 4.7 at
10,000, 2.2 at 100,000), so longer windows are cheaper per event: with the bucketed flush
each costs Redis 3-5 us of server time (``bench/redis_layouts.py``); with the delta log
(``deltalog``, exact keys' default) a flush is one append per shard, and what the window
saves is rows for the workers to merge. The price is staleness: a worker learns on its own
updates only until the next flush brings the others'. The modes:

- ``--sync-every-events N`` / ``--sync-every-ms MS`` (either or both): flush once that many
  rows are pending, or the oldest pending delta is that old;
- neither, with a data directory (the default of a durable service): **adaptive**: flush
  once the oldest pending delta is ``ADAPTIVE_MS`` old, or sooner once ``ADAPTIVE_ROWS``
  rows are pending (what a worker learns without the others' updates is bounded in rows
  too, so a faster service is not a staler one) or the pending deltas hold
  ``MAX_COORDINATES`` coordinates (which bounds how long one flush script holds a shard).
  The answers do not wait for flushes (the worker's own log makes a batch durable), so a
  window of this length costs no latency; the staleness it implies is at most
  ``ADAPTIVE_MS`` (and ``ADAPTIVE_ROWS`` rows) plus one flush's round trip;
- neither, without a data directory: **immediate**: a batch is durable only once its
  flush is applied, so its answer waits for it, and a flush leaves as soon as the previous
  one is back (batches learned meanwhile ride together in the next, like a group commit).

The stream consumer decides when to flush its window with the same class (it acknowledges
entries once their flush landed), capped at half its claim timeout.
"""

from __future__ import annotations

from dataclasses import dataclass

#: the adaptive window (ms): measured with bench/redis_ingest.py, the point where two
#: workers' throughput is past 100k events/s here while the progressive logloss stays
#: within 0.002 of one process
ADAPTIVE_MS = 250.0
#: pending rows that make a flush due at once: the progressive logloss of two workers
#: against one process grows with the rows each learns between two flushes, and faster on
#: data whose vocabulary drifts (new keys, learned by one worker and unseen by the other
#: until the next flush), while smaller windows carry more rows in all (a key repeated
#: within a window is sent once). bench/redis_ingest.py, 2 workers, 2026-12-03, an Intel
#: Xeon with AMX, in turn with the code before (8,000 rows, and compactions that
#: held flushes back: ``RedisStore._compactor``): on syn1m +0.0005 at 2,000 rows,
#: +0.0007 at 4,000, +0.0011-0.0013 at 8,000; with 30% of the vocabulary replaced every
#: 100k rows +0.0012, +0.0015, +0.0024-0.0026; throughput 15-21% lower at 2,000 rows,
#: 6-10% at 4,000 (133-155k events/s)
ADAPTIVE_ROWS = 4000
#: pending coordinates that make a flush due at once: far above what a 250 ms window holds
#: at 100k events/s (about 56k per worker on syn1m), a bound on one flush script's time on
#: each shard (3-5 us a coordinate, split over the shards) when a burst comes
MAX_COORDINATES = 200_000


@dataclass(frozen=True)
class FlushPolicy:
    every_events: int = 0
    every_ms: float = 0.0
    #: no explicit bound: with a log, the adaptive window; without, immediate
    durable_locally: bool = True
    #: an upper bound on the window's age whatever the settings (the consumer's)
    cap_ms: float = 0.0

    @property
    def immediate(self) -> bool:
        return not (self.every_events or self.every_ms or self.durable_locally)

    @property
    def adaptive(self) -> bool:
        return not (self.every_events or self.every_ms) and self.durable_locally

    @property
    def age_bound_ms(self) -> float:
        """The age at which pending deltas are flushed (0: no age bound)."""
        bounds = [b for b in (self.every_ms, self.cap_ms) if b > 0]
        if self.adaptive:
            bounds.append(ADAPTIVE_MS)
        return min(bounds) if bounds else 0.0

    def due(self, rows: int, coordinates: int, age_ms: float) -> bool:
        """Whether ``rows`` learned rows, touching ``coordinates`` distinct coordinates, the
        oldest learned ``age_ms`` ago, are to be flushed now."""
        if rows <= 0 and coordinates <= 0:
            return False
        if self.immediate or coordinates >= MAX_COORDINATES:
            return True
        if self.every_events and rows >= self.every_events:
            return True
        if self.adaptive and rows >= ADAPTIVE_ROWS:
            return True
        bound = self.age_bound_ms
        return bool(bound) and age_ms >= bound

    def describe(self) -> str:
        if self.immediate:
            return "immediate"
        parts = []
        if self.every_events:
            parts.append(f"every {self.every_events} rows")
        if self.every_ms:
            parts.append(f"every {self.every_ms:g} ms")
        if not parts:
            parts.append(f"adaptive ({ADAPTIVE_MS:g} ms, {ADAPTIVE_ROWS} rows or "
                         f"{MAX_COORDINATES} coordinates)")
        return ", ".join(parts)
