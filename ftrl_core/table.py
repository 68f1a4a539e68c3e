"""The state table: exact 64-bit keys in an open-addressing table that grows.

One record per live coordinate, laid out contiguously so that a lookup touches one cache
line: word 0 is the key (0 marks an empty slot), the next ``stride - 1`` 64-bit words hold the
optimizer's state. Optimizers view the same buffer as float32 (FTRL keeps z and n in one
word, 16 bytes a record) or float64 (the lazy learners, whose exactness tests need double
precision).

The slot of a key is ``fastrange(mix64(key))`` over any capacity, so the table can grow by
1.5x instead of 2x: with a maximum load of 0.8 the load stays between 0.53 and 0.8 and an
FTRL coordinate costs 20-30 bytes. Linear probing keeps probes within neighbouring lines.
Memory follows the live coordinates; no array is ever sized to the feature dimension.

Deletion (bounded memory, ``eviction.py``) is backward-shift deletion: the records after the
hole in its probe run move back into it, so there are no tombstones, lookups stay as short as
if the deleted key had never been inserted, and the freed slot is reused by the next insert.
A table that evicts also keeps ``ages``, one int64 per slot (when its record was last
touched), moved with its record by every rehash and shift.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from ._jit import inline_kernel, kernel
from .hashing import mix64

MAX_LOAD = 0.8
GROWTH = 1.5
MIN_CAPACITY = 1024


@inline_kernel
def home_slot(key: np.uint64, capacity: int) -> int:
    # fastrange on the high 32 bits of the mixed key: a multiply instead of a modulo
    # np.int64, not int(): Numba keeps int() of a uint64 unsigned, and unsigned + signed
    # arithmetic in the probe loops would then be float
    return np.int64(  # type: ignore[return-value]
        ((mix64(key) >> np.uint64(32)) * np.uint64(capacity)) >> np.uint64(32))


@intrinsic
def _prefetch(typingctx, arr, idx):  # type: ignore[no-untyped-def]
    """LLVM's prefetch hint for ``arr[idx]`` (read, high locality)."""
    sig = types.void(arr, idx)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        aryty = signature.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, aryty, ary, [args[1]],
                                       wraparound=False)
        i8p = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
        builder.call(fn, [builder.bitcast(ptr, i8p), i32(0), i32(3), i32(1)])
        return context.get_dummy_value()

    return sig, codegen


@inline_kernel
def prefetch_key(words: np.ndarray, stride: int, capacity: int, key: np.uint64) -> None:
    """Start loading the home slot of ``key`` (learners issue this a row ahead: a lookup is
    a cache miss, and the next row's misses can overlap this row's arithmetic)."""
    _prefetch(words, home_slot(key, capacity) * stride)  # type: ignore[call-arg]


@inline_kernel
def prefetch_next_row(words: np.ndarray, stride: int, capacity: int, indptr: np.ndarray,
                      keys: np.ndarray, r: int) -> None:
    """``prefetch_key`` of every key of row ``r + 1``, if there is one: called at the start
    of row ``r``, the next row's cache misses overlap this row's work (a kernel that looks
    keys up row by row waits on one miss after another otherwise: FTRL's predictions over
    syn1m's 24 MB table took 1.6x as long without it)."""
    if r + 2 < indptr.size:
        for j in range(indptr[r + 1], indptr[r + 2]):
            prefetch_key(words, stride, capacity, keys[j])


@inline_kernel
def find_slot(words: np.ndarray, stride: int, capacity: int, key: np.uint64) -> int:
    """Slot holding ``key``, or -1."""
    s = home_slot(key, capacity)
    while True:
        k = words[s * stride]
        if k == key:
            return s
        if k == np.uint64(0):
            return -1
        s += 1
        if s == capacity:
            s = 0


@inline_kernel
def find_or_insert(
    words: np.ndarray, stride: int, capacity: int, key: np.uint64, meta: np.ndarray
) -> int:
    """Slot of ``key``; inserts it (state zeroed) if absent. ``meta[0]`` counts live keys.

    Returns ``-1 - slot`` when the key was inserted, so callers can record new keys.
    The caller guarantees free room (``ensure_room`` before each batch).
    """
    s = home_slot(key, capacity)
    while True:
        k = words[s * stride]
        if k == key:
            return s
        if k == np.uint64(0):
            words[s * stride] = key
            meta[0] += 1
            return -1 - s
        s += 1
        if s == capacity:
            s = 0


@inline_kernel
def delete_slot(words: np.ndarray, stride: int, capacity: int, slot: int, ages: np.ndarray,
                meta: np.ndarray) -> None:
    """Remove the record in ``slot`` by backward shift (Knuth's algorithm R): each later
    record of the probe run whose home slot does not lie cyclically in (hole, its slot]
    moves into the hole, which moves on; the run ends at an empty slot."""
    hole = slot
    s = slot
    while True:
        s += 1
        if s == capacity:
            s = 0
        key = words[s * stride]
        if key == np.uint64(0):
            break
        home = home_slot(key, capacity)
        # may the record at s move back to the hole? not if its home is in (hole, s]
        stays = (hole < home <= s) if hole <= s else (home > hole or home <= s)
        if stays:
            continue
        for w in range(stride):
            words[hole * stride + w] = words[s * stride + w]
        if ages.size > 0:
            ages[hole] = ages[s]
        hole = s
    for w in range(stride):
        words[hole * stride + w] = np.uint64(0)
    if ages.size > 0:
        ages[hole] = 0
    meta[0] -= 1


@kernel
def _rehash(old: np.ndarray, stride: int, new: np.ndarray, new_capacity: int,
            old_ages: np.ndarray, new_ages: np.ndarray) -> None:
    old_capacity = old.size // stride
    for s in range(old_capacity):
        key = old[s * stride]
        if key == np.uint64(0):
            continue
        t = home_slot(key, new_capacity)
        while new[t * stride] != np.uint64(0):
            t += 1
            if t == new_capacity:
                t = 0
        for w in range(stride):
            new[t * stride + w] = old[s * stride + w]
        if new_ages.size > 0:
            new_ages[t] = old_ages[s]


@kernel
def _absent_keys(words: np.ndarray, stride: int, capacity: int, keys: np.ndarray,
                 out: np.ndarray) -> int:
    """Write the keys absent from the table (repeats included) to ``out``; their count."""
    n = 0
    for i in range(keys.size):
        if find_slot(words, stride, capacity, keys[i]) < 0:
            out[n] = keys[i]
            n += 1
    return n


@kernel
def _live_keys(words: np.ndarray, stride: int, start: int, stop: int, out: np.ndarray) -> int:
    """The keys in slots ``start:stop``, in slot order, to ``out``; their count (one pass:
    numpy's mask and gather over the strided key column took twice as long)."""
    n = 0
    for s in range(start, stop):
        key = words[s * stride]
        if key != np.uint64(0):
            out[n] = key
            n += 1
    return n


@kernel
def _lookup_many(words: np.ndarray, stride: int, keys: np.ndarray, out: np.ndarray) -> None:
    capacity = words.size // stride
    for i in range(keys.size):
        out[i] = find_slot(words, stride, capacity, keys[i])


class StateTable:
    """A growable open-addressing table of (key, state words) records."""

    def __init__(self, stride: int, capacity: int = MIN_CAPACITY) -> None:
        if stride < 2:
            raise ValueError(f"stride must be at least 2 words, got {stride}")
        self.stride = stride
        self.capacity = max(int(capacity), MIN_CAPACITY)
        self.words = np.zeros(self.capacity * stride, dtype=np.uint64)
        #: meta[0]: live keys (kernels update it in place); meta[1]: the most live keys a
        #: learn kernel may reach before it stops for the table to grow (``room_limit``),
        #: meta[2]: the rows it learned before stopping
        self.meta = np.zeros(3, dtype=np.int64)
        #: per slot, when its record was last touched (empty: the table does not evict)
        self.ages = np.zeros(0, dtype=np.int64)

    def track_ages(self) -> None:
        """Keep ``ages`` from now on (records present now count as touched at 0)."""
        if self.ages.size != self.capacity:
            self.ages = np.zeros(self.capacity, dtype=np.int64)

    @property
    def size(self) -> int:
        return int(self.meta[0])

    @property
    def nbytes(self) -> int:
        return int(self.words.nbytes + self.ages.nbytes)

    def f32(self) -> np.ndarray:
        return self.words.view(np.float32)

    def f64(self) -> np.ndarray:
        return self.words.view(np.float64)

    def ensure_room(self, extra: int) -> None:
        """Grow, if needed, so that ``extra`` more keys fit under the maximum load."""
        needed = self.size + int(extra)
        if needed <= MAX_LOAD * self.capacity:
            return
        capacity = self.capacity
        while needed > MAX_LOAD * capacity:
            capacity = int(capacity * GROWTH) + 1
        self._resize(capacity)

    def room_limit(self) -> int:
        """The most live keys the table holds before it must grow."""
        return int(MAX_LOAD * self.capacity)

    def ensure_room_for(self, keys: np.ndarray) -> None:
        """Grow, if needed, so that the distinct keys of ``keys`` absent from the table fit.

        Sized from the new keys, not from ``keys.size``: a batch of 300k events over 139
        coordinates must not leave a table of millions of slots behind. The count costs a
        lookup per key, paid only when the occurrences alone would not fit."""
        room = self.room_limit() - self.size
        if keys.size <= room:
            return
        absent = self.absent(keys)
        if absent.size > room:
            self.ensure_room(np.unique(absent).size)

    def absent(self, keys: np.ndarray) -> np.ndarray:
        """The keys of ``keys`` absent from the table, in order, repeats included."""
        out = np.empty(keys.size, dtype=np.uint64)
        n = _absent_keys(self.words, self.stride, self.capacity, keys, out)
        return out[:n]

    def _resize(self, capacity: int) -> None:
        new = np.zeros(capacity * self.stride, dtype=np.uint64)
        new_ages = np.zeros(capacity if self.ages.size else 0, dtype=np.int64)
        _rehash(self.words, self.stride, new, capacity, self.ages, new_ages)
        self.words = new
        self.ages = new_ages
        self.capacity = capacity

    def live_slots(self) -> np.ndarray:
        """Slots of the live records, in slot order."""
        return np.flatnonzero(self.words[:: self.stride])

    def keys(self) -> np.ndarray:
        return self.words[:: self.stride][self.live_slots()]

    def iter_keys(self, chunk: int = 1 << 20) -> Iterator[np.ndarray]:
        """The live keys, ``chunk`` slots at a time (no table-sized temporaries)."""
        for start in range(0, self.capacity, chunk):
            stop = min(start + chunk, self.capacity)
            out = np.empty(stop - start, dtype=np.uint64)
            yield out[:_live_keys(self.words, self.stride, start, stop, out)]

    def records(self) -> np.ndarray:
        """The live records as a (size, stride) uint64 array (a copy)."""
        view = self.words.reshape(self.capacity, self.stride)
        return view[self.live_slots()].copy()

    def live_ages(self) -> np.ndarray:
        """The ages of the live records, in the order of ``records()``."""
        return self.ages[self.live_slots()].copy() if self.ages.size else self.ages.copy()

    def lookup(self, keys: np.ndarray) -> np.ndarray:
        """Slot of each key, -1 where absent."""
        out = np.empty(keys.size, dtype=np.int64)
        _lookup_many(self.words, self.stride, np.ascontiguousarray(keys, dtype=np.uint64), out)
        return out

    @classmethod
    def from_layout(cls, records: np.ndarray, slots: np.ndarray, capacity: int,
                    ages: np.ndarray) -> StateTable:
        """A table with ``records`` in the very ``slots`` of a table of ``capacity`` (the
        approximate-LRU sample picks slots: a resumed run must sample the same ones)."""
        n, stride = records.shape
        if slots.shape != (n,) or ages.shape != (n,) or capacity < MIN_CAPACITY \
                or n > MAX_LOAD * capacity or (n and (slots.min() < 0
                                                      or slots.max() >= capacity)):
            raise ValueError(f"a table layout of {n} records in {capacity} slots is damaged")
        table = cls(stride, capacity=capacity)
        table.words.reshape(capacity, stride)[slots] = records
        table.track_ages()
        table.ages[slots] = ages
        table.meta[0] = n
        if np.unique(slots).size != n or (table.lookup(records[:, 0]) != slots).any():
            raise ValueError("a table layout whose records are not where their keys lead")
        return table

    @classmethod
    def from_records(cls, records: np.ndarray, ages: np.ndarray | None = None) -> StateTable:
        """A table holding ``records`` ((n, stride) uint64, keys in column 0) and, if given,
        their ages (then the table keeps ages)."""
        n, stride = records.shape
        table = cls(stride, capacity=int(n / (MAX_LOAD * 0.75)) + MIN_CAPACITY)
        staging = np.ascontiguousarray(records, dtype=np.uint64).reshape(-1)
        old_ages = np.zeros(0, dtype=np.int64)
        if ages is not None:
            if ages.shape != (n,):
                raise ValueError(f"ages of shape {ages.shape} for {n} records")
            table.track_ages()
            old_ages = np.ascontiguousarray(ages, dtype=np.int64)
        _rehash(staging, stride, table.words, table.capacity, old_ages, table.ages)
        table.meta[0] = n
        return table

