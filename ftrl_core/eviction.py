"""Eviction: dropping coordinates so the table stops growing with a vocabulary that drifts.

- ``--evict-idle N`` (events) or ``N`` with a suffix ``s``/``h``/``d`` (seconds of wall
  clock): a coordinate untouched for more than N is dropped. A table that evicts records
  when each coordinate was last touched (``StateTable.ages``: a learned row's stream
  position, or its wall-clock second). The rule is exact: a learned row that touches an
  idle coordinate deletes it first (``admission.gate``), so the row sees a key never seen;
  predictions and weight reads see idle records as absent (``hide_idle``); a periodic sweep
  (``sweep_idle``) frees the idle coordinates no row touches, so their memory comes back.
- ``--max-coordinates N``: every ``CHECK_EVERY`` learned rows, while more than N
  coordinates live, drop an approximately least-recently-used one: the oldest of
  ``SAMPLES`` live records picked at random, as Redis's ``allkeys-lru`` does (no LRU list to
  keep per record). Between two checks the table may exceed N by the new keys of those rows.

The checks (the cap, and the sweep when it is due) run at fixed stream positions, not at
batch ends: the sample picks slots, the table's layout depends on every deletion, and a run
must not depend on how its input was cut into batches (a resumed run then equals one run;
the model file keeps the layout, the ages and the sampler's state).

A deleted record leaves no tombstone (``table.delete_slot``): its slot is reused.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from ._jit import kernel
from .fieldcounts import EVICTED, FieldCounts
from .hashing import key_field
from .table import StateTable, delete_slot, find_slot

#: records sampled per approximate-LRU eviction (Redis's maxmemory-samples default)
SAMPLES = 5
#: learned rows between two checks of the cap (and of whether a sweep is due)
CHECK_EVERY = 1024
_UNITS = {"s": 1, "h": 3600, "d": 86400}


@kernel
def touch(words: np.ndarray, stride: int, capacity: int, ages: np.ndarray, keys: np.ndarray,
          positions: np.ndarray, rows: np.ndarray, now0: int, per_row: int) -> None:
    """Stamp the keys at ``positions`` (in row order) with the time of their row
    (``now0 + per_row * rows[i]``): the keys learning has just inserted."""
    for i in range(positions.size):
        s = find_slot(words, stride, capacity, keys[positions[i]])
        if s >= 0:
            ages[s] = now0 + per_row * rows[i]


@kernel
def hide_idle(words: np.ndarray, stride: int, capacity: int, ages: np.ndarray,
              keys: np.ndarray, now: int, idle: int, out: np.ndarray) -> int:
    """``keys`` into ``out`` with each key whose record is idle for more than ``idle`` at
    ``now`` replaced by 0; the number replaced. Key 0 is never stored and finds an empty
    slot, whose words are all zero: the zero state, which every learner reads as a key
    never seen (weight 0, n = 0), so a prediction does not see a record that the next
    learned row (or sweep) would delete."""
    n = 0
    for j in range(keys.size):
        key = keys[j]
        s = find_slot(words, stride, capacity, key)
        if s >= 0 and now - ages[s] > idle:
            out[j] = np.uint64(0)
            n += 1
        else:
            out[j] = key
    return n


@kernel
def drop_keys(words: np.ndarray, stride: int, capacity: int, ages: np.ndarray,
              meta: np.ndarray, keys: np.ndarray) -> int:
    """Delete the records of ``keys`` (absent ones are skipped); how many were deleted. A
    shared store's worker drops its cached copies of coordinates the store evicted, or
    that it trims from its cache, with it."""
    n = 0
    for j in range(keys.size):
        s = find_slot(words, stride, capacity, keys[j])
        if s >= 0:
            delete_slot(words, stride, capacity, s, ages, meta)
            n += 1
    return n


@kernel
def sweep_idle(words: np.ndarray, stride: int, capacity: int, ages: np.ndarray,
               meta: np.ndarray, now: int, idle: int, per_field: np.ndarray) -> int:
    """Delete every record idle for more than ``idle`` at ``now``; their count (and, by the
    field of each key, in ``per_field[EVICTED]``).

    A backward shift may move a later record into the slot just freed: the slot is looked
    at again. Records moved to slots already passed were already kept (``now`` is fixed)."""
    n = 0
    s = 0
    while s < capacity:
        if words[s * stride] != np.uint64(0) and now - ages[s] > idle:
            per_field[EVICTED, key_field(words[s * stride])] += 1
            delete_slot(words, stride, capacity, s, ages, meta)
            n += 1
            continue
        s += 1
    return n


@kernel
def evict_sampled(words: np.ndarray, stride: int, capacity: int, ages: np.ndarray,
                  meta: np.ndarray, target: int, samples: int, rng: np.ndarray,
                  out: np.ndarray, per_field: np.ndarray) -> int:
    """Delete approximately least-recently-used records until at most ``target`` live: each
    time the oldest of ``samples`` random live records. ``rng[0]`` is a xorshift64 state
    (saved with the model, so a resumed run evicts as one run would). The deleted keys go
    to ``out``; their count (and, by field, in ``per_field[EVICTED]``)."""
    n = 0
    while meta[0] > target and meta[0] > 0:
        best = np.int64(-1)
        for _ in range(samples):
            x = np.uint64(rng[0])
            x ^= x << np.uint64(13)
            x ^= x >> np.uint64(7)
            x ^= x << np.uint64(17)
            rng[0] = np.int64(x)
            # np.int64: Numba keeps int() of a uint64 unsigned (see table.home_slot)
            s = np.int64(x % np.uint64(capacity))
            while words[s * stride] == np.uint64(0):  # the next live record
                s += 1
                if s == capacity:
                    s = np.int64(0)
            if best < 0 or ages[s] < ages[best]:
                best = s
        if n < out.size:
            out[n] = words[best * stride]
        per_field[EVICTED, key_field(words[best * stride])] += 1
        delete_slot(words, stride, capacity, int(best), ages, meta)
        n += 1
    return n


@dataclass(frozen=True)
class EvictSpec:
    """``--evict-idle`` and ``--max-coordinates``, parsed (0: off)."""

    idle: int = 0
    idle_seconds: bool = False
    max_coordinates: int = 0
    check_every: int = CHECK_EVERY

    @classmethod
    def parse(cls, idle: str | None, max_coordinates: int | str | None) -> EvictSpec | None:
        n_idle, seconds = 0, False
        if idle is not None:
            text = str(idle).strip().lower()
            scale = _UNITS.get(text[-1:], 0)
            seconds = scale > 0
            try:
                n_idle = int(text[:-1] if seconds else text) * max(scale, 1)
            except ValueError:
                raise ValueError(f"--evict-idle {idle!r}: expected N (events) or N with "
                                 "s, h or d (seconds, hours, days)") from None
            if n_idle < 1:
                raise ValueError(f"--evict-idle {idle!r}: must be at least 1")
        cap = 0
        if max_coordinates is not None:
            try:
                cap = int(max_coordinates)
            except ValueError:
                raise ValueError(f"--max-coordinates {max_coordinates!r}: not an integer"
                                 ) from None
            if cap < 1:
                raise ValueError(f"--max-coordinates {max_coordinates!r}: must be >= 1")
        if not n_idle and not cap:
            return None
        return cls(n_idle, seconds, cap)

    def idle_text(self) -> str | None:
        if not self.idle:
            return None
        return f"{self.idle}s" if self.idle_seconds else str(self.idle)


class Eviction:
    """The eviction policy of a learner, its counters and its random state."""

    def __init__(self, spec: EvictSpec, clock: object = time.time) -> None:
        self.spec = spec
        self.clock = clock
        #: [evicted (all causes), time of the last sweep, xorshift state]
        self.state = np.array([0, 0, 0x9E3779B97F4A7C1], dtype=np.int64)
        #: when not None, (step, keys) of each cap enforcement (tests read it)
        self.log: list[tuple[int, np.ndarray]] | None = None

    @property
    def evicted(self) -> int:
        return int(self.state[0])

    def now(self, steps: int) -> tuple[int, int]:
        """(the time of the next learned row, the time one row adds)."""
        if self.spec.idle_seconds:
            return int(self.clock()), 0  # type: ignore[operator]
        return steps, 1

    def rows_until_check(self, steps: int) -> int:
        return self.spec.check_every - steps % self.spec.check_every

    def check(self, table: StateTable, now: int, steps: int, fields: FieldCounts) -> None:
        """At a check point: the sweep, if half an idle window has passed since the last
        one, then the coordinate cap. ``now``: the time of the next row. ``fields`` covers
        the field of every stored key (``MemoryBounds`` grows it as keys come in)."""
        spec = self.spec
        if spec.idle and now - self.state[1] >= max(spec.idle // 2, 1):
            self.state[0] += sweep_idle(table.words, table.stride, table.capacity, table.ages,
                                        table.meta, now, spec.idle, fields.counts)
            self.state[1] = now
        if spec.max_coordinates and table.size > spec.max_coordinates:
            out = np.empty(table.size - spec.max_coordinates, dtype=np.uint64)
            rng = self.state[2:3]
            n = evict_sampled(table.words, table.stride, table.capacity, table.ages,
                              table.meta, spec.max_coordinates, SAMPLES, rng, out,
                              fields.counts)
            self.state[2] = rng[0]
            self.state[0] += n
            if self.log is not None:
                self.log.append((steps, out[:n].copy()))

    def to_state(self) -> dict[str, np.ndarray]:
        return {"eviction_state": self.state.copy()}

    def load_state(self, arrays: dict[str, np.ndarray]) -> None:
        state = np.asarray(arrays["eviction_state"], dtype=np.int64)
        if state.shape != self.state.shape:
            raise ValueError(f"eviction state of shape {state.shape}")
        self.state = state.copy()
