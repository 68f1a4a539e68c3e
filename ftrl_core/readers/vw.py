"""Vowpal Wabbit text: ``label [importance] ['tag]|ns[:weight] f1 f2:0.5 |ns2 ...``.

- Label: -1, 0 or 1 in any decimal spelling (-1 means 0); no label (the line starts with
  ``|``, or holds only a tag) gives NaN: the row can be predicted, not learned.
- Importance: a number from 0 to ``limits.MAX_WEIGHT`` (E_WEIGHT), 1 when absent. A third
  number (VW's "initial prediction") is not supported: E_SYNTAX.
- Tag: as VW decides it, the last token before the first ``|`` when it starts with ``'``
  or touches the bar (``1 zebra|a x``). So ``1|a x`` has the tag ``1`` and no label, as in
  VW: write ``1 |a x``. Tags are ignored.
- Namespaces: the field is the whole namespace name; ``|`` followed by a blank is the
  default namespace, named ``" "``. New names are registered by the kernel as the data flows
  (``dynfields``). ``|ns:0.5`` scales every value of the namespace.
- Features: ``name`` is the token ``name`` with value 1; ``name:v`` the same token with value
  ``v`` (a finite number, else E_NUMBER naming the namespace; so is a value, times the
  namespace's weight, beyond +-``limits.MAX_ABS_VALUE``, and a row value past it once
  repeats are summed or in an interaction); the token's hash is xxh64 of
  the name bytes seeded by the namespace. The name ends at the first ``:``. A feature whose
  value is 0 adds nothing (as in VW); repeats within a row are summed (``|a x x`` is x = 2).
- Blank lines (VW's multi-line example separators) are skipped; a line without any ``|``
  is E_SYNTAX. Spaces and tabs separate.
"""

from __future__ import annotations

import numpy as np

from .._jit import inline_kernel, kernel
from ..fields import FieldRegistry
from ..hashing import FIELD_SEED, MAX_FIELDS, xxh64
from ..limits import MAX_ABS_VALUE, MAX_WEIGHT
from .base import FeatureOptions, Outputs
from .dynfields import (
    NAME_DEFAULT_NS,
    DynamicFieldsFormat,
    find_field,
    register_field,
    rollback_fields,
    valid_utf8,
)
from .numparse import NUM_OK, POW5, POW10, parse_number
from .rows import (
    E_LABEL,
    E_NUMBER,
    E_SYNTAX,
    E_TOO_MANY_FEATURES,
    E_TOO_MANY_FIELDS,
    E_WEIGHT,
    ERROR,
    FULL,
    KIND_PAIR,
    OK,
    _dedupe,
    emit,
    emit_bias,
    end_row,
    finish_row,
    save_state,
)
from .tokenhash import xxh64_small

DEFAULT_NAMESPACE = " "
#: error field codes (err[1]); the namespace's byte range is in err[3] (-1: the default)
F_ROW = -1
F_LABEL = -2
F_WEIGHT = -3
F_NAMESPACE = -4
F_FIELD = -5  # a field (namespace or interaction) named by its id in ``err[3]``


@inline_kernel
def _blank(c: int) -> bool:
    return c == 32 or c == 9


@inline_kernel
def _simple_number(buf, a, b, pow10):
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


@kernel
def parse_vw(buf, pos, end, final, opts, default_seed, pow5, pow10, seeds, lookup_keys,
             lookup_ids, reg, names, hash_mask, pair_a, pair_b, pair_f, indptr, keys, fields,
             values, refs, kinds, labels, weights, lines, err, state):
    """Complete lines of ``buf[pos:end]``. ``state``: pos, rows, nnz, lines consumed. Returns
    OK, FULL or ERROR (``err``: code, F_* field, line offset, namespace range)."""
    max_row = opts[1]
    rows = state[1]
    nnz = state[2]
    nline = state[3]
    size = 1
    while size < 2 * max_row:
        size *= 2
    stamp = np.zeros(size, dtype=np.int64)
    spos = np.zeros(size, dtype=np.int64)
    hashes = np.zeros(max_row, dtype=np.uint64)
    tok = np.zeros(8, dtype=np.int64)  # (start, end) of the first label-section tokens
    fkey = np.zeros(MAX_FIELDS + 1, dtype=np.int64)  # a namespace's range in the row
    status = OK
    while pos < end:
        eol = pos
        while eol < end and buf[eol] != 10:
            eol += 1
        if eol == end and not final:
            break
        line_end = eol
        if line_end > pos and buf[line_end - 1] == 13:
            line_end -= 1
        p = pos
        while p < line_end and _blank(buf[p]):
            p += 1
        if p == line_end:  # blank line
            pos = eol + 1
            nline += 1
            continue
        if rows + 1 >= labels.size or nnz + max_row > keys.size:
            status = FULL
            break
        code = 0
        fcode = F_ROW
        ns_range = -1
        # the label section: tokens before the first bar
        bar = pos
        while bar < line_end and buf[bar] != 124:
            bar += 1
        ntok = 0
        p = pos
        while p < bar:
            while p < bar and _blank(buf[p]):
                p += 1
            if p == bar:
                break
            a = p
            while p < bar and not _blank(buf[p]):
                p += 1
            if ntok < 4:
                tok[2 * ntok] = a
                tok[2 * ntok + 1] = p
            ntok += 1
        if 0 < ntok <= 4 and (tok[2 * ntok - 1] == bar or buf[tok[2 * ntok - 2]] == 39):
            ntok -= 1  # the tag
        label = np.nan
        weight = 1.0
        if bar == line_end:  # no namespace at all
            code = E_SYNTAX
        elif ntok > 2:
            code = E_SYNTAX
            fcode = F_LABEL
        if code == 0 and ntok >= 1:
            ok, v = _simple_number(buf, tok[0], tok[1], pow10)
            if not ok:
                st, v, q = parse_number(buf, tok[0], tok[1], False, pow5, pow10)
                ok = st == NUM_OK and q == tok[1] and tok[0] < tok[1]
            if ok and (v == 1.0 or v == 0.0 or v == -1.0):
                label = 1.0 if v == 1.0 else 0.0
            else:
                code = E_LABEL
                fcode = F_LABEL
        if code == 0 and ntok == 2:
            ok, v = _simple_number(buf, tok[2], tok[3], pow10)
            if not ok:
                st, v, q = parse_number(buf, tok[2], tok[3], False, pow5, pow10)
                ok = st == NUM_OK and q == tok[3] and tok[2] < tok[3]
            if ok and 0.0 <= v <= MAX_WEIGHT:
                weight = v if v > 0.0 else 0.0
            else:
                code = E_WEIGHT
                fcode = F_WEIGHT
        row_start = nnz
        nnz = emit_bias(keys, fields, values, refs, kinds, hashes, row_start, hash_mask)
        count0 = reg[0]
        new0 = reg[1]
        p = bar
        while code == 0 and p < line_end:  # at a bar: a namespace
            p += 1
            ns = p
            while p < line_end and not _blank(buf[p]) and buf[p] != 58 and buf[p] != 124:
                p += 1
            ns_end = p
            ns_range = (ns << 24) | min(ns_end - ns, (1 << 24) - 1) if ns_end > ns else -1
            fcode = F_NAMESPACE
            nsw = 1.0
            if p < line_end and buf[p] == 58:
                p += 1
                a = p
                while p < line_end and not _blank(buf[p]) and buf[p] != 124:
                    p += 1
                ok, nsw = _simple_number(buf, a, p, pow10)
                if not ok:
                    st, nsw, q = parse_number(buf, a, p, False, pow5, pow10)
                    ok = st == NUM_OK and q == p and a < p
                if not ok:
                    code = E_NUMBER
                    break
            fseed = default_seed if ns_end == ns else xxh64(buf, ns, ns_end, FIELD_SEED)
            fid = find_field(fseed, lookup_keys, lookup_ids)
            if fid < 0:
                if not valid_utf8(buf, ns, ns_end):
                    code = E_SYNTAX
                    break
                fid = register_field(fseed, lookup_keys, lookup_ids, seeds, reg, names, ns,
                                     ns_end - ns, NAME_DEFAULT_NS if ns_end == ns else 0)
                if fid < 0:
                    code = E_TOO_MANY_FIELDS
                    break
            seed = seeds[fid]
            fkey[fid] = ns_range
            while True:  # the features of the namespace
                while p < line_end and _blank(buf[p]):
                    p += 1
                if p == line_end or buf[p] == 124:
                    break
                a = p
                colon = -1
                while p < line_end and not _blank(buf[p]) and buf[p] != 124:
                    if buf[p] == 58 and colon < 0:
                        colon = p
                    p += 1
                v = 1.0
                name_end = p
                if colon >= 0:
                    name_end = colon
                    ok, v = _simple_number(buf, colon + 1, p, pow10)
                    if not ok:
                        st, v, q = parse_number(buf, colon + 1, p, False, pow5, pow10)
                        ok = st == NUM_OK and q == p and colon + 1 < p
                    if not ok:
                        code = E_NUMBER
                        break
                v *= nsw
                if not abs(v) <= MAX_ABS_VALUE:  # (inf * 0 is NaN)
                    code = E_NUMBER
                    break
                if v == 0.0:
                    continue
                if nnz - row_start >= max_row:
                    code = E_TOO_MANY_FEATURES
                    fcode = F_ROW
                    break
                if name_end - a < 32:
                    h = xxh64_small(buf, a, name_end, seed)
                else:
                    h = xxh64(buf, a, name_end, seed)
                emit(keys, fields, values, refs, kinds, hashes, row_start, nnz, fid, h, v, a,
                     name_end - a, hash_mask)
                nnz += 1
        if code == 0:
            if pair_a.size == 0:  # finish_row's dedupe alone, without its call overhead
                nnz = _dedupe(keys, fields, values, refs, kinds, hashes, row_start, row_start,
                              nnz, stamp, spos, 2 * (rows + 1))
            else:
                nnz = finish_row(keys, fields, values, refs, kinds, hashes, row_start, nnz,
                                 max_row, pair_a, pair_b, pair_f, seeds, hash_mask, stamp, spos,
                                 rows + 1)
            if nnz < 0:
                code = E_TOO_MANY_FEATURES
                fcode = F_ROW
            else:  # summed repeats and interaction products must be within the limit too
                for i in range(row_start, nnz):
                    if abs(values[i]) > MAX_ABS_VALUE:
                        code = E_NUMBER
                        if kinds[i] == KIND_PAIR:
                            fcode = F_FIELD
                            ns_range = fields[i]
                        else:
                            fcode = F_NAMESPACE
                            ns_range = fkey[fields[i]]
                        break
        if code != 0:
            rollback_fields(lookup_keys, lookup_ids, seeds, reg, names, count0, new0)
            err[0] = code
            err[1] = fcode
            err[2] = pos
            err[3] = ns_range
            nnz = row_start
            status = ERROR
            break
        rows = end_row(indptr, labels, weights, lines, rows, nnz, label, weight, nline)
        nline += 1
        pos = eol + 1
    save_state(state, min(pos, end), rows, nnz, nline)
    return status


class VWFormat(DynamicFieldsFormat):
    name = "vw"

    def __init__(self, registry: FieldRegistry, options: FeatureOptions) -> None:
        super().__init__(registry, options)
        self._opts = np.array([options.drop_missing, options.max_row_features], dtype=np.int64)
        raw = np.frombuffer(DEFAULT_NAMESPACE.encode(), dtype=np.uint8)
        self._default_seed = np.uint64(xxh64(raw, 0, raw.size, FIELD_SEED))
        self._err_field = ""

    def parse(self, buf: np.ndarray, pos: int, end: int, final: bool, out: Outputs) -> int:
        self.begin()
        reg = self.registry
        pa, pb, pf = reg.pair_arrays()
        return int(parse_vw(
            buf, pos, end, final, self._opts, self._default_seed, POW5, POW10, reg.seeds,
            reg.lookup_keys, reg.lookup_ids, self._reg, self._names, self.options.hash_mask,
            pa, pb, pf, out.indptr, out.keys, out.fields, out.values, out.refs, out.kinds,
            out.labels, out.weights, out.lines, out.err, out.state))

    def after_parse(self, buf: np.ndarray, out: Outputs) -> None:
        self.adopt_names(buf)
        if out.err[0]:
            self._err_field = self._describe(buf, int(out.err[1]), int(out.err[3]),
                                             self.registry)

    @staticmethod
    def _describe(buf: np.ndarray, fcode: int, ns_range: int, registry: FieldRegistry) -> str:
        if fcode == F_LABEL:
            return "label"
        if fcode == F_WEIGHT:
            return "importance"
        if fcode == F_FIELD:
            return registry.name(ns_range)
        if fcode != F_NAMESPACE:
            return ""
        if ns_range < 0:
            return repr(DEFAULT_NAMESPACE)
        start, length = ns_range >> 24, ns_range & ((1 << 24) - 1)
        return buf[start:start + length].tobytes().decode("utf-8", "replace")

    def field_name(self, column: int) -> str:
        return self._err_field
