"""JSON lexing over raw bytes inside kernels: strings, literals, whitespace, skipping values.

Strings are validated as msgspec validates them (well-formed UTF-8, no raw control bytes,
known escapes, surrogate pairs whole); a string with escapes is decoded into a scratch
buffer, one without stays where it is, so hashing the common case copies nothing.
"""

from __future__ import annotations

import numpy as np
from numba.cpython.unsafe.numbers import trailing_zeros

from .._jit import inline_kernel, kernel
from ..hashing import _read64
from .dynfields import utf8_len
from .numparse import NUM_SYNTAX, parse_number

#: byte classes inside a string
C_PLAIN = 0
C_QUOTE = 1
C_BACKSLASH = 2
C_CONTROL = 3
C_HIGH = 4

MAX_DEPTH = 1024


def string_classes() -> np.ndarray:
    cls = np.zeros(256, dtype=np.uint8)
    cls[:0x20] = C_CONTROL
    cls[ord('"')] = C_QUOTE
    cls[ord("\\")] = C_BACKSLASH
    cls[0x80:] = C_HIGH
    return cls


def whitespace(newline: bool) -> np.ndarray:
    """JSON whitespace; without the newline for line-delimited JSON."""
    ws = np.zeros(256, dtype=np.uint8)
    for c in b" \t\r" + (b"\n" if newline else b""):
        ws[c] = 1
    return ws


@inline_kernel
def skip_ws(buf: np.ndarray, p: int, lim: int, wst: np.ndarray) -> int:
    # (every JSON whitespace byte is <= 32: most calls end at the first compare)
    while p < lim and buf[p] <= 32 and wst[buf[p]]:
        p += 1
    return p


@inline_kernel
def at(buf: np.ndarray, p: int, lim: int) -> int:
    """The byte at ``p``, or 0 (never valid JSON there) past the limit."""
    return int(buf[p]) if p < lim else 0


@inline_kernel
def _hex4(buf: np.ndarray, p: int, lim: int) -> int:
    if p + 4 > lim:
        return -1
    v = 0
    for i in range(4):
        c = buf[p + i]
        if 48 <= c <= 57:
            d = c - 48
        elif 97 <= c <= 102:
            d = c - 87
        elif 65 <= c <= 70:
            d = c - 55
        else:
            return -1
        v = v * 16 + d
    return v


#: ``read_string`` needs ``read_string_full`` for this string
SLOW = -2


@inline_kernel
def read_string(buf: np.ndarray, p: int, lim: int, cls: np.ndarray) -> tuple[int, int]:
    """Read a plain ASCII string whose body starts at ``p`` (after the opening quote).

    Returns (position after the closing quote, -1: the body is ``buf[p:end - 1]`` as is),
    (-1, -1) if unterminated or (SLOW, -1) if it holds escapes or non-ASCII bytes: then call
    ``read_string_full``. The call is the caller's, not made in here: a call with array
    arguments inside an inlined helper costs reference counting on every use (it doubled
    the time per token).
    """
    while p < lim:
        k = cls[buf[p]]
        if k == C_PLAIN:
            p += 1
        elif k == C_QUOTE:
            return p + 1, -1
        else:
            return SLOW, -1
    return -1, -1


_ONES = np.uint64(0x0101010101010101)
_HIGH = np.uint64(0x8080808080808080)
_QUOTES = np.uint64(0x2222222222222222)
_BACKSLASHES = np.uint64(0x5C5C5C5C5C5C5C5C)
_SPACES = np.uint64(0x2020202020202020)


@inline_kernel
def _special(x: np.uint64) -> np.uint64:
    """The high bit of each byte of ``x`` (8 string bytes, little-endian) that is a quote,
    a backslash, a control byte or non-ASCII. Only the lowest set bit is exact (a borrow
    may flag bytes after it), which is all the caller uses."""
    q = x ^ _QUOTES
    b = x ^ _BACKSLASHES
    return ((q - _ONES) & ~q | (b - _ONES) & ~b | (x - _SPACES) | x) & _HIGH


@inline_kernel
def read_plain(buf: np.ndarray, p: int, lim: int) -> tuple[int, int]:
    """``read_string`` eight bytes at a time (no class table): the same results."""
    while p + 8 <= lim:
        m = _special(_read64(buf, p))
        if m != np.uint64(0):
            p += int(trailing_zeros(m)) >> 3  # type: ignore[call-arg]
            if buf[p] == 34:
                return p + 1, -1
            return SLOW, -1
        p += 8
    while p < lim:
        c = buf[p]
        if c == 34:
            return p + 1, -1
        if c < 32 or c == 92 or c >= 128:
            return SLOW, -1
        p += 1
    return -1, -1


@inline_kernel
def same_key(buf: np.ndarray, a: int, b: int, n: int, lim: int) -> bool:
    """Whether the ``n`` bytes at ``b`` and the quote after them equal those at ``a``
    (``a < b``, both within ``lim``): one masked 8-byte compare for keys under 8 bytes."""
    if n < 7 and b + 8 <= lim:
        mask = (np.uint64(1) << np.uint64(8 * n + 8)) - np.uint64(1)
        return ((_read64(buf, a) ^ _read64(buf, b)) & mask) == np.uint64(0)
    if b + n >= lim or buf[b + n] != 34:
        return False
    return same_bytes(buf, a, b, n)


@inline_kernel
def same_bytes(buf: np.ndarray, a: int, b: int, n: int) -> bool:
    """Whether ``buf[a:a + n] == buf[b:b + n]``, eight bytes at a time."""
    i = 0
    while i + 8 <= n:
        if _read64(buf, a + i) != _read64(buf, b + i):
            return False
        i += 8
    while i < n:
        if buf[a + i] != buf[b + i]:
            return False
        i += 1
    return True


@kernel
def read_string_full(buf: np.ndarray, p: int, lim: int, cls: np.ndarray,
                     scratch: np.ndarray) -> tuple[int, int]:
    """Read any string whose body starts at ``p``: (position after the closing quote or -1
    if malformed, decoded length in ``scratch``, or -1 if the body has no escapes)."""
    start = p
    while p < lim:
        k = cls[buf[p]]
        if k == C_PLAIN:
            p += 1
        elif k == C_QUOTE:
            return p + 1, -1
        elif k == C_HIGH:
            m = utf8_len(buf, p, lim)
            if m == 0:
                return -1, -1
            p += m
        elif k == C_CONTROL:
            return -1, -1
        else:
            break
    if p >= lim:
        return -1, -1
    n = p - start
    for i in range(n):
        scratch[i] = buf[start + i]
    while p < lim:
        c = buf[p]
        k = cls[c]
        if k == C_PLAIN:
            scratch[n] = c
            n += 1
            p += 1
            continue
        if k == C_QUOTE:
            return p + 1, n
        if k == C_HIGH:
            m = utf8_len(buf, p, lim)
            if m == 0:
                return -1, -1
            for j in range(m):
                scratch[n + j] = buf[p + j]
            n += m
            p += m
            continue
        if k == C_CONTROL or p + 1 >= lim:
            return -1, -1
        e = buf[p + 1]
        p += 2
        if e == 34 or e == 92 or e == 47:  # " \ /
            scratch[n] = e
        elif e == 98:
            scratch[n] = 8
        elif e == 102:
            scratch[n] = 12
        elif e == 110:
            scratch[n] = 10
        elif e == 114:
            scratch[n] = 13
        elif e == 116:
            scratch[n] = 9
        elif e == 117:  # \uXXXX
            cp = _hex4(buf, p, lim)
            if cp < 0 or 0xDC00 <= cp <= 0xDFFF:
                return -1, -1
            p += 4
            if 0xD800 <= cp <= 0xDBFF:
                if p + 2 > lim or buf[p] != 92 or buf[p + 1] != 117:
                    return -1, -1
                lo = _hex4(buf, p + 2, lim)
                if lo < 0xDC00 or lo > 0xDFFF:
                    return -1, -1
                p += 6
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00)
            if cp < 0x80:
                scratch[n] = cp
            elif cp < 0x800:
                scratch[n] = 0xC0 | (cp >> 6)
                scratch[n + 1] = 0x80 | (cp & 0x3F)
                n += 1
            elif cp < 0x10000:
                scratch[n] = 0xE0 | (cp >> 12)
                scratch[n + 1] = 0x80 | ((cp >> 6) & 0x3F)
                scratch[n + 2] = 0x80 | (cp & 0x3F)
                n += 2
            else:
                scratch[n] = 0xF0 | (cp >> 18)
                scratch[n + 1] = 0x80 | ((cp >> 12) & 0x3F)
                scratch[n + 2] = 0x80 | ((cp >> 6) & 0x3F)
                scratch[n + 3] = 0x80 | (cp & 0x3F)
                n += 3
        else:
            return -1, -1
        n += 1
    return -1, -1


@inline_kernel
def literal(buf: np.ndarray, p: int, lim: int) -> int:
    """Position after ``true``/``false``/``null`` at ``p``, or -1."""
    c = buf[p]
    if c == 116:  # true
        word = (116, 114, 117, 101, 0)
    elif c == 102:  # false
        word = (102, 97, 108, 115, 101)
    elif c == 110:  # null
        word = (110, 117, 108, 108, 0)
    else:
        return -1
    n = 5 if c == 102 else 4
    if p + n > lim:
        return -1
    for i in range(n):
        if buf[p + i] != word[i]:
            return -1
    return p + n


@inline_kernel
def non_finite(buf: np.ndarray, p: int, lim: int) -> int:
    """Position after ``NaN``, ``Infinity`` or ``-Infinity`` at ``p`` (not JSON, but what
    Python's json writes for non-finite floats), or -1."""
    if p + 3 <= lim and buf[p] == 78 and buf[p + 1] == 97 and buf[p + 2] == 78:
        return p + 3
    q = p + 1 if p < lim and buf[p] == 45 else p
    word = (73, 110, 102, 105, 110, 105, 116, 121)  # Infinity
    if q + 8 > lim:
        return -1
    for i in range(8):
        if buf[q + i] != word[i]:
            return -1
    return q + 8


@kernel
def skip_value(buf: np.ndarray, p: int, lim: int, cls: np.ndarray, wst: np.ndarray,
               scratch: np.ndarray, stack: np.ndarray, pow5: np.ndarray,
               pow10: np.ndarray) -> int:
    """Validate the JSON value at ``p`` (after whitespace); position after it, or -1."""
    depth = 0
    while True:
        # a value starts here
        p = skip_ws(buf, p, lim, wst)
        c = at(buf, p, lim)
        if c == 123 or c == 91:  # { [
            p = skip_ws(buf, p + 1, lim, wst)
            close = 125 if c == 123 else 93
            if at(buf, p, lim) == close:
                p += 1
            else:
                if depth == min(MAX_DEPTH, stack.size):
                    return -1
                stack[depth] = c
                depth += 1
                if c == 123:  # the first key
                    if at(buf, p, lim) != 34:
                        return -1
                    p, _n = read_string_full(buf, p + 1, lim, cls, scratch)
                    if p < 0:
                        return -1
                    p = skip_ws(buf, p, lim, wst)
                    if at(buf, p, lim) != 58:
                        return -1
                    p += 1
                continue
        elif c == 34:
            p, _n = read_string_full(buf, p + 1, lim, cls, scratch)
            if p < 0:
                return -1
        elif c == 45 or 48 <= c <= 57:
            status, _v, p = parse_number(buf, p, lim, True, pow5, pow10)
            if status == NUM_SYNTAX:
                return -1
        elif c == 116 or c == 102 or c == 110:
            p = literal(buf, p, lim)
            if p < 0:
                return -1
        else:
            return -1
        # a value ended: close what it ends, or move to the next one
        while True:
            if depth == 0:
                return p
            p = skip_ws(buf, p, lim, wst)
            c = at(buf, p, lim)
            if stack[depth - 1] == 123:
                if c == 125:
                    depth -= 1
                    p += 1
                    continue
                if c != 44:
                    return -1
                p = skip_ws(buf, p + 1, lim, wst)
                if at(buf, p, lim) != 34:
                    return -1
                p, _n = read_string_full(buf, p + 1, lim, cls, scratch)
                if p < 0:
                    return -1
                p = skip_ws(buf, p, lim, wst)
                if at(buf, p, lim) != 58:
                    return -1
                p += 1
                break
            if c == 93:
                depth -= 1
                p += 1
                continue
            if c != 44:
                return -1
            p += 1
            break


@kernel
def too_deep_at(buf: np.ndarray, limit: int) -> int:
    """Offset of the first ``[`` or ``{`` (outside strings) that opens nesting level
    ``limit + 1``, or -1: where a document is nested deeper than a parser accepts."""
    depth = 0
    in_string = False
    i = 0
    while i < buf.size:
        c = buf[i]
        if in_string:
            if c == 92:  # a backslash: skip the escaped byte
                i += 1
            elif c == 34:
                in_string = False
        elif c == 34:
            in_string = True
        elif c == 91 or c == 123:
            depth += 1
            if depth > limit:
                return i
        elif c == 93 or c == 125:
            depth -= 1
        i += 1
    return -1
