"""Field names and ids, and the quadratic interactions between fields.

Field ids are small integers stored in the top bits of every key (see ``hashing``). Id 0 is
the bias. Fixed-schema formats (Criteo, Avazu) register their columns in order, so their ids
are the same in every process; formats whose fields appear as the data flows (JSON lines,
VW namespaces) register them in order of first appearance, and the registry is saved with
the model so a resumed model keeps them.

The last id (``OVERFLOW_FIELD``) is the overflow field: when formats that meet fields in
the data have used up every other id, later fields share it, each feature keyed by (field
name, value), so a registry never refuses data (a caller with a key sending a thousand junk
names cannot lock the others out). It is not found by name.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from .hashing import HASHED_FIELD, MAX_FIELDS, field_seed

BIAS = "bias"
LOOKUP_SIZE = 4096  # power of two, over twice MAX_FIELDS
#: the last id: once every other id is taken, the fields that come after share it (their
#: keys hash their name with the value), so learning never stops at a full registry
OVERFLOW_FIELD = MAX_FIELDS - 1
OVERFLOW_NAME = "(overflow)"
#: ``field_seed(OVERFLOW_NAME)``, a constant for kernels (tested)
OVERFLOW_SEED = np.uint64(0xB9B1563DB7ADAD4E)


class TooManyFieldsError(ValueError):
    pass


class FieldRegistry:
    """Names <-> ids of the fields a model has seen, plus interaction pairs."""

    def __init__(self, names: Iterable[str] = ()) -> None:
        self.names: list[str] = []
        self._ids: dict[str, int] = {}
        #: seed of each field id (xxHash64 of its name); a preallocated array kernels read
        self.seeds = np.zeros(MAX_FIELDS, dtype=np.uint64)
        #: open-addressing map from a name's seed to its id, for kernels of formats whose
        #: fields appear in the data (they register new fields themselves, see ``adopt``)
        self.lookup_keys = np.zeros(LOOKUP_SIZE, dtype=np.uint64)
        self.lookup_ids = np.full(LOOKUP_SIZE, -1, dtype=np.int64)
        self.pairs: list[tuple[int, int, int]] = []  # (field a, field b, pair field id)
        self._pair_cache: tuple[tuple[tuple[int, int, int], ...],
                                tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None
        self.add(BIAS)
        for name in names:
            self.add(name)

    def __len__(self) -> int:
        return len(self.names)

    def __contains__(self, name: object) -> bool:
        return name in self._ids

    @property
    def has_overflow(self) -> bool:
        """Whether the ids are used up and later fields share the overflow field."""
        return len(self.names) > OVERFLOW_FIELD

    def add(self, name: str) -> int:
        """Id of ``name``, registering it if new. ``OVERFLOW_NAME`` at the overflow id (a
        registry read back from a file or from the shared list) is the overflow field."""
        if name == OVERFLOW_NAME and len(self.names) == OVERFLOW_FIELD:
            return self.adopt_overflow(write_seed=True)
        fid = self._ids.get(name)
        if fid is not None:
            return fid
        if len(self.names) >= OVERFLOW_FIELD:
            raise TooManyFieldsError(f"more than {OVERFLOW_FIELD} distinct fields (at "
                                     f"{name[:80]!r})")
        fid = len(self.names)
        seed = field_seed(name)
        self.names.append(name)
        self._ids[name] = fid
        self.seeds[fid] = seed
        slot = int(seed) & (LOOKUP_SIZE - 1)
        while self.lookup_ids[slot] >= 0:
            slot = (slot + 1) & (LOOKUP_SIZE - 1)
        self.lookup_keys[slot] = seed
        self.lookup_ids[slot] = fid
        return fid

    def adopt(self, name: str) -> int:
        """Record the name of a field a kernel registered itself (seed and lookup entry
        already written); its id is the next one."""
        fid = len(self.names)
        if name in self._ids or self.seeds[fid] != field_seed(name):
            raise RuntimeError(f"field registry out of sync at {name!r}")
        self.names.append(name)
        self._ids[name] = fid
        return fid

    def adopt_overflow(self, write_seed: bool = False) -> int:
        """Open the overflow field at the last id (a kernel that opened it wrote its seed
        already; it gets no lookup entry: fields reach it only by finding the ids used up)."""
        if len(self.names) != OVERFLOW_FIELD:
            raise RuntimeError(f"the overflow field opens at id {OVERFLOW_FIELD}, not at "
                               f"{len(self.names)}")
        if write_seed:
            self.seeds[OVERFLOW_FIELD] = OVERFLOW_SEED
        self.names.append(OVERFLOW_NAME)
        return OVERFLOW_FIELD

    def id(self, name: str) -> int:
        return self._ids[name]

    def name(self, fid: int) -> str:
        if fid == HASHED_FIELD:
            return "*"
        return self.names[fid] if 0 <= fid < len(self.names) else f"#{fid}"

    def add_interactions(self, spec: Sequence[tuple[str, str]]) -> None:
        """Register quadratic interactions (pairs of field names, like VW's ``-q``)."""
        for a, b in spec:
            pair = self.add(f"{a}:{b}")
            ia, ib = self.add(a), self.add(b)
            if (ia, ib, pair) not in self.pairs:
                self.pairs.append((ia, ib, pair))

    def pair_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Interaction pairs as kernel arrays: field a, field b, pair field id (built again
        only when ``pairs`` changed: every parsed body asks for them)."""
        pairs = tuple(self.pairs)
        cached = self._pair_cache
        if cached is not None and cached[0] == pairs:
            return cached[1]
        arr = np.array(pairs, dtype=np.int64).reshape(-1, 3)
        out = (np.ascontiguousarray(arr[:, 0]), np.ascontiguousarray(arr[:, 1]),
               np.ascontiguousarray(arr[:, 2]))
        self._pair_cache = (pairs, out)
        return out

    def to_dict(self) -> dict[str, object]:
        return {"names": list(self.names), "pairs": [list(p) for p in self.pairs]}

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> FieldRegistry:
        names = list(data["names"])  # type: ignore[call-overload]
        if not names or names[0] != BIAS:
            raise ValueError("a field registry starts with the bias field")
        reg = cls(names[1:])
        reg.pairs = [tuple(p) for p in data.get("pairs", [])]  # type: ignore[attr-defined,misc]
        return reg


def parse_interactions(text: str) -> list[tuple[str, str]]:
    """``"C1:C2,C3:C14"`` -> ``[("C1", "C2"), ("C3", "C14")]``."""
    pairs: list[tuple[str, str]] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        a, sep, b = part.partition(":")
        if not sep or not a or not b or ":" in b:
            raise ValueError(f"--interactions: {part!r} is not of the form FIELD:FIELD")
        pairs.append((a, b))
    return pairs
