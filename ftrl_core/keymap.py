"""A map from 64-bit keys to int64 values, with no Python object per entry.

The state table's open addressing (``table.StateTable``, two words a record: the key, then
the value's bits), driven a request at a time by compiled loops. The join keeps its ids
here (id key -> the impression's slot, or a mark for a closed id): in a dict, hundreds of
thousands of ids cost an int object and a dict entry each, and each insert, overwrite and
delete waited on two or three cache misses (the index, the entry, the key's object).

Key 0 marks an empty record, so key 0 is stored as ``STAND_IN`` (2^64 - 1): the two keys
are one key to the map. Callers whose keys are hashes accept that as one more collision
(probability 2^-64 a key).
"""

from __future__ import annotations

import numpy as np

from ._jit import inline_kernel, kernel
from .table import StateTable, delete_slot, find_or_insert, find_slot

#: what ``get`` returns for an absent key
ABSENT = -(1 << 63)
STAND_IN = np.uint64(0xFFFF_FFFF_FFFF_FFFF)
STRIDE = 2
_NO_AGES = np.zeros(0, dtype=np.int64)


@inline_kernel
def _stored(key: np.uint64) -> np.uint64:
    return key if key != np.uint64(0) else STAND_IN


@kernel
def _get(words: np.ndarray, values: np.ndarray, capacity: int, key: np.uint64) -> int:
    s = find_slot(words, STRIDE, capacity, _stored(key))
    return values[s * STRIDE + 1] if s >= 0 else ABSENT


@kernel
def _get_many(words: np.ndarray, values: np.ndarray, capacity: int, keys: np.ndarray,
              out: np.ndarray) -> None:
    for i in range(keys.size):
        s = find_slot(words, STRIDE, capacity, _stored(keys[i]))
        out[i] = values[s * STRIDE + 1] if s >= 0 else ABSENT


@kernel
def _add_new(words: np.ndarray, values: np.ndarray, capacity: int, meta: np.ndarray,
             keys: np.ndarray, new: np.ndarray, ages: np.ndarray) -> bool:
    """Insert every key with its value if none is present (repeats among them included);
    else change nothing and return False."""
    for i in range(keys.size):
        s = find_or_insert(words, STRIDE, capacity, _stored(keys[i]), meta)
        if s >= 0:  # present: take back the ones inserted
            for j in range(i - 1, -1, -1):
                t = find_slot(words, STRIDE, capacity, _stored(keys[j]))
                delete_slot(words, STRIDE, capacity, t, ages, meta)
            return False
        values[(-1 - s) * STRIDE + 1] = new[i]
    return True


@kernel
def _put(words: np.ndarray, values: np.ndarray, capacity: int, meta: np.ndarray,
         key: np.uint64, value: int) -> None:
    s = find_or_insert(words, STRIDE, capacity, _stored(key), meta)
    values[(s if s >= 0 else -1 - s) * STRIDE + 1] = value


@kernel
def _set_present(words: np.ndarray, values: np.ndarray, capacity: int, keys: np.ndarray,
                 value: int) -> int:
    """Set the value of each key present; the count of keys absent (left so)."""
    absent = 0
    for i in range(keys.size):
        s = find_slot(words, STRIDE, capacity, _stored(keys[i]))
        if s >= 0:
            values[s * STRIDE + 1] = value
        else:
            absent += 1
    return absent


@kernel
def _remove(words: np.ndarray, capacity: int, meta: np.ndarray, key: np.uint64,
            ages: np.ndarray) -> bool:
    s = find_slot(words, STRIDE, capacity, _stored(key))
    if s < 0:
        return False
    delete_slot(words, STRIDE, capacity, s, ages, meta)
    return True


@kernel
def _delete(words: np.ndarray, capacity: int, meta: np.ndarray, keys: np.ndarray,
            ages: np.ndarray) -> int:
    """Delete each key present; the count of keys absent."""
    absent = 0
    for i in range(keys.size):
        s = find_slot(words, STRIDE, capacity, _stored(keys[i]))
        if s >= 0:
            delete_slot(words, STRIDE, capacity, s, ages, meta)
        else:
            absent += 1
    return absent


def _keys(keys: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(keys, dtype=np.uint64)


class KeyMap:
    """uint64 key -> int64 value. Batch calls take arrays of keys (as uint64); one-key calls
    take ints (a call costs about a microsecond: for the odd key, not for a request's)."""

    __slots__ = ("table", "values")

    def __init__(self) -> None:
        self.table = StateTable(STRIDE)
        self.values = self.table.words.view(np.int64)

    def __len__(self) -> int:
        return self.table.size

    def nbytes(self) -> int:
        return self.table.nbytes

    def _room(self, extra: int) -> None:
        capacity = self.table.capacity
        self.table.ensure_room(extra)
        if self.table.capacity != capacity:
            self.values = self.table.words.view(np.int64)

    def get(self, key: int) -> int:
        """The value of ``key``, ``ABSENT`` if absent."""
        t = self.table
        return int(_get(t.words, self.values, t.capacity, np.uint64(key)))

    def get_many(self, keys: np.ndarray) -> np.ndarray:
        """The value of each key, ``ABSENT`` where absent."""
        out = np.empty(keys.size, dtype=np.int64)
        t = self.table
        _get_many(t.words, self.values, t.capacity, _keys(keys), out)
        return out

    def put(self, key: int, value: int) -> None:
        self._room(1)
        t = self.table
        _put(t.words, self.values, t.capacity, t.meta, np.uint64(key), value)

    def add_new(self, keys: np.ndarray, values: np.ndarray) -> bool:
        """Insert ``keys`` (with ``values``) if none is present and none repeats; else
        change nothing and return False."""
        self._room(keys.size)
        t = self.table
        return bool(_add_new(t.words, self.values, t.capacity, t.meta, _keys(keys),
                             np.ascontiguousarray(values, dtype=np.int64), _NO_AGES))

    def set_present(self, keys: np.ndarray, value: int) -> int:
        """Set the value of each key of ``keys`` present; how many were absent."""
        t = self.table
        return int(_set_present(t.words, self.values, t.capacity, _keys(keys), value))

    def delete(self, keys: np.ndarray) -> int:
        """Delete ``keys``; how many were absent."""
        t = self.table
        return int(_delete(t.words, t.capacity, t.meta, _keys(keys), _NO_AGES))

    def remove(self, key: int) -> bool:
        """Delete ``key``; whether it was present."""
        t = self.table
        return bool(_remove(t.words, t.capacity, t.meta, np.uint64(key), _NO_AGES))

    def items(self) -> tuple[np.ndarray, np.ndarray]:
        """(keys, values) of every entry, in no particular order (key 0 shows as
        ``STAND_IN``)."""
        slots = self.table.live_slots()
        return self.table.words[slots * STRIDE], self.values[slots * STRIDE + 1]
