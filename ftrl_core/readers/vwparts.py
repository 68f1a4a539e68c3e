"""Pieces of the VW text kernel (``vw``): numbers, a value's kind, and interactions between
namespace groups (VW's ``-q``).

VW indexes a namespace by its name's first byte: ``|ads`` and ``|alpha`` are both in group
``a`` (their features still hash apart, by the whole name), and ``-q ab`` crosses every
feature of group ``a`` with every feature of group ``b``; ``-q aa`` pairs each feature of the
group with itself and with every one after it (so x_i * x_i is in, and each unordered pair
once). ``group[fid]`` is the byte of field ``fid`` (-1: the bias, interaction fields, the
overflow field: none of them takes part).
"""

from __future__ import annotations

import numpy as np

from .._jit import inline_kernel
from ..hashing import mix64, pair_hash
from ..rowmerge import dedupe_row
from .rows import KIND_PAIR, emit

#: xor-ed into a namespace's seed for its anonymous features (``|ns :0.5 :1.5``), which VW
#: numbers by position within the namespace
ANON_TAG = np.uint64(0x616E6F6E796D6F75)


@inline_kernel
def anonymous_hash(seed: np.uint64, k: int) -> np.uint64:
    """The value hash of the ``k``-th anonymous feature of a namespace section."""
    return mix64((seed ^ ANON_TAG) + np.uint64(k))


@inline_kernel
def simple_number(buf, a, b, pow10):
    """(True, value) when ``buf[a:b]`` is a plain decimal: a sign, at most 15 digits, a point,
    no exponent. Exact (Clinger's fast path: an integer below 2^53 divided by an exact power
    of ten); (False, 0.0) otherwise, and the caller parses it in full (``parse_number``, a
    call: kept out of this inlined helper, see ``jsonscan.read_string``)."""
    i = a
    neg = False
    if i < b and (buf[i] == 45 or buf[i] == 43):
        neg = buf[i] == 45
        i += 1
    w = 0
    nd = 0
    frac = 0
    dot = False
    while i < b:
        c = buf[i]
        if 48 <= c <= 57:
            w = w * 10 + (c - 48)
            nd += 1
            if dot:
                frac += 1
        elif c == 46 and not dot:
            dot = True
        else:
            return False, 0.0
        i += 1
    if nd == 0 or nd > 15:
        return False, 0.0
    v = float(w) / pow10[frac] if frac else float(w)
    return True, -v if neg else v


@inline_kernel
def looks_numeric(buf, a, b):
    """Whether a feature value ``buf[a:b]`` is meant as a number: it starts like one, or is
    a spelling of NaN or infinity (VW reads those as floats; here they are refused as
    non-finite, never taken for strings)."""
    if a >= b:
        return True
    c = buf[a]
    if (48 <= c <= 57) or c == 45 or c == 43 or c == 46:
        return True
    i = a + 1 if c == 45 or c == 43 else a
    n = b - i
    if n == 3 or n == 8:
        c0 = buf[i] | 32
        c1 = buf[i + 1] | 32
        c2 = buf[i + 2] | 32
        if n == 3 and c0 == 110 and c1 == 97 and c2 == 110:  # nan
            return True
        if c0 == 105 and c1 == 110 and c2 == 102:  # inf, infinity
            return True
    return False


@inline_kernel
def append_group_interactions(
    keys, fields, values, refs, kinds, hashes, row_start, base_end, max_row, pair_a, pair_b,
    pair_f, seeds, hash_mask, group,
):
    """Append the interactions of namespace groups ``pair_a[p]`` x ``pair_b[p]`` (bytes)
    to a deduplicated row; returns the new end, or -1 past ``max_row`` features."""
    out = base_end
    for p in range(pair_a.size):
        ga = pair_a[p]
        gb = pair_b[p]
        seed = seeds[pair_f[p]]
        for i in range(row_start, base_end):
            if group[fields[i]] != ga:
                continue
            j0 = i if ga == gb else row_start  # -q aa: x_i x_i and each pair once
            for j in range(j0, base_end):
                if group[fields[j]] != gb:
                    continue
                if out - row_start >= max_row:
                    return -1
                h = pair_hash(hashes[i - row_start], hashes[j - row_start], seed)
                emit(keys, fields, values, refs, kinds, hashes, row_start, out, pair_f[p], h,
                     values[i] * values[j], (i << 32) | j, KIND_PAIR, hash_mask)
                out += 1
    return out


@inline_kernel
def finish_row_groups(
    keys, fields, values, refs, kinds, hashes, row_start, nnz, max_row, pair_a, pair_b, pair_f,
    seeds, hash_mask, group, stamp, spos, gen,
):
    """Dedupe the row, append its group interactions (merged again: in hashed mode one may
    fold onto another key); returns the new nnz, or -1 past ``max_row`` features."""
    base_end = dedupe_row(keys, fields, values, refs, kinds, hashes, row_start, row_start, nnz,
                          stamp, spos, 2 * gen)
    out = append_group_interactions(keys, fields, values, refs, kinds, hashes, row_start,
                                    base_end, max_row, pair_a, pair_b, pair_f, seeds,
                                    hash_mask, group)
    if out > base_end:
        out = dedupe_row(keys, fields, values, refs, kinds, hashes, row_start, row_start, out,
                         stamp, spos, 2 * gen + 1)
    return out
