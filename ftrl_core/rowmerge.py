"""Merging repeated keys within a row, shared by the readers and ``Batch.from_arrays``.

The dense algorithm sees one coordinate per key with the summed value, so the sparse path
must merge repeats before a learner sees the row.
"""

from __future__ import annotations

import numpy as np

from ._jit import inline_kernel
from .hashing import mix64


@inline_kernel
def dedupe_row(
    keys: np.ndarray, fields: np.ndarray, values: np.ndarray, refs: np.ndarray,
    kinds: np.ndarray, hashes: np.ndarray, row_start: int, start: int, end: int,
    stamp: np.ndarray, spos: np.ndarray, gen: int,
) -> int:
    """Merge repeated keys in ``[start, end)`` (values summed, first position kept)."""
    mask = np.uint64(stamp.size - 1)
    w = start
    for i in range(start, end):
        k = keys[i]
        s = np.int64(mix64(k) & mask)
        while True:
            if stamp[s] != gen:
                stamp[s] = gen
                spos[s] = w
                keys[w] = k
                fields[w] = fields[i]
                values[w] = values[i]
                refs[w] = refs[i]
                kinds[w] = kinds[i]
                hashes[w - row_start] = hashes[i - row_start]
                w += 1
                break
            if keys[spos[s]] == k:
                values[spos[s]] += values[i]
                break
            s = np.int64((np.uint64(s) + np.uint64(1)) & mask)
    return w
