"""Names of the features a model stores, so that people can read what it learned.

Keys are hashes; the name of a key is recorded once, when the learner stores the key for
the first time (the learner reports those feature positions), from the raw bytes the batch
came from. The store is append-only: a token costs about 23 bytes plus its bytes.
Interaction names keep the keys of their two features and are resolved when shown.
"""

from __future__ import annotations

import json

import numpy as np

from ._jit import kernel
from .batch import Batch
from .fields import FieldRegistry
from .hashing import HASHED_FIELD
from .readers.rows import KIND_BIAS, KIND_BIN, KIND_JSON_ESCAPED, KIND_NUMERIC, KIND_PAIR


@kernel
def _record(new_pos: np.ndarray, keys: np.ndarray, fields: np.ndarray, refs: np.ndarray,
            kinds: np.ndarray, buf: np.ndarray, e_key: np.ndarray, e_off: np.ndarray,
            e_field: np.ndarray, e_kind: np.ndarray, arena: np.ndarray,
            counts: np.ndarray) -> None:
    n = counts[0]
    used = counts[1]
    for i in range(new_pos.size):
        j = new_pos[i]
        kind = kinds[j]
        e_key[n] = keys[j]
        e_field[n] = fields[j]
        e_kind[n] = kind
        if kind >= 0 or kind <= KIND_JSON_ESCAPED:
            length = kind if kind >= 0 else KIND_JSON_ESCAPED - kind
            start = refs[j]
            e_off[n] = used
            for b in range(length):
                arena[used + b] = buf[start + b]
            used += length
        elif kind == KIND_PAIR:
            e_off[n] = used
            ka = keys[refs[j] >> 32]
            kb = keys[refs[j] & 0xFFFFFFFF]
            for b in range(8):
                arena[used + b] = np.uint8((ka >> np.uint64(8 * b)) & np.uint64(255))
                arena[used + 8 + b] = np.uint8((kb >> np.uint64(8 * b)) & np.uint64(255))
            used += 16
        else:  # bias, numeric, bin: the payload fits in the offset itself
            e_off[n] = refs[j]
        n += 1
    counts[0] = n
    counts[1] = used


@kernel
def _payload_bytes(new_pos: np.ndarray, kinds: np.ndarray) -> int:
    """The arena bytes ``_record`` writes for the features at ``new_pos``."""
    total = 0
    for i in range(new_pos.size):
        kind = kinds[new_pos[i]]
        if kind >= 0:
            total += kind
        elif kind <= KIND_JSON_ESCAPED:
            total += KIND_JSON_ESCAPED - kind
        elif kind == KIND_PAIR:
            total += 16
    return total


def _grow(arr: np.ndarray, need: int) -> np.ndarray:
    if need <= arr.size:
        return arr
    out = np.empty(max(need, 2 * arr.size), dtype=arr.dtype)
    out[: arr.size] = arr
    return out


class NameStore:
    """Append-only log of (key, field, kind, name bytes)."""

    def __init__(self) -> None:
        self.e_key = np.empty(1024, dtype=np.uint64)
        self.e_off = np.empty(1024, dtype=np.int64)
        self.e_field = np.empty(1024, dtype=np.int16)
        self.e_kind = np.empty(1024, dtype=np.int32)
        self.arena = np.empty(1 << 16, dtype=np.uint8)
        self.counts = np.zeros(2, dtype=np.int64)  # entries, arena bytes used
        self._index: dict[int, int] | None = None

    def __len__(self) -> int:
        return int(self.counts[0])

    @property
    def nbytes(self) -> int:
        n, used = (int(x) for x in self.counts)
        return n * (8 + 8 + 2 + 4) + used

    def record(self, batch: Batch, new_pos: np.ndarray) -> None:
        """Record the names of the features at ``new_pos`` (keys stored for the first time)."""
        if new_pos.size == 0:
            return
        if batch.refs is None or batch.kinds is None or batch.buf is None:
            # arrays built in code (tests, tools) carry no names: record keys alone
            kinds = np.full(batch.nnz, KIND_NUMERIC, dtype=np.int32)
            refs = np.zeros(batch.nnz, dtype=np.int64)
            buf = np.zeros(1, dtype=np.uint8)
        else:
            kinds, refs, buf = batch.kinds, batch.refs, batch.buf
        # (a kernel: numpy's nested where made three temporaries of the new positions per
        # batch, and on syn1m most rows bring new keys)
        payload = _payload_bytes(new_pos, kinds)
        n = len(self)
        need = n + new_pos.size
        self.e_key = _grow(self.e_key, need)
        self.e_off = _grow(self.e_off, need)
        self.e_field = _grow(self.e_field, need)
        self.e_kind = _grow(self.e_kind, need)
        self.arena = _grow(self.arena, int(self.counts[1]) + int(payload))
        _record(new_pos, batch.keys, batch.fields, refs, kinds, buf, self.e_key, self.e_off,
                self.e_field, self.e_kind, self.arena, self.counts)
        self._index = None

    def _lookup(self, key: int) -> int:
        if self._index is None:
            n = len(self)
            self._index = {int(k): i for i, k in enumerate(self.e_key[:n].tolist())}
        return self._index.get(int(key), -1)

    def describe(self, key: int, registry: FieldRegistry) -> tuple[str, str]:
        """(field name, value name) of ``key``; unknown keys show their hex."""
        i = self._lookup(key)
        if i < 0:
            fid = (int(key) >> 54) - 1
            return (registry.name(fid) if 0 <= fid <= HASHED_FIELD else "?"), f"#{key:016x}"
        fid = int(self.e_field[i])
        kind = int(self.e_kind[i])
        off = int(self.e_off[i])
        field = registry.name(fid)
        if kind == KIND_BIAS:
            return field, ""
        if kind == KIND_NUMERIC:
            return field, "(value)"
        if kind == KIND_BIN:
            return field, f"log-bin {off}"
        if kind == KIND_PAIR:
            raw = self.arena[off: off + 16].tobytes()
            ka, kb = int.from_bytes(raw[:8], "little"), int.from_bytes(raw[8:], "little")
            return field, f"{self.describe(ka, registry)[1]}^{self.describe(kb, registry)[1]}"
        length = kind if kind >= 0 else KIND_JSON_ESCAPED - kind
        text = self.arena[off: off + length].tobytes().decode("utf-8", "replace")
        if kind < 0:
            text = json.loads(f'"{text}"')
        return field, text if text else "(missing)"

    def state(self) -> dict[str, np.ndarray]:
        n, used = (int(x) for x in self.counts)
        return {"names_key": self.e_key[:n].copy(), "names_off": self.e_off[:n].copy(),
                "names_field": self.e_field[:n].copy(), "names_kind": self.e_kind[:n].copy(),
                "names_arena": self.arena[:used].copy()}

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray]) -> NameStore:
        store = cls()
        n = int(state["names_key"].size)
        used = int(state["names_arena"].size)
        store.e_key = _grow(store.e_key, n)
        store.e_off = _grow(store.e_off, n)
        store.e_field = _grow(store.e_field, n)
        store.e_kind = _grow(store.e_kind, n)
        store.arena = _grow(store.arena, used)
        store.e_key[:n] = state["names_key"]
        store.e_off[:n] = state["names_off"]
        store.e_field[:n] = state["names_field"]
        store.e_kind[:n] = state["names_kind"]
        store.arena[:used] = state["names_arena"]
        store.counts[:] = (n, used)
        return store
