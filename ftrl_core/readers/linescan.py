"""Finding a byte (a line's newline, a column's tab) eight bytes at a time.

Reader kernels look for each line's newline before they parse its columns (a line that
does not end in the buffer is left for the next one), then for each column's end. Byte by
byte those searches were a fifth of the Criteo parse.
"""

from __future__ import annotations

import numpy as np
from numba.cpython.unsafe.numbers import trailing_zeros

from .._jit import inline_kernel
from ..hashing import _read64

_ONES = np.uint64(0x0101010101010101)
_HIGH = np.uint64(0x8080808080808080)


@inline_kernel
def find_byte(buf: np.ndarray, pos: int, end: int, byte: int) -> int:
    """Offset of the first ``byte`` in ``buf[pos:end]``, or ``end`` if there is none."""
    pattern = np.uint64(byte) * _ONES
    while pos + 8 <= end:
        x = _read64(buf, pos) ^ pattern
        # the high bit of each zero byte of x (a match in the word); a borrow may flag
        # bytes after the first zero, never one before it, so the lowest flag is exact
        m = (x - _ONES) & ~x & _HIGH
        if m != np.uint64(0):
            return pos + (int(trailing_zeros(m)) >> 3)  # type: ignore[call-arg]
        pos += 8
    while pos < end and buf[pos] != byte:
        pos += 1
    return pos


@inline_kernel
def find_newline(buf: np.ndarray, pos: int, end: int) -> int:
    """Offset of the first newline in ``buf[pos:end]``, or ``end`` if there is none."""
    return find_byte(buf, pos, end, 10)
