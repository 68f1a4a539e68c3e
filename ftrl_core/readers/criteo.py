"""Criteo Display Advertising Challenge TSV: label, I1..I13, C1..C26; empty = missing.

Integer columns are categorical tokens by default (``I5`` = ``24`` is the token I5_24, as
the classic Kaggle FTRL scripts do); ``--ints log`` turns them into log-binned tokens
(``floor(log(v)^2)`` for v > 2, the Criteo winners' transform). A line of 39 columns has no
label (the test file's layout) and can be predicted, not learned.
"""

from __future__ import annotations

import math

import numpy as np

from .._jit import kernel
from ..fields import FieldRegistry
from ..hashing import mix64, xxh64
from .base import FeatureOptions, Format, Outputs
from .linescan import find_byte, find_newline
from .rows import (
    E_COLUMNS,
    E_INTEGER,
    E_LABEL,
    E_TOO_MANY_FEATURES,
    ERROR,
    FULL,
    KIND_BIN,
    OK,
    emit,
    emit_bias,
    end_row,
    finish_row_one_per_field,
    save_state,
)

N_INT = 13
N_CAT = 26
FIELDS = [f"I{j + 1}" for j in range(N_INT)] + [f"C{j + 1}" for j in range(N_CAT)]
BIN_TAG = np.uint64(0x6C6F6762696E)


@kernel
def parse_criteo(
    buf: np.ndarray, pos: int, end: int, final: bool, opts: np.ndarray, seeds: np.ndarray,
    hash_mask: np.uint64, pair_a: np.ndarray, pair_b: np.ndarray, pair_f: np.ndarray,
    indptr: np.ndarray, keys: np.ndarray, fields: np.ndarray, values: np.ndarray,
    refs: np.ndarray, kinds: np.ndarray, labels: np.ndarray, weights: np.ndarray,
    lines: np.ndarray, err: np.ndarray, state: np.ndarray,
) -> int:
    """Parse complete lines of ``buf[pos:end]`` into the output arrays.

    ``opts``: drop_missing, ints_log, max_row. ``state`` (in/out): pos, rows, nnz, lines
    consumed. Returns OK (all complete lines read), FULL (outputs full) or ERROR (``err``:
    code, column, byte offset of the line).
    """
    drop_missing = opts[0] != 0
    ints_log = opts[1] != 0
    max_row = opts[2]
    rows = state[1]
    nnz = state[2]
    nline = state[3]
    size = 1
    while size < 2 * max_row:
        size *= 2
    stamp = np.zeros(size, dtype=np.int64)
    spos = np.zeros(size, dtype=np.int64)
    # a row holds the bias and 39 columns before any interaction, whatever max_row says
    room = max(max_row, N_INT + N_CAT + 1)
    hashes = np.zeros(room, dtype=np.uint64)
    status = OK
    err[0] = 0
    while pos < end:
        eol = find_newline(buf, pos, end)
        if eol == end and not final:
            break
        line_end = eol
        if line_end > pos and buf[line_end - 1] == 13:
            line_end -= 1
        if line_end == pos:  # blank line
            pos = eol + 1
            nline += 1
            continue
        if rows + 1 >= labels.size or nnz + room > keys.size:
            status = FULL
            break
        row_start = nnz
        emit_bias(keys, fields, values, refs, kinds, hashes, row_start, hash_mask)
        # one pass over the columns: label, I1..I13, C1..C26 (or, 39 columns: no label)
        t = find_byte(buf, pos, line_end, 9)
        c0 = 1
        bad = -1
        ncol = 0
        while True:
            if c0 == 1:
                a = t + 1
                i = a
            else:
                a = pos
                i = pos
            fid = 1
            ncol = 1 if c0 == 1 else 0
            nnz = row_start + 1
            if c0 == 1 and t == line_end:
                break
            while True:
                # the column ends at the next tab, or at the end of the line (no newline
                # lies before it)
                i = find_byte(buf, i, line_end, 9)
                ch = 9 if i < line_end else 10
                if fid <= N_INT + N_CAT:
                    if a == i:
                        if not drop_missing:
                            emit(keys, fields, values, refs, kinds, hashes, row_start, nnz,
                                 fid, xxh64(buf, a, a, seeds[fid]), 1.0, a, 0, hash_mask)
                            nnz += 1
                    else:
                        is_bin = False
                        bin_ = 0
                        if fid <= N_INT:
                            # integer columns hold integers (optional minus, digits)
                            j = a + 1 if buf[a] == 45 else a
                            if j == i and bad < 0:
                                bad = fid
                            v = 0
                            while j < i:
                                d = buf[j]
                                if d < 48 or d > 57:
                                    if bad < 0:
                                        bad = fid
                                    break
                                if v < 10**15:
                                    v = v * 10 + (d - 48)
                                j += 1
                            if ints_log:
                                if buf[a] == 45:
                                    v = -v
                                bin_ = v if v <= 2 else int(math.log(v) ** 2)  # floor
                                is_bin = True
                        if is_bin:
                            h = mix64(seeds[fid] ^ BIN_TAG ^ np.uint64(bin_ + 4096))
                            emit(keys, fields, values, refs, kinds, hashes, row_start, nnz,
                                 fid, h, 1.0, bin_, KIND_BIN, hash_mask)
                        else:
                            emit(keys, fields, values, refs, kinds, hashes, row_start, nnz,
                                 fid, xxh64(buf, a, i, seeds[fid]), 1.0, a, i - a,
                                 hash_mask)
                        nnz += 1
                ncol += 1
                fid += 1
                a = i + 1
                if ch == 10:
                    break
                i += 1
            if c0 == 1 and ncol == N_INT + N_CAT:
                c0 = 0  # a test-file line: parse again with I1 first
                bad = -1
                continue
            break
        label = np.nan
        if ncol != N_INT + N_CAT + c0:
            err[0] = E_COLUMNS
            err[1] = ncol
        elif c0 == 1:
            n = t - pos
            if n == 1 and buf[pos] == 48:
                label = 0.0
            elif n == 1 and buf[pos] == 49:
                label = 1.0
            elif n == 2 and buf[pos] == 45 and buf[pos + 1] == 49:
                label = 0.0
            else:
                err[0] = E_LABEL
                err[1] = 0
        if err[0] == 0 and bad >= 0:
            err[0] = E_INTEGER
            err[1] = bad  # the column of field id `bad` in the 40-column layout
        if err[0] == 0:
            if nnz - row_start > max_row:
                nnz = -1
            else:
                nnz = finish_row_one_per_field(keys, fields, values, refs, kinds, hashes,
                                               row_start, nnz, max_row, pair_a, pair_b,
                                               pair_f, seeds, hash_mask, stamp, spos, rows + 1)
            if nnz < 0:
                err[0] = E_TOO_MANY_FEATURES
                err[1] = -1
        if err[0] != 0:  # the line is bad: nothing of it is kept
            err[2] = pos
            nnz = row_start
            status = ERROR
            break
        rows = end_row(indptr, labels, weights, lines, rows, nnz, label, 1.0, nline)
        nline += 1
        pos = eol + 1
    save_state(state, min(pos, end), rows, nnz, nline)
    return status


class CriteoFormat(Format):
    name = "criteo"
    fixed_fields = True  # I1..I13, C1..C26, registered before the first row

    def __init__(self, registry: FieldRegistry, options: FeatureOptions) -> None:
        super().__init__(registry, options)
        for name in FIELDS:
            registry.add(name)
        if [registry.id(n) for n in FIELDS] != list(range(1, len(FIELDS) + 1)):
            raise ValueError("a Criteo model needs I1..I13, C1..C26 as fields 1..39")
        self._opts = np.array([options.drop_missing, options.ints == "log",
                               options.max_row_features], dtype=np.int64)

    def parse(self, buf: np.ndarray, pos: int, end: int, final: bool, out: Outputs) -> int:
        pa, pb, pf = self.registry.pair_arrays()
        return int(parse_criteo(
            buf, pos, end, final, self._opts, self.registry.seeds, self.options.hash_mask,
            pa, pb, pf, out.indptr, out.keys, out.fields, out.values, out.refs, out.kinds,
            out.labels, out.weights, out.lines, out.err, out.state))

    def field_name(self, column: int) -> str:
        # err[1] counts columns with the label as column 0
        if column == 0:
            return "label"
        return FIELDS[column - 1] if 1 <= column <= len(FIELDS) else ""
