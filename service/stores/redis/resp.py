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
def _put_digits(out: np.ndarray, p: int, tmp: np.ndarray, n: int) -> int:
    """Copy the ``n`` digits ``_digits`` left at the end of ``tmp`` to ``out[p]``, then
    CRLF."""
    for i in range(n):
        out[p + i] = tmp[tmp.size - n + i]
    p += n
    out[p] = 13
    out[p + 1] = 10
    return p + 2


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
    return _put_digits(out, p, tmp, n)


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


@inline_kernel
def _put_len(out: np.ndarray, p: int, marker: np.uint8, n: int, tmp: np.ndarray) -> int:
    """Write ``marker`` (``*`` or ``$``), ``n`` in decimal and CRLF at ``out[p]``."""
    out[p] = marker
    return _put_digits(out, p + 1, tmp, _digits(np.int64(n), tmp))


@kernel
def pack_keyed_commands(verb: np.ndarray, prefix: np.ndarray, groups: np.ndarray,
                        rows: np.ndarray, parts: np.ndarray, most: int, out: np.ndarray
                        ) -> tuple[int, int]:
    """One command ``verb <prefix><group> ...`` per run of equal ``groups`` (sorted), of at
    most ``most`` rows (a longer run takes several), each row's bytes split into bulk
    strings of ``parts`` bytes each (HSET: the key's 8 and the record's; HMGET: the key's
    8); returns (bytes written, commands). ``out`` holds ``packed_size``'s bytes."""
    tmp = np.empty(24, dtype=np.uint8)
    # each part's bulk header ("$8\r\n"), written once: the rows' loop only copies bytes
    heads = np.empty((parts.size, 24), dtype=np.uint8)
    head_len = np.empty(parts.size, dtype=np.int64)
    for k in range(parts.size):
        head_len[k] = _put_len(heads[k], 0, np.uint8(36), parts[k], tmp)
    n = groups.size
    p = 0
    commands = 0
    i = 0
    while i < n:
        g = groups[i]
        j = i
        while j < n and groups[j] == g and j - i < most:
            j += 1
        p = _put_len(out, p, np.uint8(42), 2 + (j - i) * parts.size, tmp)
        p = _put_len(out, p, np.uint8(36), verb.size, tmp)
        for k in range(verb.size):
            out[p + k] = verb[k]
        p += verb.size
        out[p] = 13
        out[p + 1] = 10
        p += 2
        d = _digits(np.int64(g), tmp)
        p = _put_len(out, p, np.uint8(36), prefix.size + d, tmp)
        d = _digits(np.int64(g), tmp)  # _put_len wrote over tmp's end: the digits again
        for k in range(prefix.size):
            out[p + k] = prefix[k]
        p = _put_digits(out, p + prefix.size, tmp, d)
        for r in range(i, j):
            c = 0
            for q in range(parts.size):
                for k in range(head_len[q]):
                    out[p + k] = heads[q, k]
                p += head_len[q]
                for k in range(parts[q]):
                    out[p + k] = rows[r, c + k]
                p += parts[q]
                c += parts[q]
                out[p] = 13
                out[p + 1] = 10
                p += 2
        commands += 1
        i = j
    return p, commands


def packed_size(verb: bytes, prefix: bytes, rows: np.ndarray, parts: int) -> int:
    """An upper bound of ``pack_keyed_commands``' output: each row may open a command."""
    n = rows.shape[0]
    return rows.size + n * (parts * 16 + 2 * 16 + len(verb) + len(prefix) + 40) + 64


def keyed_commands(verb: bytes, prefix: bytes, groups: np.ndarray, rows: np.ndarray,
                   parts: tuple[int, ...], most: int) -> tuple[bytes, int]:
    """``pack_keyed_commands`` from Python: (the commands, how many)."""
    out = np.empty(packed_size(verb, prefix, rows, len(parts)), dtype=np.uint8)
    n, commands = pack_keyed_commands(np.frombuffer(verb, dtype=np.uint8),
                                      np.frombuffer(prefix, dtype=np.uint8),
                                      np.ascontiguousarray(groups, dtype=np.int64),
                                      np.ascontiguousarray(rows, dtype=np.uint8),
                                      np.array(parts, dtype=np.int64), most, out)
    return out[:n].tobytes(), int(commands)
