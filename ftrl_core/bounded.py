"""Bounded memory: the admission gate and eviction around a learner's kernels.

The learn kernels are unchanged: before a run of labelled rows reaches them, ``gate`` drops
the occurrences of features not admitted yet, deletes the records idle past the limit where
a row meets them and stamps the others with their row's time; after it, ``touch`` stamps the
keys learning inserted; every ``eviction.CHECK_EVERY`` learned rows the idle records no row
met are swept (when a sweep is due) and the coordinate cap is enforced.
A dropped record is gone from the table, so to every learner it is a key never seen: its
state starts from zero if it comes back.
"""

from __future__ import annotations

import numpy as np

from .admission import NONE, Admission, AdmitSpec, gate
from .batch import Batch
from .eviction import (
    SAMPLES,
    Eviction,
    EvictSpec,
    drop_keys,
    evict_sampled,
    hide_idle,
    sweep_idle,
    touch,
)
from .fieldcounts import FieldCounts
from .table import StateTable

_NO_FILTER = np.zeros((2, 1), dtype=np.uint8)


class MemoryBounds:
    """A learner's admission policy and eviction policy (either may be None)."""

    def __init__(self, admit: AdmitSpec | None, evict: EvictSpec | None) -> None:
        self.admission = None if admit is None else Admission(admit)
        self.eviction = None if evict is None else Eviction(evict)
        #: admitted / refused / evicted by field (the dashboard's per-field table)
        self.fields = FieldCounts()
        #: set by a shared state store (Redis): the shared state evicts (the store's sweep,
        #: ``service.stores.redis.sweep``) and this table is a worker's cache of it, so the
        #: gate deletes nothing, no local check point runs and predictions hide nothing; the
        #: gate still stamps the cache's ages, which the store trims the cache by
        self.shared = False
        #: the shared store's live coordinates, when it counts them (None: this table's)
        self.shared_live: int | None = None
        self._no_state = np.zeros(5, dtype=np.int64)
        self._no_evicted = np.zeros(1, dtype=np.int64)
        # the gate's map of keys admitted in a call, reused across calls (``_gen`` tells
        # this call's entries apart)
        self._admitted = np.zeros(0, dtype=np.uint64)
        self._gen = 0
        # the positions the last gate left for ``touch`` to stamp, and the keys they index
        self._late = np.zeros(0, dtype=np.int64)
        self._late_row = np.zeros(0, dtype=np.int64)
        self._part_keys = np.zeros(0, dtype=np.uint64)

    def visible_keys(self, table: StateTable, keys: np.ndarray, steps: int) -> np.ndarray:
        """``keys`` as a prediction at stream position ``steps`` must see them: a record
        idle past ``--evict-idle`` (not swept yet) reads as a key never seen. The same array
        when nothing is hidden."""
        ev = self.eviction
        if ev is None or self.shared or not ev.spec.idle or not table.ages.size:
            return keys
        now, _ = ev.now(steps)
        out = np.empty(keys.size, dtype=np.uint64)
        hidden = hide_idle(table.words, table.stride, table.capacity, table.ages,
                           np.ascontiguousarray(keys, dtype=np.uint64), now, ev.spec.idle, out)
        return out if hidden else keys

    def warm_up(self, stride: int) -> None:
        """Compile the check-point kernels (the sweep and the sampled eviction) on a table
        of its own, so the first check point in a service does not pay for them."""
        # a shared store's worker drops cached keys with it (flush replies, the sweep)
        empty = StateTable(stride)
        drop_keys(empty.words, empty.stride, empty.capacity, empty.ages, empty.meta,
                  np.ones(1, dtype=np.uint64))
        if self.eviction is None:
            return
        table = StateTable(stride)
        table.track_ages()
        key = np.uint64((1 << 54) | 1)  # a key of field 0 (its tag, field + 1, is 1)
        counts = FieldCounts(1).counts  # not this learner's: the warm-up counts nothing
        table.words[0] = key  # one record, idle (its slot does not matter here)
        table.meta[0] = 1
        sweep_idle(table.words, table.stride, table.capacity, table.ages, table.meta, 2, 1,
                   counts)
        table.words[0] = key
        table.meta[0] = 1
        evict_sampled(table.words, table.stride, table.capacity, table.ages, table.meta, 0,
                      SAMPLES, np.array([1], dtype=np.int64), np.empty(1, dtype=np.uint64),
                      counts)
        self.visible_keys(table, np.ones(1, dtype=np.uint64), 0)

    def fresh(self) -> MemoryBounds:
        """The same policies with empty state (a filter that has seen nothing)."""
        return MemoryBounds(None if self.admission is None else self.admission.spec,
                            None if self.eviction is None else self.eviction.spec)

    @property
    def evicts(self) -> bool:
        return self.eviction is not None

    def prepare(self, table: StateTable) -> None:
        if self.eviction is not None:
            table.track_ages()

    def _map_size(self, occurrences: int) -> int:
        """The gate's map for ``occurrences``: a power of 2 >= twice as many slots (the
        buffer grows and is reused; a call uses its first slots only)."""
        size = 16
        while size < 2 * occurrences + 2:
            size *= 2
        if self._admitted.size < 2 * size:
            self._admitted = np.zeros(2 * size, dtype=np.uint64)
        return size

    def gate(self, table: StateTable, part: Batch, steps: int
             ) -> tuple[Batch, np.ndarray, int]:
        """(the rows of ``part`` with only their admitted features; the positions kept, in
        ``part``; the time of the first row). Deletes the idle records the rows meet and
        stamps the ages of the stored keys kept; ``touch`` stamps the others once the rows
        are learned. ``part`` has at most ``rows_until_check`` rows."""
        self.prepare(table)
        adm, ev = self.admission, self.eviction
        now0, per_row = ev.now(steps) if ev is not None else (0, 1)
        idle = ev.spec.idle if ev is not None and not self.shared else 0
        n = part.keys.size
        self.fields.cover(part.fields, part.keys)
        keep = np.zeros(n, dtype=np.bool_)
        map_size = self._map_size(n if adm is not None else 0)
        self._gen += 1
        late = np.empty(n if ev is not None else 0, dtype=np.int64)
        late_row = np.empty(n if ev is not None else 0, dtype=np.int64)
        n_late = gate(table.words, table.stride, table.capacity, table.meta, part.indptr,
                      part.keys, part.fields, steps,
                      adm.mode if adm is not None else NONE,
                      adm.spec.count if adm is not None else 1,
                      adm.threshold if adm is not None else np.uint64(0),
                      adm.counts if adm is not None else _NO_FILTER,
                      adm.state if adm is not None else self._no_state,
                      table.ages, now0, per_row, idle,
                      ev.state[0:1] if ev is not None else self._no_evicted,
                      self._admitted, map_size, np.uint64(self._gen), keep, late, late_row,
                      self.fields.counts)
        self._late, self._late_row = late[:n_late], late_row[:n_late]
        self._part_keys = part.keys
        kept = np.flatnonzero(keep)
        cum = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(keep, out=cum[1:])
        gated = Batch(indptr=cum[part.indptr], keys=part.keys[kept], fields=part.fields[kept],
                      values=part.values[kept], labels=part.labels, weights=part.weights,
                      base=part.base)
        return gated, kept, now0

    def touch(self, table: StateTable, gated: Batch, now0: int) -> int:
        """After the rows of the last ``gate`` were learned: stamp the keys they inserted
        (the others were stamped by the gate); the time of the next row."""
        ev = self.eviction
        if ev is None:
            return now0
        per_row = 0 if ev.spec.idle_seconds else 1
        touch(table.words, table.stride, table.capacity, table.ages, self._part_keys,
              self._late, self._late_row, now0, per_row)
        return now0 + per_row * gated.rows

    def rows_until_check(self, steps: int) -> int:
        """The most rows one ``gate`` may take: up to the next eviction check
        (``eviction.CHECK_EVERY``), and no more than ``--evict-idle`` events, so that no
        record touched in a call goes idle before the call's last row."""
        ev = self.eviction
        if ev is None:
            return 1 << 62
        rows = ev.rows_until_check(steps)
        if ev.spec.idle and not ev.spec.idle_seconds:
            rows = min(rows, ev.spec.idle)
        return rows

    def at_row(self, table: StateTable, now: int, steps: int) -> None:
        """Before the row at stream position ``steps`` (time ``now``): the eviction check,
        when ``steps`` is a check point."""
        ev = self.eviction
        if ev is not None and not self.shared and steps % ev.spec.check_every == 0:
            ev.check(table, now, steps, self.fields)

    def clock(self, steps: int) -> int:
        """The time of a row at stream position ``steps`` in the unit of ``--evict-idle``
        (events: the position; seconds: the wall clock); 0 without eviction."""
        return 0 if self.eviction is None else self.eviction.now(steps)[0]

    @property
    def nbytes(self) -> int:
        return 0 if self.admission is None else self.admission.nbytes

    def config(self) -> dict[str, object]:
        out: dict[str, object] = {}
        if self.admission is not None:
            out["admit"] = str(self.admission.spec)
        if self.eviction is not None:
            out["evict_idle"] = self.eviction.spec.idle_text()
            out["max_coordinates"] = self.eviction.spec.max_coordinates or None
        return out

    def state(self) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = self.fields.to_state()
        if self.admission is not None:
            out.update(self.admission.to_state())
        if self.eviction is not None:
            out.update(self.eviction.to_state())
        return out

    def cover_table(self, table: StateTable) -> None:
        """Room in the per-field counters for the field of every key already stored (a
        loaded model's, or a table that had no bounds before): the eviction kernels index
        them by the key's field without a bounds check."""
        for keys in table.iter_keys():
            self.fields.cover(keys[:0].astype(np.int64), keys)

    def load_state(self, arrays: dict[str, np.ndarray]) -> None:
        self.fields.load_state(arrays)
        if self.admission is not None and "admission_counts" in arrays:
            self.admission.load_state(arrays)
        if self.eviction is not None and "eviction_state" in arrays:
            self.eviction.load_state(arrays)

    def counts(self, table: StateTable) -> dict[str, int]:
        """admitted, refused, evicted (running totals) and live coordinates."""
        adm, ev = self.admission, self.eviction
        return {"admitted": 0 if adm is None else adm.admitted,
                "refused": 0 if adm is None else adm.refused,
                "evicted": 0 if ev is None else ev.evicted,
                "live": table.size if self.shared_live is None else self.shared_live}

    def per_field(self) -> dict[int, dict[str, int]]:
        """{field id: {admitted, refused, evicted}} (running totals; live per field comes
        from a pass over the table's keys, ``sparsity``)."""
        return self.fields.per_field()


def make_bounds(admit: str | AdmitSpec | None, evict_idle: str | None = None,
                max_coordinates: int | str | None = None) -> MemoryBounds | None:
    """The bounds of these flag values (ValueError naming the flag that is wrong); None when
    nothing bounds memory."""
    spec = AdmitSpec.parse(admit) if isinstance(admit, str) else admit
    evict = EvictSpec.parse(evict_idle, max_coordinates)
    if spec is None and evict is None:
        return None
    return MemoryBounds(spec, evict)
