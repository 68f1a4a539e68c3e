"""Decimal text -> float64 inside kernels, correctly rounded.

Two paths, both exact (round-to-nearest-even, bit-equal to Python's ``float()``):

- Clinger's fast path (Clinger 1990): a mantissa ``w <= 2^53`` and a decimal exponent
  ``|q| <= 22`` give the exact double in one multiply or divide by an exact power of ten.
- Otherwise the Eisel-Lemire algorithm (Lemire, "Number parsing at a gigabyte per second",
  2021, as in fast_float): one 64x128-bit product with a truncated power of five. Mushtak and
  Lemire ("Fast number parsing without fallback", 2023) proved that the product is always
  enough for a mantissa of at most 19 decimal digits, so those are correctly rounded too.

Inputs with more than 19 significant digits keep the first 19 (``w``); when the dropped
digits are not all zero the true value lies strictly between ``w`` and ``w + 1`` (times
``10^q``). If both convert to the same double that double is the answer; if not (the input
sits within 10^-19 of a rounding midpoint) the midpoint is compared exactly with the decimal
input in small big-integer arithmetic (the first 780 significant digits, the rest reduced to
a sticky digit, as fast_float's ``digit_comp`` does with 768). So every input is correctly
rounded; the slow comparison runs for about one input in 10^4 of those with more than 19
digits, and never for the 17-digit numbers printers produce.

Grammar: ``strict`` is JSON's number (``-?(0|[1-9]d*)(.d+)?([eE][+-]?d+)?``); otherwise
the lenient form of text formats (an optional sign, leading zeros, ``5.``, ``.5``).
NaN/inf spellings are syntax errors in both.
"""

from __future__ import annotations

import math

import numpy as np

from .._jit import inline_kernel, kernel

#: parse status
NUM_OK = 0
NUM_SYNTAX = 1
NUM_RANGE = 2  # finite text whose value overflows binary64

SMALLEST_POW10 = -342
LARGEST_POW10 = 308
MAX_DIGITS = 19
_M32 = np.uint64(0xFFFFFFFF)


def _pow5_table() -> np.ndarray:
    """128-bit truncated powers of five for 10^-342 .. 10^308 (fast_float's table)."""
    words: list[int] = []
    for q in range(SMALLEST_POW10, LARGEST_POW10 + 1):
        if q < 0:
            p5 = 5 ** -q
            z = p5.bit_length()  # 2^z > 5^-q: a power of five is never a power of two
            if q >= -27:
                c = (1 << (z + 127)) // p5 + 1
            else:
                c = (1 << (2 * z + 128)) // p5 + 1
                while c >= 1 << 128:
                    c >>= 1
        else:
            c = 5**q
            while c < 1 << 127:
                c <<= 1
            while c >= 1 << 128:
                c >>= 1
        words += [c >> 64, c & ((1 << 64) - 1)]
    return np.array(words, dtype=np.uint64)


#: tables the kernels take as arguments (kernels never read globals)
POW5 = _pow5_table()
POW10 = np.array([10.0**k for k in range(23)], dtype=np.float64)


@inline_kernel
def _mul128(a: np.uint64, b: np.uint64) -> tuple[np.uint64, np.uint64]:
    """Full 64x64 -> 128-bit product as (high, low)."""
    a_lo = a & _M32
    a_hi = a >> np.uint64(32)
    b_lo = b & _M32
    b_hi = b >> np.uint64(32)
    p0 = a_lo * b_lo
    p1 = a_lo * b_hi
    p2 = a_hi * b_lo
    p3 = a_hi * b_hi
    mid = (p0 >> np.uint64(32)) + (p1 & _M32) + (p2 & _M32)
    lo = (p0 & _M32) | (mid << np.uint64(32))
    hi = p3 + (p1 >> np.uint64(32)) + (p2 >> np.uint64(32)) + (mid >> np.uint64(32))
    return hi, lo


@inline_kernel
def _clz(x: np.uint64) -> int:
    n = 0
    if x >> np.uint64(32) == np.uint64(0):
        n += 32
        x <<= np.uint64(32)
    if x >> np.uint64(48) == np.uint64(0):
        n += 16
        x <<= np.uint64(16)
    if x >> np.uint64(56) == np.uint64(0):
        n += 8
        x <<= np.uint64(8)
    if x >> np.uint64(60) == np.uint64(0):
        n += 4
        x <<= np.uint64(4)
    if x >> np.uint64(62) == np.uint64(0):
        n += 2
        x <<= np.uint64(2)
    if x >> np.uint64(63) == np.uint64(0):
        n += 1
    return n


@kernel
def eisel_lemire(q: int, w: np.uint64, pow5: np.ndarray) -> float:
    """|value| of ``w * 10^q`` (w > 0, at most 19 digits), correctly rounded; inf on
    overflow."""
    if q < SMALLEST_POW10:
        return 0.0
    if q > LARGEST_POW10:
        return np.inf
    lz = _clz(w)
    w = w << np.uint64(lz)
    idx = 2 * (q - SMALLEST_POW10)
    hi, lo = _mul128(w, pow5[idx])
    mask = np.uint64(0x1FF)  # the 64 - 55 bits below the needed precision
    if hi & mask == mask:
        hi2, _lo2 = _mul128(w, pow5[idx + 1])
        lo = lo + hi2
        if hi2 > lo:
            hi = hi + np.uint64(1)
    upper = int(hi >> np.uint64(63))
    shift = upper + 9
    mant = hi >> np.uint64(shift)
    power2 = (((152170 + 65536) * q) >> 16) + 63 + upper - lz + 1023
    if power2 <= 0:  # subnormal
        if -power2 + 1 >= 64:
            return 0.0
        mant = mant >> np.uint64(-power2 + 1)
        mant = mant + (mant & np.uint64(1))
        mant = mant >> np.uint64(1)
        # rounding may carry into the smallest normal: ldexp handles both cases
        return math.ldexp(float(mant), -1074)
    if (lo <= np.uint64(1) and -4 <= q <= 23 and mant & np.uint64(3) == np.uint64(1)
            and (mant << np.uint64(shift)) == hi):
        mant = mant & ~np.uint64(1)  # exactly halfway: round to even, down
    mant = mant + (mant & np.uint64(1))
    mant = mant >> np.uint64(1)
    if mant >= np.uint64(1 << 53):
        mant = np.uint64(1 << 52)
        power2 += 1
    if power2 >= 0x7FF:
        return np.inf
    return math.ldexp(float(mant), power2 - 1075)


BIG_LIMBS = 224  # 32-bit limbs: 7168 bits, enough for 780 digits times 5^1124
BIG_DIGITS = 780


@inline_kernel
def _big_mul_small(a: np.ndarray, n: int, x: int) -> int:
    carry = np.uint64(0)
    for i in range(n):
        t = a[i] * np.uint64(x) + carry
        a[i] = t & _M32
        carry = t >> np.uint64(32)
    if carry != np.uint64(0):
        a[n] = carry
        n += 1
    return n


@inline_kernel
def _big_add_small(a: np.ndarray, n: int, x: int) -> int:
    carry = np.uint64(x)
    i = 0
    while carry != np.uint64(0):
        if i == n:
            a[n] = carry
            return n + 1
        t = a[i] + carry
        a[i] = t & _M32
        carry = t >> np.uint64(32)
        i += 1
    return n


@inline_kernel
def _big_mul_pow5(a: np.ndarray, n: int, e: int) -> int:
    while e >= 13:
        n = _big_mul_small(a, n, 1220703125)  # 5^13 < 2^32
        e -= 13
    if e > 0:
        n = _big_mul_small(a, n, 5**e)
    return n


@inline_kernel
def _big_shl(a: np.ndarray, n: int, bits: int) -> int:
    if n == 0 or bits == 0:
        return n
    limbs = bits // 32
    r = bits % 32
    a[n] = np.uint64(0)
    for i in range(n, -1, -1):
        hi = a[i] << np.uint64(r) if r else a[i]
        lo = a[i - 1] >> np.uint64(32 - r) if (r and i > 0) else np.uint64(0)
        a[i + limbs] = (hi | lo) & _M32
    for i in range(limbs):
        a[i] = np.uint64(0)
    n += limbs + 1
    while n > 0 and a[n - 1] == np.uint64(0):
        n -= 1
    return n


@kernel
def _exact_round(buf: np.ndarray, int_start: int, int_end: int, frac_start: int,
                 frac_end: int, exp_given: int, v: float) -> float:
    """Choose between ``v`` and the next double up by comparing the decimal input with
    their midpoint exactly (|value|; the sign is applied by the caller)."""
    dec = np.zeros(BIG_LIMBS, dtype=np.uint64)
    mid = np.zeros(BIG_LIMBS, dtype=np.uint64)
    nd = 0
    taken = 0
    weight = 0  # decimal weight of the last digit taken
    sticky = False
    chunk = 0
    chunk_n = 0
    n_int = int_end - int_start
    for j in range(n_int + frac_end - frac_start):
        d = (buf[int_start + j] if j < n_int else buf[frac_start + j - n_int]) - 48
        if taken == 0 and d == 0:
            continue
        if taken == BIG_DIGITS:
            if d != 0:
                sticky = True
            continue
        chunk = chunk * 10 + d
        chunk_n += 1
        taken += 1
        weight = n_int - 1 - j
        if chunk_n == 9:
            nd = _big_mul_small(dec, nd, 1_000_000_000)
            nd = _big_add_small(dec, nd, chunk)
            chunk = 0
            chunk_n = 0
    if chunk_n:
        nd = _big_mul_small(dec, nd, 10**chunk_n)
        nd = _big_add_small(dec, nd, chunk)
    if sticky:  # a value strictly above the digits taken, below the next one
        nd = _big_mul_small(dec, nd, 10)
        nd = _big_add_small(dec, nd, 1)
        weight -= 1
    e10 = weight + exp_given
    if v < 2.2250738585072014e-308:
        mant = np.uint64(math.ldexp(v, 1074))
        e2 = -1074
    else:
        f, e = math.frexp(v)
        mant = np.uint64(math.ldexp(f, 53))
        e2 = e - 53
    # midpoint (2 mant + 1) 2^(e2 - 1) against dec 10^e10, both made integers
    m = mant * np.uint64(2) + np.uint64(1)
    mid[0] = m & _M32
    mid[1] = m >> np.uint64(32)
    nm = 2 if mid[1] != np.uint64(0) else 1
    if e10 >= 0:
        nd = _big_mul_pow5(dec, nd, e10)
        shift = e10 - (e2 - 1)  # dec 2^e10 vs mid 2^(e2-1)
    else:
        nm = _big_mul_pow5(mid, nm, -e10)
        shift = -(e2 - 1 - e10)  # dec vs mid 2^(e2-1-e10)
    if shift >= 0:
        nd = _big_shl(dec, nd, shift)
    else:
        nm = _big_shl(mid, nm, -shift)
    cmp = 0
    if nd != nm:
        cmp = 1 if nd > nm else -1
    else:
        for i in range(nd - 1, -1, -1):
            if dec[i] != mid[i]:
                cmp = 1 if dec[i] > mid[i] else -1
                break
    if cmp > 0 or (cmp == 0 and mant & np.uint64(1) == np.uint64(1)):
        return np.nextafter(v, np.inf)
    return v


@inline_kernel
def json_simple_number(buf: np.ndarray, p: int, lim: int, pow10: np.ndarray
                       ) -> tuple[bool, float, int]:
    """The common JSON number without a call: ``-?(0|[1-9]d*)(.d+)?`` of at most 15 digits,
    no exponent. (True, value, position after it), exact (Clinger's fast path: an integer
    below 2^53 divided by an exact power of ten, so bit-equal to ``parse_number``); or
    (False, 0.0, p) for anything else, which the caller parses in full (``parse_number``,
    a compiled call that costs as much as the parse)."""
    i = p
    neg = False
    if i < lim and buf[i] == 45:
        neg = True
        i += 1
    start = i
    w = 0
    while i < lim and 48 <= buf[i] <= 57 and i - start < 16:
        w = w * 10 + (buf[i] - 48)
        i += 1
    nd = i - start
    if nd == 0 or (nd > 1 and buf[start] == 48):
        return False, 0.0, p
    frac = 0
    if i < lim and buf[i] == 46:
        i += 1
        f0 = i
        while i < lim and 48 <= buf[i] <= 57 and nd + i - f0 < 16:
            w = w * 10 + (buf[i] - 48)
            i += 1
        frac = i - f0
        if frac == 0:
            return False, 0.0, p
        nd += frac
    if nd > 15 or (i < lim and (48 <= buf[i] <= 57 or buf[i] == 46 or buf[i] == 101
                                 or buf[i] == 69)):
        return False, 0.0, p
    v = float(w) / pow10[frac] if frac else float(w)
    return True, -v if neg else v, i


@kernel
def parse_number(buf: np.ndarray, p: int, lim: int, strict: bool, pow5: np.ndarray,
                 pow10: np.ndarray) -> tuple[int, float, int]:
    """Parse the number starting at ``buf[p]``: (status, value, position after it).

    The number ends at the first byte that cannot continue it; callers check what follows.
    """
    neg = False
    if p < lim and buf[p] == 45:
        neg = True
        p += 1
    elif not strict and p < lim and buf[p] == 43:
        p += 1
    w = np.uint64(0)
    nd = 0  # significant digits kept in w
    exp10 = 0
    dropped = False  # a nonzero digit beyond the 19th
    int_start = p
    while p < lim and 48 <= buf[p] <= 57:
        d = buf[p] - 48
        if nd < MAX_DIGITS:
            if nd > 0 or d != 0:
                w = w * np.uint64(10) + np.uint64(d)
                nd += 1
        else:
            exp10 += 1
            if d != 0:
                dropped = True
        p += 1
    int_end = p
    n_int = p - int_start
    if strict and (n_int == 0 or (n_int > 1 and buf[int_start] == 48)):
        return NUM_SYNTAX, 0.0, p
    n_frac = 0
    frac_start = p
    if p < lim and buf[p] == 46:
        p += 1
        frac_start = p
        while p < lim and 48 <= buf[p] <= 57:
            d = buf[p] - 48
            if nd < MAX_DIGITS:
                if nd > 0 or d != 0:
                    w = w * np.uint64(10) + np.uint64(d)
                    nd += 1
                exp10 -= 1
            elif d != 0:
                dropped = True
            p += 1
        n_frac = p - frac_start
        if strict and n_frac == 0:
            return NUM_SYNTAX, 0.0, p
    frac_end = frac_start + n_frac
    if n_int + n_frac == 0:
        return NUM_SYNTAX, 0.0, p
    exp_given = 0
    if p < lim and (buf[p] == 101 or buf[p] == 69):
        p += 1
        eneg = False
        if p < lim and (buf[p] == 45 or buf[p] == 43):
            eneg = buf[p] == 45
            p += 1
        e_start = p
        e = 0
        while p < lim and 48 <= buf[p] <= 57:
            if e < 1_000_000_000:  # saturate: beyond any buffer of leading zeros
                e = e * 10 + (buf[p] - 48)
            p += 1
        if p == e_start:
            return NUM_SYNTAX, 0.0, p
        exp_given = -e if eneg else e
        exp10 += exp_given
    if w == np.uint64(0):
        return NUM_OK, -0.0 if neg else 0.0, p
    if not dropped and w <= np.uint64(1 << 53) and -22 <= exp10 <= 22:
        v = float(w)
        v = v * pow10[exp10] if exp10 >= 0 else v / pow10[-exp10]
    else:
        v = eisel_lemire(exp10, w, pow5)
        if dropped and eisel_lemire(exp10, w + np.uint64(1), pow5) != v:
            v = _exact_round(buf, int_start, int_end, frac_start, frac_end, exp_given, v)
    if v == np.inf:
        return NUM_RANGE, 0.0, p
    return NUM_OK, -v if neg else v, p
