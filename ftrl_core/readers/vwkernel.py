"""The compiled reader of VW text lines (the format and its decisions: see ``vw``)."""


from __future__ import annotations

import numpy as np

from .._jit import inline_kernel, kernel
from ..fields import OVERFLOW_FIELD
from ..hashing import FIELD_SEED, MAX_FIELDS, xxh64
from ..limits import MAX_ABS_VALUE, MAX_WEIGHT
from .dynfields import (
    NAME_DEFAULT_NS,
    find_field,
    register_field,
    rollback_fields,
    valid_field_name,
    valid_utf8,
)
from .numparse import NUM_OK, parse_number
from .rows import (
    E_FIELD_NAME,
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
    save_state,
)
from .tokenhash import xxh64_small
from .vwparts import anonymous_hash, finish_row_groups, looks_numeric, simple_number

DEFAULT_NAMESPACE = " "
#: error field codes (err[1]); the namespace's byte range is in err[3] (-1: the default)
F_ROW = -1
F_LABEL = -2
F_WEIGHT = -3
F_NAMESPACE = -4
F_FIELD = -5  # a field (namespace or interaction) named by its id in ``err[3]``
F_INITIAL = -6


@inline_kernel
def _blank(c: int) -> bool:
    return c == 32 or c == 9


@kernel
def parse_vw(buf, pos, end, final, opts, default_seed, pow5, pow10, seeds, lookup_keys,
             lookup_ids, reg, names, hash_mask, pair_a, pair_b, pair_f, group, indptr, keys,
             fields, values, refs, kinds, labels, weights, bases, lines, err, state):
    """Complete lines of ``buf[pos:end]``. ``state``: pos, rows, nnz, lines consumed. Returns
    OK, FULL or ERROR (``err``: code, F_* field, line offset, namespace range). ``pair_a``,
    ``pair_b``: namespace groups (bytes) to cross; ``group``: each field's byte, kept up to
    date as namespaces are registered; ``bases``: each row's initial prediction (0: none).
    String feature values are hashed as ``name^value``: the colon is overwritten in
    ``buf`` (the chunk buffer is the reader's own)."""
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
    tok = np.zeros(6, dtype=np.int64)  # (start, end) of the first label-section tokens
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
        start = pos
        if line_end - start >= 3 and buf[start] == 0xEF and buf[start + 1] == 0xBB \
                and buf[start + 2] == 0xBF:
            start += 3  # a byte order mark (VW drops it from every line)
        if start == line_end:  # an empty line: VW's example separator, no row
            pos = eol + 1
            nline += 1
            continue
        if rows + 1 >= labels.size or nnz + max_row > keys.size:
            status = FULL
            break
        code = 0
        fcode = F_ROW
        ns_range = -1
        # the label section, before the first bar (all of a line without one); as VW reads
        # it: from after its first tab if it holds one, tokens split by spaces, the last a
        # tag if it starts with ' or touches the bar; then label, importance, initial
        bar = start
        while bar < line_end and buf[bar] != 124:
            bar += 1
        p = start
        for i in range(start, bar):
            if buf[i] == 9:
                p = i + 1
                break
        ntok = 0
        last_a = -1
        last_b = -1
        while p < bar:
            while p < bar and buf[p] == 32:
                p += 1
            if p == bar:
                break
            a = p
            while p < bar and buf[p] != 32:
                p += 1
            if ntok < 3:
                tok[2 * ntok] = a
                tok[2 * ntok + 1] = p
            ntok += 1
            last_a = a
            last_b = p
        if ntok > 0 and (last_b == bar or buf[last_a] == 39):
            ntok -= 1  # the tag
        label = np.nan
        weight = 1.0
        base = 0.0
        if ntok > 3:
            code = E_SYNTAX
            fcode = F_LABEL
        for t in range(min(ntok, 3)):
            if code != 0:
                break
            ok, v = simple_number(buf, tok[2 * t], tok[2 * t + 1], pow10)
            if not ok:
                st, v, q = parse_number(buf, tok[2 * t], tok[2 * t + 1], False, pow5, pow10)
                ok = st == NUM_OK and q == tok[2 * t + 1] and tok[2 * t] < tok[2 * t + 1]
            if t == 0:
                if ok and (v == 1.0 or v == 0.0 or v == -1.0):
                    label = 1.0 if v == 1.0 else 0.0
                else:
                    code = E_LABEL
                    fcode = F_LABEL
            elif t == 1:
                if ok and 0.0 <= v <= MAX_WEIGHT:
                    weight = v if v > 0.0 else 0.0
                else:
                    code = E_WEIGHT
                    fcode = F_WEIGHT
            elif ok and abs(v) <= MAX_ABS_VALUE:
                base = v
            else:
                code = E_NUMBER
                fcode = F_INITIAL
        row_start = nnz
        nnz = emit_bias(keys, fields, values, refs, kinds, hashes, row_start, hash_mask)
        count0 = reg[0]
        new0 = reg[1]
        if code == 0 and bar == line_end:
            # no bar: no features (the default namespace, registered as `|` would be)
            fid = find_field(default_seed, lookup_keys, lookup_ids)
            if fid < 0:
                fid = register_field(default_seed, lookup_keys, lookup_ids, seeds, reg, names,
                                     bar, 0, NAME_DEFAULT_NS)
                if fid < 0:
                    code = E_TOO_MANY_FIELDS
                elif fid != OVERFLOW_FIELD:
                    group[fid] = 32
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
                ok, nsw = simple_number(buf, a, p, pow10)
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
                if ns_end > ns and not valid_field_name(buf, ns, ns_end):
                    code = E_FIELD_NAME
                    break
                fid = register_field(fseed, lookup_keys, lookup_ids, seeds, reg, names, ns,
                                     ns_end - ns, NAME_DEFAULT_NS if ns_end == ns else 0)
                if fid < 0:
                    code = E_TOO_MANY_FIELDS
                    break
                if fid != OVERFLOW_FIELD:
                    group[fid] = buf[ns] if ns_end > ns else 32
            # past the registry's capacity a namespace shares the overflow field, its keys
            # seeded by its own name
            seed = fseed if fid == OVERFLOW_FIELD else seeds[fid]
            fkey[fid] = ns_range
            anon = 0
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
                v = nsw
                name_end = p
                if colon >= 0:
                    name_end = colon
                    if colon + 1 == p:
                        v = 1.0  # `a:` with nothing after the colon: a, value 1 (as VW)
                    elif looks_numeric(buf, colon + 1, p):
                        ok, v = simple_number(buf, colon + 1, p, pow10)
                        if not ok:
                            st, v, q = parse_number(buf, colon + 1, p, False, pow5, pow10)
                            ok = st == NUM_OK and q == p
                        if not ok:
                            code = E_NUMBER
                            break
                        v *= nsw
                    else:
                        # a string value (VW: name:string is the feature name^string, value
                        # 1); it runs to the next blank, through bars and colons
                        while p < line_end and not _blank(buf[p]):
                            p += 1
                        buf[colon] = 94  # ^: the token's bytes are name^value
                        name_end = p
                        v = 1.0
                if not abs(v) <= MAX_ABS_VALUE:  # (inf * 0 is NaN)
                    code = E_NUMBER
                    break
                if name_end == a:  # an anonymous feature: numbered within the namespace
                    h = anonymous_hash(seed, anon)
                    anon += 1
                elif name_end - a < 32:
                    h = xxh64_small(buf, a, name_end, seed)
                else:
                    h = xxh64(buf, a, name_end, seed)
                if v == 0.0:
                    continue
                if nnz - row_start >= max_row:
                    code = E_TOO_MANY_FEATURES
                    fcode = F_ROW
                    break
                emit(keys, fields, values, refs, kinds, hashes, row_start, nnz, fid, h, v, a,
                     name_end - a, hash_mask)
                nnz += 1
        if code == 0:
            if pair_a.size == 0:  # finish_row's dedupe alone, without its call overhead
                nnz = _dedupe(keys, fields, values, refs, kinds, hashes, row_start, row_start,
                              nnz, stamp, spos, 2 * (rows + 1))
            else:
                nnz = finish_row_groups(keys, fields, values, refs, kinds, hashes, row_start,
                                        nnz, max_row, pair_a, pair_b, pair_f, seeds, hash_mask,
                                        group, stamp, spos, rows + 1)
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
        bases[rows] = base
        rows = end_row(indptr, labels, weights, lines, rows, nnz, label, weight, nline)
        nline += 1
        pos = eol + 1
    save_state(state, min(pos, end), rows, nnz, nline)
    return status
