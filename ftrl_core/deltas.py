"""Exact additive deltas between a worker's cache and the shared state.

The worker learns on its optimizer's ``StateTable`` (the cache). Before a batch is learned,
``capture`` copies the record of every coordinate the batch touches for the first time since
the last flush into a second table, the *base*; a flush then sends, per coordinate, the base
and the current record. The store adds ``current - base`` to the shared value (or, when the
shared value still equals the base - nobody else wrote it - stores ``current`` itself, which
keeps one worker bit-exact with the memory store), and replies with the merged record, which
replaces the cached one. Idle coordinates never leave the process; a coordinate touched by a
thousand rows in a window is sent once.
"""

from __future__ import annotations

import numpy as np

from ._jit import inline_kernel, kernel
from .batch import Batch
from .table import MAX_LOAD, StateTable, find_or_insert, find_slot, prefetch_key

#: rows ahead whose slots the kernels that write the cache (``_cache_slot``), the capture and
#: the collection prefetch: each lookup is a miss in a table of millions of coordinates, and
#: a few in flight overlap (``_fold``, 40k rows into 850k coordinates: 4.4 ms -> 1.4-2.5; a
#: capture of 1,000 syn1m rows, 0.73 ms -> 0.51 with the sizing of ``DeltaTracker.clear``)
AHEAD = 8


@inline_kernel
def _cache_slot(words: np.ndarray, stride: int, capacity: int, meta: np.ndarray,
                keys: np.ndarray, i: int) -> int:
    """The slot of ``keys[i]`` (inserted if absent), the slot of the key ``AHEAD`` rows on
    prefetched meanwhile."""
    if i + AHEAD < keys.size:
        prefetch_key(words, stride, capacity, keys[i + AHEAD])
    s = find_or_insert(words, stride, capacity, keys[i], meta)
    return s if s >= 0 else -1 - s


@kernel
def _store(words, stride, capacity, meta, keys, recs):  # type: ignore[no-untyped-def]
    """Insert or overwrite the state words of ``keys`` with ``recs`` ((n, stride-1) u64)."""
    for i in range(keys.size):
        s = _cache_slot(words, stride, capacity, meta, keys, i)
        for w in range(stride - 1):
            words[s * stride + 1 + w] = recs[i, w]


@kernel
def _capture(words, stride, capacity, base, base_capacity, base_meta, keys):  # type: ignore[no-untyped-def]
    for j in range(keys.size):
        if j + AHEAD < keys.size:  # each key's lookups miss in both tables: overlap them
            prefetch_key(base, stride, base_capacity, keys[j + AHEAD])
            prefetch_key(words, stride, capacity, keys[j + AHEAD])
        b = find_or_insert(base, stride, base_capacity, keys[j], base_meta)
        if b >= 0:
            continue
        b = -1 - b
        s = find_slot(words, stride, capacity, keys[j])
        for w in range(stride - 1):
            base[b * stride + 1 + w] = words[s * stride + 1 + w] if s >= 0 else np.uint64(0)


@kernel
def _collect(words, stride, capacity, base, keys_out, base_out, cur_out):  # type: ignore[no-untyped-def]
    n = 0
    slots = base.size // stride
    for b in range(slots):
        if b + AHEAD < slots and base[(b + AHEAD) * stride] != np.uint64(0):
            prefetch_key(words, stride, capacity, base[(b + AHEAD) * stride])
        key = base[b * stride]
        if key == np.uint64(0):
            continue
        s = find_slot(words, stride, capacity, key)
        keys_out[n] = key
        for w in range(stride - 1):
            base_out[n, w] = base[b * stride + 1 + w]
            cur_out[n, w] = words[s * stride + 1 + w] if s >= 0 else np.uint64(0)
        n += 1
    return n


@kernel
def _refresh(words, lanes, stride, capacity, meta, base, blanes,  # type: ignore[no-untyped-def]
             base_capacity, keys, recs, rlanes, width):
    """Bring ``keys`` to their merged shared records ``recs`` while keeping what was learned
    on them since the flush was prepared (see ``DeltaTracker.refresh``). ``lanes``,
    ``blanes`` and ``rlanes`` are float views of ``words``, ``base`` and ``recs`` with
    ``width`` lanes per 64-bit word (2 for float32 state, 1 for float64)."""
    per = stride - 1
    for i in range(keys.size):
        s = _cache_slot(words, stride, capacity, meta, keys, i)
        b = find_slot(base, stride, base_capacity, keys[i])
        if b < 0:  # not touched since the flush was prepared: the merged value as is
            for w in range(per):
                words[s * stride + 1 + w] = recs[i, w]
            continue
        same = True
        for w in range(per):
            if base[b * stride + 1 + w] != recs[i, w]:
                same = False
        if same:  # the shared value is this worker's own: nothing to merge
            continue
        for w in range(per):
            for j in range(width):
                lw = (s * stride + 1 + w) * width + j
                lb = (b * stride + 1 + w) * width + j
                lr = (i * per + w) * width + j
                lanes[lw] = rlanes[lr] + (lanes[lw] - blanes[lb])
                blanes[lb] = rlanes[lr]


@kernel
def _fold(words, lanes, stride, capacity, meta, base, blanes,  # type: ignore[no-untyped-def]
          base_capacity, keys, rb, rc, blan, clan, width):
    """Apply rows (key, base record ``rb``, current record ``rc``) in order, by the shared
    merge rule: a record equal to the row's base becomes its current record (exact),
    otherwise it gains ``current - base``, column by column in double precision. A key
    with a record in ``base`` (``base_capacity`` > 0: the tracker's, learned on here since
    the last flush) has that base record merged instead, and its cached record moves by as
    much, so that what was learned here stays on top. ``lanes``, ``blanes``, ``blan`` and
    ``clan`` are float views with ``width`` lanes per 64-bit word."""
    per = stride - 1
    for i in range(keys.size):
        s = _cache_slot(words, stride, capacity, meta, keys, i)
        b = find_slot(base, stride, base_capacity, keys[i]) if base_capacity > 0 else -1
        if b < 0:
            same = True
            for w in range(per):
                if words[s * stride + 1 + w] != rb[i, w]:
                    same = False
            if same:
                for w in range(per):
                    words[s * stride + 1 + w] = rc[i, w]
                continue
            for w in range(per):
                for j in range(width):
                    lw = (s * stride + 1 + w) * width + j
                    lr = (i * per + w) * width + j
                    lanes[lw] = np.float64(lanes[lw]) + (np.float64(clan[lr])
                                                         - np.float64(blan[lr]))
            continue
        same = True
        for w in range(per):
            if base[b * stride + 1 + w] != rb[i, w]:
                same = False
        for w in range(per):
            for j in range(width):
                lw = (s * stride + 1 + w) * width + j
                lb = (b * stride + 1 + w) * width + j
                lr = (i * per + w) * width + j
                old = np.float64(blanes[lb])
                if same:
                    blanes[lb] = clan[lr]
                else:
                    blanes[lb] = old + (np.float64(clan[lr]) - np.float64(blan[lr]))
                lanes[lw] = np.float64(lanes[lw]) + (np.float64(blanes[lb]) - old)


def fold_rows(table: StateTable, keys: np.ndarray, base: np.ndarray, cur: np.ndarray,
              dtype: type, pending: StateTable | None = None, absent: int | None = None
              ) -> None:
    """Apply delta rows (``keys``, base and current records as (n, stride - 1) uint64) to
    ``table`` in order, by the shared merge rule (``_fold``); with ``pending`` (a tracker's
    base table), keys learned on since the last flush keep what was learned on top.
    ``absent``: at most that many of the keys are not in ``table`` yet (None: any row's may
    not be), the room the table is grown for."""
    if keys.size == 0:
        return
    table.ensure_room(keys.size if absent is None else absent)
    per = table.stride - 1
    rb = np.ascontiguousarray(base, dtype=np.uint64).reshape(keys.size, per)
    rc = np.ascontiguousarray(cur, dtype=np.uint64).reshape(keys.size, per)
    width = 8 // np.dtype(dtype).itemsize
    p = pending if pending is not None and pending.size else None
    pw = p.words if p is not None else np.zeros(table.stride, dtype=np.uint64)
    _fold(table.words, table.words.view(dtype), table.stride, table.capacity, table.meta,
          pw, pw.view(dtype), p.capacity if p is not None else 0,
          np.ascontiguousarray(keys, dtype=np.uint64), rb, rc, rb.reshape(-1).view(dtype),
          rc.reshape(-1).view(dtype), width)


class DeltaTracker:
    """The base records of the coordinates touched since the last flush."""

    def __init__(self, stride: int) -> None:
        self.stride = stride
        self.base = StateTable(stride)
        #: the most key occurrences one ``capture`` met (sizes the next window's table)
        self._occurrences = 0

    @property
    def pending(self) -> int:
        return self.base.size

    def missing(self, cache: StateTable, batch: Batch) -> np.ndarray:
        """The distinct keys of ``batch`` absent from the cache (to fetch before learning)."""
        absent = cache.absent(batch.keys)
        return np.unique(absent) if absent.size else absent

    def capture(self, cache: StateTable, batch: Batch) -> None:
        self._occurrences = max(self._occurrences, int(batch.keys.size))
        self.base.ensure_room_for(batch.keys)
        b = self.base
        _capture(cache.words, cache.stride, cache.capacity, b.words, b.capacity, b.meta,
                 batch.keys)

    def collect(self, cache: StateTable) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(keys, base records, current records) of every pending coordinate, in base order;
        records are (n, stride - 1) uint64 state words."""
        n = self.base.size
        keys = np.empty(n, dtype=np.uint64)
        base = np.empty((n, self.stride - 1), dtype=np.uint64)
        cur = np.empty((n, self.stride - 1), dtype=np.uint64)
        got = _collect(cache.words, cache.stride, cache.capacity, self.base.words, keys, base,
                       cur)
        return keys[:got], base[:got], cur[:got]

    def refresh(self, cache: StateTable, keys: np.ndarray, recs: np.ndarray,
                dtype: type) -> None:
        """Store the merged records ``recs`` a flush's reply brought for ``keys``, in a
        cache that went on learning while the flush was in flight. A key touched since the
        flush was prepared has its base here (the value the flush sent as current, captured
        before the first later update): its cached value becomes merged + (cached - base),
        its base the merged value, so the next flush adds exactly what was learned since.
        A merged value equal to that base (no other worker wrote the key) changes nothing,
        which keeps one worker bit-exact. Untouched keys take the merged value."""
        if keys.size == 0:
            return
        cache.ensure_room(keys.size)
        recs = np.ascontiguousarray(recs, dtype=np.uint64).reshape(keys.size, self.stride - 1)
        width = 8 // np.dtype(dtype).itemsize
        b = self.base
        _refresh(cache.words, cache.words.view(dtype), cache.stride, cache.capacity,
                 cache.meta, b.words, b.words.view(dtype), b.capacity,
                 np.ascontiguousarray(keys, dtype=np.uint64), recs, recs.reshape(-1).view(dtype),
                 width)

    def clear(self) -> None:
        """Start the next window, its table sized for the window just ended and one more
        batch (at most doubling it) under the maximum load: a capture then finds room
        for a batch's occurrences without counting its absent keys first
        (``ensure_room_for``'s extra pass, 0.1 ms of a 0.6 ms capture of 1,000 syn1m rows)."""
        n = self.base.size
        if n:
            room = int((n + min(n, self._occurrences)) / MAX_LOAD) + 1
            self.base = StateTable(self.stride, capacity=max(self.base.capacity, room))


def store_records(cache: StateTable, keys: np.ndarray, recs: np.ndarray) -> None:
    """Write ``recs`` ((n, stride - 1) uint64) as the cached state of ``keys``."""
    if keys.size == 0:
        return
    cache.ensure_room(keys.size)
    _store(cache.words, cache.stride, cache.capacity, cache.meta,
           np.ascontiguousarray(keys, dtype=np.uint64),
           np.ascontiguousarray(recs, dtype=np.uint64).reshape(keys.size, cache.stride - 1))
