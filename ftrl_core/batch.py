"""The CSR batch every reader produces and every learner consumes."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ._jit import kernel
from .hashing import field_of_keys
from .rowmerge import dedupe_row


@dataclass
class Batch:
    """Rows in compressed sparse row form.

    ``indptr`` (n + 1), per feature ``keys``/``fields``/``values``, per row ``labels``
    (NaN where the row has none) and importance ``weights``. Keys within a row are distinct.
    ``refs``/``kinds``/``buf`` locate each feature's name in the raw bytes it came from.
    """

    indptr: np.ndarray
    keys: np.ndarray
    fields: np.ndarray
    values: np.ndarray
    labels: np.ndarray
    weights: np.ndarray
    refs: np.ndarray | None = None
    kinds: np.ndarray | None = None
    buf: np.ndarray | None = None
    #: line number (1-based) of each row in its source, when it came from a file
    lines: np.ndarray | None = None
    extra: dict[str, object] = field(default_factory=dict)
    #: each row's initial margin (VW's "initial prediction"), None: zeros
    base: np.ndarray | None = None

    @property
    def rows(self) -> int:
        return int(self.indptr.size - 1)

    @property
    def nnz(self) -> int:
        return int(self.indptr[-1])

    def slice(self, start: int, stop: int) -> Batch:
        """Rows ``start:stop`` (feature arrays are views; indptr is rebased)."""
        a, b = int(self.indptr[start]), int(self.indptr[stop])
        return Batch(
            indptr=self.indptr[start:stop + 1] - a,
            keys=self.keys[a:b],
            fields=self.fields[a:b],
            values=self.values[a:b],
            labels=self.labels[start:stop],
            weights=self.weights[start:stop],
            refs=None if self.refs is None else self.refs[a:b],
            kinds=None if self.kinds is None else self.kinds[a:b],
            buf=self.buf,
            lines=None if self.lines is None else self.lines[start:stop],
            extra={k: v[start:stop] if isinstance(v, np.ndarray) and v.shape[:1] == (self.rows,)
                   else v for k, v in self.extra.items()},
            base=None if self.base is None else self.base[start:stop],
        )

    @classmethod
    def from_arrays(
        cls,
        indptr: np.ndarray,
        keys: np.ndarray,
        values: np.ndarray,
        labels: np.ndarray | None = None,
        weights: np.ndarray | None = None,
        fields: np.ndarray | None = None,
    ) -> Batch:
        """A batch from raw CSR arrays: repeated keys within a row are merged (summed)."""
        indptr = np.ascontiguousarray(indptr, dtype=np.int64)
        keys = np.array(keys, dtype=np.uint64)
        values = np.array(values, dtype=np.float64)
        n = indptr.size - 1
        if indptr[0] != 0 or np.any(np.diff(indptr) < 0) or indptr[-1] != keys.size:
            raise ValueError("indptr must start at 0, not decrease, and end at len(keys)")
        if values.size != keys.size:
            raise ValueError("keys and values differ in length")
        if np.any(keys == 0):
            raise ValueError("key 0 is reserved")
        f = field_of_keys(keys) if fields is None else np.array(fields, dtype=np.int64)
        f32 = f.astype(np.int32)
        lab = np.full(n, np.nan) if labels is None else np.array(labels, dtype=np.float64)
        w = np.ones(n) if weights is None else np.array(weights, dtype=np.float64)
        refs = np.zeros(keys.size, dtype=np.int64)
        kinds = np.zeros(keys.size, dtype=np.int32)
        new_indptr = np.empty_like(indptr)
        _merge_rows(indptr, keys, f32, values, refs, kinds, new_indptr)
        nnz = int(new_indptr[-1])
        return cls(new_indptr, keys[:nnz], f32[:nnz], values[:nnz], lab, w)


@kernel
def _merge_rows(indptr: np.ndarray, keys: np.ndarray, fields: np.ndarray, values: np.ndarray,
                refs: np.ndarray, kinds: np.ndarray, out_indptr: np.ndarray) -> None:
    longest = 1
    for r in range(indptr.size - 1):
        longest = max(longest, indptr[r + 1] - indptr[r])
    size = 1
    while size < 2 * longest:
        size *= 2
    stamp = np.zeros(size, dtype=np.int64)
    spos = np.zeros(size, dtype=np.int64)
    hashes = np.zeros(longest, dtype=np.uint64)
    w = 0
    out_indptr[0] = 0
    for r in range(indptr.size - 1):
        a = indptr[r]
        b = indptr[r + 1]
        # compact row r to start at w, then merge its duplicates
        for i in range(a, b):
            keys[w + i - a] = keys[i]
            fields[w + i - a] = fields[i]
            values[w + i - a] = values[i]
        end = dedupe_row(keys, fields, values, refs, kinds, hashes, w, w, w + b - a, stamp, spos,
                      r + 1)
        w = end
        out_indptr[r + 1] = w
