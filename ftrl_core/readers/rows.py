"""Kernel helpers shared by every reader: emitting features and finishing a row.

A reader kernel walks the raw bytes of a chunk and, for each row, calls ``emit`` per
feature, then ``finish_row``, which merges duplicate keys (the dense algorithm sees one
coordinate with the summed value, so the sparse path must too) and appends the quadratic
interactions. Interactions are made from the value hashes of the two features, never from
strings.

Names: each feature carries ``ref``/``kind`` so that the name of a key can be recorded the
first time the model stores it (``names.py``): ``kind >= 0`` is a byte length and ``ref`` an
offset in the chunk; the negative kinds are listed below.
"""

from __future__ import annotations

import numpy as np

from .._jit import inline_kernel
from ..hashing import BIAS_HASH, NUMERIC_TAG, make_key, mix64, pair_hash
from ..limits import MAX_ABS_VALUE, MAX_FIELD_NAME_BYTES, MAX_WEIGHT
from ..rowmerge import dedupe_row as _dedupe

#: the feature is the bias
KIND_BIAS = -1
#: a real-valued feature: its name is the field alone
KIND_NUMERIC = -2
#: an interaction: ``ref`` packs the batch positions of its two features (a << 32 | b)
KIND_PAIR = -3
#: an integer bin (``--ints log``): ``ref`` is the bin
KIND_BIN = -4
#: a token whose bytes are JSON-escaped in the chunk (decode before display)
KIND_JSON_ESCAPED = -5  # the length is encoded as -5 - len  (see names.py)

# kernel status codes
OK = 0
FULL = 1
ERROR = 2

# error codes (err[0]); err[1] = field index or column, err[2] = byte offset of the line
E_COLUMNS = 1
E_LABEL = 2
E_NUMBER = 3
E_TOO_MANY_FEATURES = 4
E_TOO_MANY_FIELDS = 5
E_SYNTAX = 6
E_WEIGHT = 7
E_TYPE = 8
E_EMPTY_FEATURES = 9
E_UNKNOWN_KEY = 10
E_INTEGER = 11
E_MISSING_LABEL = 12
E_FIELD_NAME = 13
E_UNKNOWN_FIELD = 14

ERROR_MESSAGES = {
    E_COLUMNS: "wrong number of columns",
    E_LABEL: "label is not 0/1 (or -1/1)",
    E_NUMBER: f"value is not a finite number within +-{MAX_ABS_VALUE:g} (it is beyond the "
              "limit, or not a number)",
    E_TOO_MANY_FEATURES: "too many features in one row",
    E_TOO_MANY_FIELDS: "too many distinct fields",
    E_SYNTAX: "syntax error",
    E_WEIGHT: f"importance weight is not a number from 0 to {MAX_WEIGHT:g} (it is above the "
              "limit, negative, or not a number)",
    E_TYPE: "value has the wrong type",
    E_EMPTY_FEATURES: "features map is empty",
    E_UNKNOWN_KEY: "unknown key",
    E_INTEGER: "integer column holds a non-integer value",
    E_MISSING_LABEL: "label is missing",
    E_FIELD_NAME: f"field name is empty, longer than {MAX_FIELD_NAME_BYTES} bytes, holds "
                  "control characters, or is the reserved (overflow)",
    E_UNKNOWN_FIELD: "field is not one of the declared fields (--fields, --strict-fields)",
}


@inline_kernel
def emit(
    keys: np.ndarray, fields: np.ndarray, values: np.ndarray, refs: np.ndarray,
    kinds: np.ndarray, hashes: np.ndarray, row_start: int, nnz: int,
    field: int, h: np.uint64, value: float, ref: int, kind: int, hash_mask: np.uint64,
) -> None:
    """Write one feature at ``nnz`` (the caller checked the row limit)."""
    emit_value(keys, fields, values, refs, kinds, hashes, row_start, nnz, field, h, value, ref,
               kind, hash_mask, True)


@inline_kernel
def emit_value(
    keys: np.ndarray, fields: np.ndarray, values: np.ndarray, refs: np.ndarray,
    kinds: np.ndarray, hashes: np.ndarray, row_start: int, nnz: int,
    field: int, h: np.uint64, value: float, ref: int, kind: int, hash_mask: np.uint64,
    keep_hash: bool,
) -> None:
    """``emit``; the value hash is kept (for interactions) only if ``keep_hash``."""
    keys[nnz] = make_key(field, h, hash_mask)
    fields[nnz] = field
    values[nnz] = value
    refs[nnz] = ref
    kinds[nnz] = kind
    if keep_hash:
        hashes[nnz - row_start] = h


@inline_kernel
def emit_bias(
    keys: np.ndarray, fields: np.ndarray, values: np.ndarray, refs: np.ndarray,
    kinds: np.ndarray, hashes: np.ndarray, row_start: int, hash_mask: np.uint64,
) -> int:
    emit(keys, fields, values, refs, kinds, hashes, row_start, row_start, 0, BIAS_HASH,
         1.0, 0, KIND_BIAS, hash_mask)
    return row_start + 1


@inline_kernel
def end_row(indptr: np.ndarray, labels: np.ndarray, weights: np.ndarray, lines: np.ndarray,
            rows: int, nnz: int, label: float, weight: float, nline: int) -> int:
    """Record a finished row (its label, weight, line and where its features end); returns
    the new row count."""
    labels[rows] = label
    weights[rows] = weight
    lines[rows] = nline
    indptr[rows + 1] = nnz
    return rows + 1


@inline_kernel
def save_state(state: np.ndarray, pos: int, rows: int, nnz: int, nline: int) -> None:
    """Write a kernel's position back for the caller (see ``base.Outputs.state``)."""
    state[0] = pos
    state[1] = rows
    state[2] = nnz
    state[3] = nline


@inline_kernel
def numeric_hash(seed: np.uint64) -> np.uint64:
    return mix64(seed ^ NUMERIC_TAG)


@inline_kernel
def _append_interactions(
    keys: np.ndarray, fields: np.ndarray, values: np.ndarray, refs: np.ndarray,
    kinds: np.ndarray, hashes: np.ndarray, row_start: int, base_end: int, max_row: int,
    pair_a: np.ndarray, pair_b: np.ndarray, pair_f: np.ndarray, seeds: np.ndarray,
    hash_mask: np.uint64,
) -> int:
    out = base_end
    for p in range(pair_a.size):
        fa = pair_a[p]
        fb = pair_b[p]
        seed = seeds[pair_f[p]]
        for i in range(row_start, base_end):
            if fields[i] != fa:
                continue
            j0 = i + 1 if fa == fb else row_start
            for j in range(j0, base_end):
                if fields[j] != fb:
                    continue
                if out - row_start >= max_row:
                    return -1
                h = pair_hash(hashes[i - row_start], hashes[j - row_start], seed)
                emit(keys, fields, values, refs, kinds, hashes, row_start, out, pair_f[p], h,
                     values[i] * values[j], (i << 32) | j, KIND_PAIR, hash_mask)
                out += 1
    return out


@inline_kernel
def finish_row(
    keys: np.ndarray, fields: np.ndarray, values: np.ndarray, refs: np.ndarray,
    kinds: np.ndarray, hashes: np.ndarray, row_start: int, nnz: int, max_row: int,
    pair_a: np.ndarray, pair_b: np.ndarray, pair_f: np.ndarray, seeds: np.ndarray,
    hash_mask: np.uint64, stamp: np.ndarray, spos: np.ndarray, gen: int,
) -> int:
    """Dedupe the row, append its interactions; returns the new nnz, or -1 if the row
    would exceed ``max_row`` features."""
    return finish_row_known(keys, fields, values, refs, kinds, hashes, row_start, nnz, max_row,
                            pair_a, pair_b, pair_f, seeds, hash_mask, stamp, spos, gen, False)


@inline_kernel
def finish_row_known(
    keys: np.ndarray, fields: np.ndarray, values: np.ndarray, refs: np.ndarray,
    kinds: np.ndarray, hashes: np.ndarray, row_start: int, nnz: int, max_row: int,
    pair_a: np.ndarray, pair_b: np.ndarray, pair_f: np.ndarray, seeds: np.ndarray,
    hash_mask: np.uint64, stamp: np.ndarray, spos: np.ndarray, gen: int, distinct: bool,
) -> int:
    """``finish_row`` for a caller that knows whether the row's keys are ``distinct``
    already (then the first merge, an identity, is skipped)."""
    if distinct:
        base_end = nnz
    else:
        base_end = _dedupe(keys, fields, values, refs, kinds, hashes, row_start, row_start,
                           nnz, stamp, spos, 2 * gen)
    out = _append_interactions(keys, fields, values, refs, kinds, hashes, row_start, base_end,
                               max_row, pair_a, pair_b, pair_f, seeds, hash_mask)
    if out > base_end:
        # the base features are distinct, so they keep their positions (interaction refs
        # stay valid); in hashed mode an interaction may fold onto a base key and merge
        out = _dedupe(keys, fields, values, refs, kinds, hashes, row_start, row_start, out,
                      stamp, spos, 2 * gen + 1)
    return out


@inline_kernel
def finish_row_one_per_field(
    keys: np.ndarray, fields: np.ndarray, values: np.ndarray, refs: np.ndarray,
    kinds: np.ndarray, hashes: np.ndarray, row_start: int, nnz: int, max_row: int,
    pair_a: np.ndarray, pair_b: np.ndarray, pair_f: np.ndarray, seeds: np.ndarray,
    hash_mask: np.uint64, stamp: np.ndarray, spos: np.ndarray, gen: int,
) -> int:
    """``finish_row`` for fixed-column formats (one feature per field): with exact keys the
    row's keys, interactions included, are distinct by construction, so merging is skipped
    (it is a third of the parse time)."""
    if hash_mask != np.uint64(0):
        return finish_row(keys, fields, values, refs, kinds, hashes, row_start, nnz, max_row,
                          pair_a, pair_b, pair_f, seeds, hash_mask, stamp, spos, gen)
    if pair_a.size == 0:
        return nnz
    return _append_interactions(keys, fields, values, refs, kinds, hashes, row_start, nnz,
                                max_row, pair_a, pair_b, pair_f, seeds, hash_mask)
