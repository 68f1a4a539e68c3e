"""The pending impressions' rows: hashed feature keys, field ids and values in three arrays
(an arena), each row a span of them that a slot number names.

Why not one ``bytes`` object a row: closing a request's worth of impressions joined their
bytes (scattered over the heap since they arrived, an hour of event time earlier) and split
the records into columns again, and the request's parse packed each row into one. Together
that was a quarter of a join server's time. Here a request's rows are appended with one copy
per column, and the rows to learn are gathered in one pass (``ftrl_core.spans``).

Rows are appended at ``end``; a released row's slot is free for another row, its features
are left where they are. When a request's rows do not fit, the live rows are copied to the
front of fresh arrays at least twice the size they need (``_compact``), so each live
feature is copied at most once per feature appended since the last compaction (amortised
O(1)). A slot keeps its number when its row moves: the pending impressions hold slots, and
a compaction touches only arrays, never them.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ftrl_core.spans import gather_spans

#: features the arrays hold at least (1.3 MB)
MIN_CAPACITY = 1 << 16
#: one stored feature: hashed key (u64), field id (i32), value (f64)
FEATURE_BYTES = 20
#: bytes a slot costs: start (i64), length (i64), used (bool), its free-list entry
SLOT_BYTES = 8 + 8 + 1 + 8


def spans_index(starts: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(indptr, index) of rows given as spans: ``index`` lists the positions of the
    features of each span in turn, ``indptr`` where each row's start in it."""
    indptr = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=indptr[1:])
    # position j of the output is starts[row] + (j - indptr[row]): one repeat, one add
    index = np.arange(indptr[-1], dtype=np.int64)
    index += np.repeat(starts - indptr[:-1], lengths)
    return indptr, index


class RowArena:
    """Rows by slot. A released slot's row stays readable until the next ``add``, which
    may reuse the slot: read the rows a request closed (``gather``) before adding more."""

    __slots__ = (
        "adds",
        "compactions",
        "end",
        "fields",
        "free",
        "keys",
        "lengths",
        "live",
        "minimum",
        "starts",
        "used",
        "values",
    )

    def __init__(self, capacity: int = MIN_CAPACITY, minimum: int = MIN_CAPACITY) -> None:
        #: the fewest features a compaction leaves room for
        self.minimum = minimum
        self.keys = np.empty(capacity, dtype=np.uint64)
        self.fields = np.empty(capacity, dtype=np.int32)
        self.values = np.empty(capacity, dtype=np.float64)
        #: the first free position
        self.end = 0
        #: features of the rows in use
        self.live = 0
        #: by slot: the row's span, whether a row holds it
        self.starts = np.zeros(0, dtype=np.int64)
        self.lengths = np.zeros(0, dtype=np.int64)
        self.used = np.zeros(0, dtype=np.bool_)
        #: slots to reuse, the next one last
        self.free: list[int] = []
        #: ``add`` calls so far (rows read after one may have been overwritten)
        self.adds = 0
        self.compactions = 0

    @property
    def capacity(self) -> int:
        return len(self.keys)

    def nbytes(self) -> int:
        return self.capacity * FEATURE_BYTES + len(self.starts) * SLOT_BYTES

    def add(self, new: Rows) -> list[int]:
        """Copy rows in; returns the slot of each."""
        indptr, keys, fields, values, rows = new
        if isinstance(rows, range) and rows.step == 1:  # whole runs: one copy a column
            lo, hi = int(indptr[rows.start]), int(indptr[rows.stop])
            index: np.ndarray | slice = slice(lo, hi)
            bounds = indptr[rows.start:rows.stop + 1] - lo
        else:
            picked = np.asarray(rows, dtype=np.int64)
            bounds, index = spans_index(indptr[picked], indptr[picked + 1] - indptr[picked])
        n = int(bounds[-1]) if len(bounds) else 0
        if self.end + n > self.capacity:
            self._compact(n)
        at = self.end
        self.keys[at:at + n] = keys[index]
        self.fields[at:at + n] = fields[index]
        self.values[at:at + n] = values[index]
        self.end = at + n
        self.live += n
        count = len(bounds) - 1
        free = self.free
        if len(free) < count:
            self._more_slots(count - len(free))
        slots = free[len(free) - count:]
        del free[len(free) - count:]
        where = np.array(slots, dtype=np.int64)
        self.starts[where] = bounds[:-1] + at
        self.lengths[where] = np.diff(bounds)
        self.used[where] = True
        self.adds += 1
        return slots

    def release(self, slots: list[int]) -> None:
        """The rows of ``slots`` are no longer needed (readable until the next ``add``)."""
        if not slots:
            return
        where = np.array(slots, dtype=np.int64)
        self.live -= int(self.lengths[where].sum())
        self.used[where] = False
        self.free.extend(slots)

    def gather(self, slots: list[int] | np.ndarray, adds: int | None = None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(indptr, keys, fields, values) of the rows of ``slots``; ``adds``: the ``adds``
        count when the slots were taken (refused if rows were added since)."""
        if adds is not None and adds != self.adds:
            raise RuntimeError("rows read after more were added")
        where = np.asarray(slots, dtype=np.int64)
        return gather_spans(self.starts[where], self.lengths[where], self.keys, self.fields,
                            self.values)

    def _more_slots(self, at_least: int) -> None:
        old = len(self.starts)
        size = max(1024, 2 * old, old + at_least)
        for name in ("starts", "lengths", "used"):
            grown = np.zeros(size, dtype=getattr(self, name).dtype)
            grown[:old] = getattr(self, name)
            setattr(self, name, grown)
        self.free[:0] = range(size - 1, old - 1, -1)  # the new ones taken after the old

    def _compact(self, room: int) -> None:
        """The rows in use, in slot order, at the front of fresh arrays with ``room``
        features free after them and as many again (fewer than now, when most are gone)."""
        held = np.flatnonzero(self.used)
        indptr, keys, fields, values = self.gather(held)
        n = int(indptr[-1])
        capacity = max(self.minimum, 2 * (n + room))
        self.keys = np.empty(capacity, dtype=np.uint64)
        self.fields = np.empty(capacity, dtype=np.int32)
        self.values = np.empty(capacity, dtype=np.float64)
        self.keys[:n] = keys
        self.fields[:n] = fields
        self.values[:n] = values
        self.starts[held] = indptr[:-1]
        self.end = self.live = n
        self.compactions += 1


class Rows(NamedTuple):
    """Rows of a CSR batch to store, one an impression (``which``: their numbers)."""

    indptr: np.ndarray
    keys: np.ndarray
    fields: np.ndarray
    values: np.ndarray
    which: range | list[int]

    def features(self) -> int:
        """How many features the rows have together."""
        which, indptr = self.which, self.indptr
        if isinstance(which, range) and which.step == 1:
            return int(indptr[which.stop] - indptr[which.start])
        picked = np.asarray(which, dtype=np.int64)
        return int((indptr[picked + 1] - indptr[picked]).sum())
