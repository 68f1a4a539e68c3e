"""RESP (the Redis protocol) written by hand: whole commands packed into one buffer, so a
flush of thousands of coordinates costs one ``sendall`` instead of redis-py's per-argument
Python work (DESIGN.md: 8-9 us per pipelined command in redis-py, about 1 us hand-packed).
"""

from __future__ import annotations

import numpy as np

from ftrl_core._jit import inline_kernel, kernel


def command(*args: bytes | str | int) -> bytes:
    """One RESP command from a few arguments (Python; for the small fixed parts)."""
    parts = [b"*%d\r\n" % len(args)]
    for a in args:
        b = a if isinstance(a, bytes) else str(a).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(parts)


def array_header(n: int) -> bytes:
    return b"*%d\r\n" % n


@inline_kernel
def _digits(v: np.int64, tmp: np.ndarray) -> int:
    """Decimal digits of ``v`` written backwards at the end of ``tmp``; returns their count
    (the sign included)."""
    neg = v < 0
    # magnitude as uint64: -(-2^63) does not fit an int64
    u = np.uint64(-(v + 1)) + np.uint64(1) if neg else np.uint64(v)
    n = 0
    while True:
        tmp[tmp.size - 1 - n] = np.uint8(48) + np.uint8(u % np.uint64(10))
        u //= np.uint64(10)
        n += 1
        if u == np.uint64(0):
            break
    if neg:
        tmp[tmp.size - 1 - n] = np.uint8(45)
        n += 1
    return n


@inline_kernel
def put_int_bulk(out: np.ndarray, p: int, v: np.int64, prefix: np.uint8, tmp: np.ndarray
                 ) -> int:
    """Write ``v`` as a RESP bulk string (``prefix`` byte first unless 0) at ``out[p]``."""
    n = _digits(v, tmp)
    length = n + (1 if prefix != 0 else 0)
    out[p] = 36  # '$'
    p += 1
    if length >= 10:
        out[p] = 48 + length // 10
        p += 1
    out[p] = 48 + length % 10
    out[p + 1] = 13
    out[p + 2] = 10
    p += 3
    if prefix != 0:
        out[p] = prefix
        p += 1
    for i in range(n):
        out[p + i] = tmp[tmp.size - n + i]
    p += n
    out[p] = 13
    out[p + 1] = 10
    return p + 2


@inline_kernel
def put_bulk(out: np.ndarray, p: int, word: np.ndarray) -> int:
    """Write the bytes ``word`` (< 10 of them) as a RESP bulk string."""
    out[p] = 36
    out[p + 1] = 48 + word.size
    out[p + 2] = 13
    out[p + 3] = 10
    p += 4
    for i in range(word.size):
        out[p + i] = word[i]
    p += word.size
    out[p] = 13
    out[p + 1] = 10
    return p + 2


@kernel
def pack_groups(groups: np.ndarray, rows: np.ndarray, out: np.ndarray) -> int:
    """[group u32 LE][count u32 LE] then the rows of each run of equal ``groups`` (sorted);
    returns the bytes written."""
    n = groups.size
    width = rows.shape[1]
    p = 0
    i = 0
    while i < n:
        g = groups[i]
        j = i
        while j < n and groups[j] == g:
            j += 1
        c = j - i
        for k in range(4):
            out[p + k] = np.uint8((g >> (8 * k)) & 0xFF)
            out[p + 4 + k] = np.uint8((c >> (8 * k)) & 0xFF)
        p += 8
        for r in range(i, j):
            for k in range(width):
                out[p + k] = rows[r, k]
            p += width
        i = j
    return p
