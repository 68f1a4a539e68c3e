"""Rows kept as spans of three parallel arrays (keys, fields, values), gathered into a CSR
batch in one pass: no index array as large as the output (numpy's ``repeat`` and fancy
indexing built one and read it back, three times)."""

from __future__ import annotations

import numpy as np

from ._jit import kernel


@kernel
def _gather(starts: np.ndarray, lengths: np.ndarray, keys: np.ndarray, fields: np.ndarray,
            values: np.ndarray, indptr: np.ndarray, out_keys: np.ndarray,
            out_fields: np.ndarray, out_values: np.ndarray) -> None:
    w = 0
    for r in range(starts.size):
        s = starts[r]
        for i in range(s, s + lengths[r]):
            out_keys[w] = keys[i]
            out_fields[w] = fields[i]
            out_values[w] = values[i]
            w += 1
        indptr[r + 1] = w


def gather_spans(starts: np.ndarray, lengths: np.ndarray, keys: np.ndarray,
                 fields: np.ndarray, values: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(indptr, keys, fields, values) of the rows ``keys[starts[r]:starts[r] + lengths[r]]``
    (and the same of ``fields`` and ``values``), in order. Spans must lie inside the
    arrays (the caller's, checked where they are made)."""
    starts = np.ascontiguousarray(starts, dtype=np.int64)
    lengths = np.ascontiguousarray(lengths, dtype=np.int64)
    n = int(lengths.sum())
    indptr = np.zeros(starts.size + 1, dtype=np.int64)
    out_keys = np.empty(n, dtype=keys.dtype)
    out_fields = np.empty(n, dtype=fields.dtype)
    out_values = np.empty(n, dtype=values.dtype)
    _gather(starts, lengths, keys, fields, values, indptr, out_keys, out_fields, out_values)
    return indptr, out_keys, out_fields, out_values
