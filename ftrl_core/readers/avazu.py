"""Avazu click-through CSV: a header line, then one impression per line.

The header names the columns: ``click`` is the label (0/1; ``-1`` is read as 0, as in the
other readers), ``id`` is ignored, and every other column is a categorical field named by
its header, registered in header order (so ids are the same in every process that reads the
same header). A file without a ``click`` column (Avazu's test set) has no labels: its rows
can be predicted, not learned. Empty values are the field's missing token (the hash of zero
bytes) unless ``drop_missing``. There is no quoting: Avazu's values never hold commas, and a
quote character is part of a value like any other byte.
"""

from __future__ import annotations

import numpy as np

from .._jit import kernel
from ..fields import FieldRegistry
from ..hashing import xxh64
from .base import FeatureOptions, Format, Outputs
from .linescan import find_newline
from .rows import (
    E_COLUMNS,
    E_LABEL,
    E_TOO_MANY_FEATURES,
    ERROR,
    FULL,
    OK,
    _dedupe,
    emit,
    emit_bias,
    end_row,
    finish_row,
    save_state,
)
from .source import InputError
from .tokenhash import xxh64_small

LABEL = "click"
IGNORED = "id"
ROLE_IGNORED = -1
ROLE_LABEL = -2


@kernel
def parse_avazu(buf, pos, end, final, opts, roles, seeds, hash_mask, pair_a, pair_b, pair_f,
                indptr, keys, fields, values, refs, kinds, labels, weights, lines, err, state):
    """Complete lines of ``buf[pos:end]``; ``roles[c]`` is the field id of column c, or
    ROLE_IGNORED/ROLE_LABEL. ``state``: pos, rows, nnz, lines consumed. Returns OK, FULL or
    ERROR (``err``: code, column (or the column count found), line offset)."""
    drop_missing = opts[0] != 0
    max_row = opts[1]
    ncol = roles.size
    rows = state[1]
    nnz = state[2]
    nline = state[3]
    size = 1
    while size < 2 * max_row:
        size *= 2
    stamp = np.zeros(size, dtype=np.int64)
    spos = np.zeros(size, dtype=np.int64)
    hashes = np.zeros(max_row, dtype=np.uint64)
    starts = np.zeros(ncol + 1, dtype=np.int64)
    status = OK
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
        if rows + 1 >= labels.size or nnz + max_row > keys.size:
            status = FULL
            break
        n = 1
        starts[0] = pos
        for i in range(pos, line_end):
            if buf[i] == 44:
                if n < ncol:
                    starts[n] = i + 1
                n += 1
        err[2] = pos
        if n != ncol:
            err[0] = E_COLUMNS
            err[1] = n
            status = ERROR
            break
        starts[ncol] = line_end + 1
        label = np.nan
        row_start = nnz
        nnz = emit_bias(keys, fields, values, refs, kinds, hashes, row_start, hash_mask)
        for c in range(ncol):
            a = starts[c]
            b = starts[c + 1] - 1
            role = roles[c]
            if role == ROLE_IGNORED:
                continue
            if role == ROLE_LABEL:
                if b - a == 1 and (buf[a] == 48 or buf[a] == 49):
                    label = float(buf[a] - 48)
                elif b - a == 2 and buf[a] == 45 and buf[a + 1] == 49:
                    label = 0.0
                else:
                    err[0] = E_LABEL
                    err[1] = c
                    status = ERROR
                    break
                continue
            if a == b and drop_missing:
                continue
            if nnz - row_start >= max_row:
                err[0] = E_TOO_MANY_FEATURES
                err[1] = -1
                status = ERROR
                break
            seed = seeds[role]
            h = xxh64_small(buf, a, b, seed) if b - a < 32 else xxh64(buf, a, b, seed)
            emit(keys, fields, values, refs, kinds, hashes, row_start, nnz, role, h, 1.0, a,
                 b - a, hash_mask)
            nnz += 1
        if status == ERROR:
            nnz = row_start
            break
        if pair_a.size == 0:  # finish_row's dedupe alone, without its call overhead
            nnz = _dedupe(keys, fields, values, refs, kinds, hashes, row_start, row_start, nnz,
                          stamp, spos, 2 * (rows + 1))
        else:
            nnz = finish_row(keys, fields, values, refs, kinds, hashes, row_start, nnz,
                             max_row, pair_a, pair_b, pair_f, seeds, hash_mask, stamp, spos,
                             rows + 1)
        if nnz < 0:
            err[0] = E_TOO_MANY_FEATURES
            err[1] = -1
            nnz = row_start
            status = ERROR
            break
        rows = end_row(indptr, labels, weights, lines, rows, nnz, label, 1.0, nline)
        nline += 1
        pos = eol + 1
    save_state(state, min(pos, end), rows, nnz, nline)
    return status


class AvazuFormat(Format):
    name = "avazu"
    fixed_fields = True  # the header names every field before the first row
    has_header = True

    def __init__(self, registry: FieldRegistry, options: FeatureOptions) -> None:
        super().__init__(registry, options)
        self.columns: list[str] = []
        self._roles = np.zeros(0, dtype=np.int64)
        self._opts = np.array([options.drop_missing, options.max_row_features], dtype=np.int64)

    def read_header(self, line: bytes) -> None:
        text = line.decode("utf-8-sig", "replace").rstrip("\r\n")
        columns = [c.strip() for c in text.split(",")]
        if len(columns) < 2 or any(not c for c in columns):
            raise InputError(f"avazu: the header {text[:80]!r} is not a list of column names")
        if len(set(columns)) != len(columns):
            raise InputError(f"avazu: the header repeats a column name: {text[:80]!r}")
        roles = []
        for name in columns:
            if name == LABEL:
                roles.append(ROLE_LABEL)
            elif name == IGNORED:
                roles.append(ROLE_IGNORED)
            else:
                roles.append(self.registry.add(name))
        self.columns = columns
        self._roles = np.array(roles, dtype=np.int64)

    def parse(self, buf: np.ndarray, pos: int, end: int, final: bool, out: Outputs) -> int:
        if not self.columns:
            raise InputError("avazu: no header was read")
        pa, pb, pf = self.registry.pair_arrays()
        return int(parse_avazu(
            buf, pos, end, final, self._opts, self._roles, self.registry.seeds,
            self.options.hash_mask, pa, pb, pf, out.indptr, out.keys, out.fields, out.values,
            out.refs, out.kinds, out.labels, out.weights, out.lines, out.err, out.state))

    def field_name(self, column: int) -> str:
        return self.columns[column] if 0 <= column < len(self.columns) else ""
