"""xxHash64 of short tokens, inlined into reader kernels.

``hashing.xxh64`` is a compiled function; calling it from a kernel costs, besides the hash,
the reference counting of its array argument (about as much as hashing a 6-byte token).
``xxh64_small`` is the same algorithm for inputs under 32 bytes (xxh64's tail, which is all
of xxh64 for such inputs), inlined: bit-identical, tested against the ``xxhash`` package.
Kernels call ``xxh64`` for longer inputs.
"""

from __future__ import annotations

import numpy as np

from .._jit import inline_kernel
from ..hashing import P1, P2, P3, P4, P5, _read32, _read64, _rotl, _round


@inline_kernel
def xxh64_small(buf: np.ndarray, start: int, end: int, seed: np.uint64) -> np.uint64:
    """``hashing.xxh64`` for fewer than 32 bytes, inlined: bit-identical (the same steps
    as its tail) and without the call, whose reference counting costs as much as the hash.
    The caller calls ``xxh64`` for longer inputs."""
    h = seed + P5 + np.uint64(end - start)
    i = start
    while i + 8 <= end:
        h ^= _round(np.uint64(0), _read64(buf, i))
        h = _rotl(h, 27) * P1 + P4
        i += 8
    if i + 4 <= end:
        h ^= _read32(buf, i) * P1
        h = _rotl(h, 23) * P2 + P3
        i += 4
    while i < end:
        h ^= np.uint64(buf[i]) * P5
        h = _rotl(h, 11) * P1
        i += 1
    h ^= h >> np.uint64(33)
    h *= P2
    h ^= h >> np.uint64(29)
    h *= P3
    h ^= h >> np.uint64(32)
    return h
