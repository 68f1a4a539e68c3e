"""Rows of (key, field, value) features kept between being parsed and being learned (the
join's pending impressions), each a span of a chunk of three parallel arrays, named by a
slot number.

Why chunks: the rows arrive in requests and mostly leave in the order they came (an
attribution window after they arrive). One ``bytes`` object a row cost a quarter of a join
server's time (packing each row, then joining them and splitting the records into columns
again to learn them); one growing set of arrays copied every live row each time it grew.
Here a request's rows are appended to the current chunk with one copy a column, a chunk
whose rows have all left is dropped whole, and the rows to learn are gathered in one pass
(``_gather``). Nothing live is copied, except the few rows left in a chunk that is mostly
empty: when a new chunk starts, the rows of every chunk less than a quarter live move into
it (``_relocate``), so the chunks then hold at most four times the live features, plus the
new one (and one dropped chunk's arrays kept for reuse).

A released slot's row stays readable until the next ``add``, which may reuse the slot or
drop its chunk: read the rows a request closed before adding more (``gather``'s ``adds``).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ._jit import kernel

#: features a chunk holds at most (20 MB; a larger request gets a chunk of its own size)
#: and at least (1.3 MB): between the two, half the live features, so an arena holding a
#: few rows holds a small chunk
CHUNK = 1 << 20
MIN_CHUNK = 1 << 16
#: bytes a feature takes: key (u64), field id (i32), value (f64)
FEATURE_BYTES = 20
#: bytes a slot costs: position (i64), length (i64), used (bool), its free-list entry
SLOT_BYTES = 8 + 8 + 1 + 8
#: a position is chunk << SHIFT | offset
SHIFT = 32
OFFSET_MASK = (1 << SHIFT) - 1
#: chunks (other than the one being filled) with fewer live features than this fraction of
#: their size give their rows to the new chunk
RELOCATE_BELOW = 0.25


class Rows(NamedTuple):
    """Rows of a CSR batch to store (``which``: their numbers)."""

    indptr: np.ndarray
    keys: np.ndarray
    fields: np.ndarray
    values: np.ndarray
    which: range | list[int]


@kernel
def _gather(starts: np.ndarray, lengths: np.ndarray, to: np.ndarray, keys: np.ndarray,
            fields: np.ndarray, values: np.ndarray, out_keys: np.ndarray,
            out_fields: np.ndarray, out_values: np.ndarray) -> None:
    """Row r: ``lengths[r]`` features from ``starts[r]`` of one chunk's arrays, to ``to[r]``
    of the output's."""
    for r in range(starts.size):
        w = to[r]
        for i in range(starts[r], starts[r] + lengths[r]):
            out_keys[w] = keys[i]
            out_fields[w] = fields[i]
            out_values[w] = values[i]
            w += 1


#: the dtypes of a chunk's three arrays
DTYPES = (np.dtype(np.uint64), np.dtype(np.int32), np.dtype(np.float64))


def _arrays(size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return tuple(np.empty(size, dtype=d) for d in DTYPES)  # type: ignore[return-value]


class RowArena:
    __slots__ = ("_arrays", "_emptied", "_spare", "adds", "chunk", "chunk_live",
                 "chunk_sizes", "current", "fill", "free", "free_chunks", "lengths", "live",
                 "min_chunk", "positions", "relocated", "used")

    def __init__(self, chunk: int = CHUNK, min_chunk: int = MIN_CHUNK) -> None:
        self.chunk = chunk
        self.min_chunk = min(min_chunk, chunk)
        #: each chunk's arrays, by chunk id (a dropped chunk's are empty)
        self._arrays: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        #: chunks whose rows all left, dropped at the next ``add`` (until then their rows
        #: can still be read)
        self._emptied: list[int] = []
        #: the arrays of one dropped chunk, kept for the next (its pages are mapped: new
        #: ones fault each page in as it is first written)
        self._spare: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        #: by chunk id: features in use, features it holds
        self.chunk_live = np.zeros(0, dtype=np.int64)
        self.chunk_sizes = np.zeros(0, dtype=np.int64)
        #: the chunk being filled (-1: none yet), and where
        self.current = -1
        self.fill = 0
        self.free_chunks: list[int] = []
        #: by slot: the row's position and length, whether a row holds it
        self.positions = np.zeros(0, dtype=np.int64)
        self.lengths = np.zeros(0, dtype=np.int64)
        self.used = np.zeros(0, dtype=np.bool_)
        #: slots to reuse, the next one last
        self.free: list[int] = []
        #: features in use
        self.live = 0
        #: ``add`` calls so far (rows read after one may be gone)
        self.adds = 0
        #: rows moved out of mostly empty chunks so far
        self.relocated = 0

    def nbytes(self) -> int:
        """Bytes held: the chunks (their free room too), the spare, the slots."""
        spare = 0 if self._spare is None else len(self._spare[0])
        return ((int(self.chunk_sizes.sum()) + spare) * FEATURE_BYTES
                + len(self.positions) * SLOT_BYTES)

    def chunks(self) -> int:
        """Chunks holding memory."""
        return int(np.count_nonzero(self.chunk_sizes))

    # -- adding ----------------------------------------------------------------------------

    def add(self, new: Rows) -> list[int]:
        """Copy rows in; returns the slot of each."""
        indptr, keys, fields, values, rows = new
        if isinstance(rows, range) and rows.step == 1:  # whole runs: one copy a column
            lo, hi = int(indptr[rows.start]), int(indptr[rows.stop])
            index: np.ndarray | slice = slice(lo, hi)
            bounds = indptr[rows.start:rows.stop + 1] - lo
        else:
            picked = np.asarray(rows, dtype=np.int64)
            bounds = np.zeros(len(picked) + 1, dtype=np.int64)
            np.cumsum(indptr[picked + 1] - indptr[picked], out=bounds[1:])
            index = np.arange(bounds[-1], dtype=np.int64)
            index += np.repeat(indptr[picked] - bounds[:-1], np.diff(bounds))
        n = int(bounds[-1]) if len(bounds) else 0
        self.adds += 1
        for c in self._emptied:
            if self.chunk_live[c] == 0 and c != self.current and self.chunk_sizes[c]:
                self._drop(c)
        self._emptied.clear()
        if self.current < 0 or self.fill + n > self.chunk_sizes[self.current]:
            self._new_chunk(n)
        c, at = self.current, self.fill
        k, f, v = self._arrays[c]
        k[at:at + n] = keys[index]
        f[at:at + n] = fields[index]
        v[at:at + n] = values[index]
        self.fill = at + n
        self.chunk_live[c] += n
        self.live += n
        count = len(bounds) - 1
        slots = self._take_slots(count)
        where = np.array(slots, dtype=np.int64)
        self.positions[where] = bounds[:-1] + ((c << SHIFT) + at)
        self.lengths[where] = np.diff(bounds)
        self.used[where] = True
        return slots

    def _take_slots(self, count: int) -> list[int]:
        free = self.free
        if len(free) < count:
            old = len(self.positions)
            size = max(1024, 2 * old, old + count - len(free))
            for name in ("positions", "lengths", "used"):
                grown = np.zeros(size, dtype=getattr(self, name).dtype)
                grown[:old] = getattr(self, name)
                setattr(self, name, grown)
            free[:0] = range(size - 1, old - 1, -1)  # the new ones taken after the old
        slots = free[len(free) - count:]
        del free[len(free) - count:]
        return slots

    def _new_chunk(self, at_least: int) -> None:
        """Start a chunk with room for ``at_least``; first move the rows of mostly empty
        chunks into it (when they fit beside the request's)."""
        old = self.current
        if old >= 0 and self.chunk_live[old] == 0:
            self._drop(old)
        size = max(at_least, min(self.chunk, max(self.min_chunk, self.live // 2)))
        sparse = np.flatnonzero((self.chunk_live > 0)
                                & (self.chunk_live < RELOCATE_BELOW * self.chunk_sizes)).tolist()
        moving = int(self.chunk_live[sparse].sum()) if sparse else 0
        if moving and moving + at_least > size:
            size = moving + at_least
        if self.free_chunks:
            c = self.free_chunks.pop()
        else:
            c = len(self._arrays)
            self._arrays.append(_arrays(0))
            self.chunk_live = np.append(self.chunk_live, 0)
            self.chunk_sizes = np.append(self.chunk_sizes, 0)
        spare, self._spare = self._spare, None
        if spare is not None and size <= len(spare[0]) <= 2 * size:
            self._arrays[c] = spare  # pages mapped already
            size = len(spare[0])
        else:
            self._arrays[c] = _arrays(size)
        self.chunk_sizes[c] = size
        self.chunk_live[c] = 0
        self.current, self.fill = c, 0
        if moving:
            self._relocate(sparse)

    def _relocate(self, chunks: list[int]) -> None:
        """Move the rows in use of ``chunks`` into the current chunk, and drop those."""
        held = np.flatnonzero(self.used)
        where = held[np.isin(self.positions[held] >> SHIFT, chunks)]
        indptr, keys, fields, values = self.gather(where)
        c, at = self.current, self.fill
        n = int(indptr[-1])
        k, f, v = self._arrays[c]
        k[at:at + n] = keys
        f[at:at + n] = fields
        v[at:at + n] = values
        self.positions[where] = indptr[:-1] + ((c << SHIFT) + at)
        self.fill = at + n
        self.chunk_live[c] += n
        self.chunk_live[chunks] = 0
        self.relocated += len(where)
        for gone in chunks:
            self._drop(gone)

    def _drop(self, c: int) -> None:
        if self._spare is None or len(self._arrays[c][0]) > len(self._spare[0]):
            self._spare = self._arrays[c]
        self._arrays[c] = _arrays(0)
        self.chunk_sizes[c] = 0
        self.free_chunks.append(c)

    # -- releasing and reading -------------------------------------------------------------

    def release(self, slots: list[int]) -> None:
        """The rows of ``slots`` are no longer needed (readable until the next ``add``)."""
        if not slots:
            return
        if len(slots) == 1:  # one close at a time (--max-pending, the arrival clock):
            # scalars, not arrays (8 us a call as arrays)
            slot = slots[0]
            n = int(self.lengths[slot])
            c = int(self.positions[slot]) >> SHIFT
            self.live -= n
            self.used[slot] = False
            self.free.append(slot)
            self.chunk_live[c] -= n
            if self.chunk_live[c] == 0 and c != self.current:
                self._emptied.append(c)
            return
        where = np.array(slots, dtype=np.int64)
        lengths = self.lengths[where]
        total = int(lengths.sum())
        self.live -= total
        self.used[where] = False
        self.free.extend(slots)
        chunks = self.positions[where] >> SHIFT
        first = int(chunks[0])
        if (chunks == first).all():  # one chunk: the usual case
            touched = [first]
            self.chunk_live[first] -= total
        else:  # (``np.subtract.at`` costs 50 ns an item; counts in a float64 are exact)
            by_chunk = np.bincount(chunks, weights=lengths, minlength=len(self.chunk_live))
            self.chunk_live -= by_chunk.astype(np.int64)
            touched = np.flatnonzero(by_chunk).tolist()
        for c in touched:
            if self.chunk_live[c] == 0 and c != self.current:
                self._emptied.append(c)

    def gather(self, slots: list[int] | np.ndarray, adds: int | None = None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(indptr, keys, fields, values) of the rows of ``slots``; ``adds``: the ``adds``
        count when the slots were taken (refused if rows were added since)."""
        if adds is not None and adds != self.adds:
            raise RuntimeError("rows read after more were added")
        where = np.asarray(slots, dtype=np.int64)
        positions = self.positions[where]
        lengths = self.lengths[where]
        indptr = np.zeros(where.size + 1, dtype=np.int64)
        np.cumsum(lengths, out=indptr[1:])
        out = _arrays(int(indptr[-1]))
        if not where.size:
            return indptr, *out
        chunks = positions >> SHIFT
        starts = positions & OFFSET_MASK
        first = int(chunks[0])
        ok, of, ov = out
        if (chunks == first).all():  # one chunk: the usual case
            k, f, v = self._arrays[first]
            _gather(starts, lengths, indptr, k, f, v, ok, of, ov)
        else:  # a kernel call a chunk, each row to its place
            for c in np.unique(chunks).tolist():
                mine = chunks == c
                k, f, v = self._arrays[c]
                _gather(starts[mine], lengths[mine], indptr[:-1][mine], k, f, v, ok, of, ov)
        return indptr, ok, of, ov
