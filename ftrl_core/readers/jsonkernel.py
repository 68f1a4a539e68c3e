"""The compiled scanner of JSON events (format and decisions: see ``jsonl``).

One kernel, ``scan_events``, reads many events straight into the CSR output arrays (no
Python object per event or token), in two modes: LINES (one event per line: files, NDJSON
bodies) and ARRAY (the service's body ``{"events": [ev, ...]}``). The event parser is written
inside the kernel's loop on purpose: a call to a compiled function with this many array
arguments costs about 0.4 us of reference counting, as much as parsing the event.

Syntax errors win over the others: an event with a semantic error is validated to its end
and reported as a syntax error if it is not valid JSON; otherwise the scan can go on after
it. The fields a bad event would have registered are rolled back.

The common path, measured on 1,000 Criteo events (39 string fields, 560 bytes each): about
1.0 ms of CPU, from 1.75 ms before these (bit-identical results):

- the key cache: events repeat their keys in the same order, so the key at position k of an
  event is first compared (one masked 8-byte compare with its closing quote, for keys under
  8 bytes) with the plain key at position k of the event before; a hit skips scanning,
  hashing and looking up the name;
- strings are scanned 8 bytes at a time (``jsonscan.read_plain``), escapes and non-ASCII
  bytes falling back to the full reader;
- merging repeated keys is skipped when the event cannot have any: exact keys (no
  ``hash_bits``), each field once, with one value (a field seen twice or a list of two
  items or more turns the merge back on);
- no call per event or number: a label 0/1 and plain numbers (``numparse.
  json_simple_number``) are read inline; a call to a compiled function (``parse_number``)
  costs about 0.1 us of reference counting, a tenth of the event. Value hashes are kept
  only when interactions need them.

Range limits (``ftrl_core.limits``) are checked here: the weight and each number as read, and
the row's values after merging and interactions when it has numbers that could combine.
"""

from __future__ import annotations

import numpy as np

from .._jit import inline_kernel, kernel
from ..fields import OVERFLOW_FIELD
from ..hashing import FIELD_SEED, MAX_FIELDS, xxh64
from ..limits import MAX_ABS_VALUE, MAX_WEIGHT
from .dynfields import (
    NAME_JSON_ESCAPED,
    find_field,
    register_field,
    rollback_fields,
    valid_field_name,
)
from .jsonscan import (
    MAX_DEPTH,
    SLOW,
    at,
    literal,
    non_finite,
    read_plain,
    read_string_full,
    same_key,
    skip_value,
    skip_ws,
)
from .numparse import NUM_OK, NUM_RANGE, NUM_SYNTAX, json_simple_number, parse_number
from .rows import (
    E_EMPTY_FEATURES,
    E_FIELD_NAME,
    E_LABEL,
    E_MISSING_LABEL,
    E_NUMBER,
    E_SYNTAX,
    E_TOO_MANY_FEATURES,
    E_TOO_MANY_FIELDS,
    E_TYPE,
    E_UNKNOWN_FIELD,
    E_UNKNOWN_KEY,
    E_WEIGHT,
    ERROR,
    FULL,
    KIND_JSON_ESCAPED,
    KIND_NUMERIC,
    KIND_PAIR,
    OK,
    _dedupe,
    emit_bias,
    emit_value,
    finish_row_known,
    numeric_hash,
)
from .tokenhash import xxh64_small

LINES = 0
ARRAY = 1

#: error field codes (``err[1]``); F_KEY and F_FEATURE name the key packed in ``err[3]``
F_ROW = -1
F_LABEL = -2
F_WEIGHT = -3
F_ID = -4
F_FEATURES = -5
F_KEY = -6
F_FEATURE = -7
F_EVENTS = -8
F_FIELD = -9  # a field named by its id in ``err[3]`` (an interaction's)
KEY_LEN_BITS = 24
#: rows of the ids array: the id's start, length, escaped; the ``ts`` value's start
ID_ROWS = 4

#: ``state`` slots: pos, rows, nnz, lines (or events) consumed, phase, index of the error,
#: top-level keys other than ``events`` read (ARRAY mode: a prediction whose body has none
#: needs no second look at it)
STATE_SIZE = 7
#: ARRAY phases
PH_START, PH_FIRST, PH_NEXT, PH_AFTER, PH_DONE = 0, 1, 2, 3, 4

KEY_CACHE = 64
INCOMPLETE = -1  # a line that reaches the end of a chunk that is not the last

#: top-level keys, as (offset, length) in KEYWORDS
KEYWORDS = np.frombuffer(b"labelfeaturesweightidevents", dtype=np.uint8).copy()
K_LABEL, K_FEATURES, K_WEIGHT, K_ID, K_EVENTS = 1, 2, 3, 4, 5
_KW_OFF = (0, 0, 5, 13, 19, 21)
_KW_LEN = (0, 5, 8, 6, 2, 6)


@inline_kernel
def keyword(buf: np.ndarray, a: int, n_raw: int, scratch: np.ndarray, n_dec: int,
            kw: np.ndarray) -> int:
    """Which top-level key (K_*) the string just read is, 0 for another one."""
    for k in range(1, 6):
        off = _KW_OFF[k]
        ln = _KW_LEN[k]
        if (n_dec if n_dec >= 0 else n_raw) != ln:
            continue
        same = True
        for i in range(ln):
            c = scratch[i] if n_dec >= 0 else buf[a + i]
            if c != kw[off + i]:
                same = False
                break
        if same:
            return k
    return 0


@inline_kernel
def pack_key(start: int, length: int) -> int:
    return (start << KEY_LEN_BITS) | min(length, (1 << KEY_LEN_BITS) - 1)


@kernel
def scan_events(mode, buf, end, final, opts, cls, wst, kw, pow5, pow10, seeds, lookup_keys,
                lookup_ids, reg, names, hash_mask, pair_a, pair_b, pair_f, indptr, keys,
                fields, values, refs, kinds, labels, weights, lines, ids, err, state):
    """Events of ``buf[state[0]:end]`` into the outputs (``state``: see STATE_SIZE).

    ``opts``: drop_missing, max_row, strict, require_label, declared fields, strict fields,
    ignore labels. ``ids[:, row]``: raw byte range of the row's id (start, -1 if none;
    length; escaped), then where the value of its top-level ``ts`` key starts (-1: none;
    the join's timestamp, a key spelled without escapes, else skipped as unknown). Returns
    OK, FULL or ERROR (``err``: code, F_* field, offset of the line or event, packed key,
    offset of the bad value or -1). In ARRAY mode an error leaves the phase at PH_DONE when
    nothing more can be read (a syntax error).
    """
    drop_missing = opts[0] != 0
    max_row = opts[1]
    strict = opts[2] != 0
    require_label = opts[3] != 0
    declared = opts[4]  # fields 1..declared are the schema (--fields): absent ones are missing
    strict_fields = opts[5] != 0  # a field outside the schema is an error
    ignore_label = opts[6] != 0  # predictions: any label value is skipped unread
    pos = state[0]
    rows = state[1]
    nnz = state[2]
    count = state[3]
    phase = state[4]
    # the dedupe table must hold a whole row: with interactions that is up to max_row;
    # without, it grows with the longest row (zeroing 2 x 256 KB per body costs ~50 us).
    # Per-body tables are sized to the body: a one-event prediction zeroed 20 KB here,
    # more than the rest of its scan touches.
    m = 64
    while m < 2 * max_row and pair_a.size > 0:
        m *= 2
    stamp = np.zeros(m, dtype=np.int64)
    spos = np.zeros(m, dtype=np.int64)
    hashes = np.empty(max_row, dtype=np.uint64)
    scratch = np.empty(end - pos + 16, dtype=np.uint8)
    stack = np.empty(MAX_DEPTH, dtype=np.uint8)
    kc = np.full((KEY_CACHE, 3), -1, dtype=np.int64)  # start, length, field of a key
    # field ids seen: those of the registry, plus at most one new field per 4 bytes of body
    # (a key and a value: ``"":0``), with a margin
    nf = min(MAX_FIELDS + 1, reg[0] + (end - pos) // 2 + 2)
    fseen = np.zeros(nf, dtype=np.int64)  # the event (gen) that last had a field
    fkey = np.zeros(nf, dtype=np.int64)  # its packed key range in that event
    status = OK
    gen = 0
    p = pos
    pairs = pair_a.size > 0  # the value hashes are needed (for interactions)
    err[3] = 0
    err[4] = -1
    if mode == ARRAY and phase == PH_START:
        # the wrapper, up to the events list
        code = E_SYNTAX
        err[1] = F_ROW
        p = skip_ws(buf, p, end, wst)
        if at(buf, p, end) == 123:
            p = skip_ws(buf, p + 1, end, wst)
            while at(buf, p, end) == 34:
                ks = p + 1
                q, n = read_plain(buf, ks, end)
                if q == SLOW:
                    q, n = read_string_full(buf, ks, end, cls, scratch)
                if q < 0:
                    break
                key = keyword(buf, ks, q - 1 - ks, scratch, n, kw)
                p = skip_ws(buf, q, end, wst)
                if at(buf, p, end) != 58:
                    break
                p = skip_ws(buf, p + 1, end, wst)
                if key == K_EVENTS:
                    if at(buf, p, end) == 91:
                        code = 0
                        phase = PH_FIRST
                        p += 1
                    else:
                        code = E_TYPE
                        err[1] = F_EVENTS
                    break
                if strict:
                    code = E_UNKNOWN_KEY
                    err[1] = F_KEY
                    err[3] = pack_key(ks, q - 1 - ks)
                    break
                state[6] += 1
                p = skip_value(buf, p, end, cls, wst, scratch, stack, pow5, pow10)
                if p < 0:
                    p = end
                    break
                p = skip_ws(buf, p, end, wst)
                if at(buf, p, end) != 44:
                    break
                p = skip_ws(buf, p + 1, end, wst)
            if code == E_SYNTAX and at(buf, p, end) == 125:
                err[1] = F_EVENTS  # the body ends without an events list
        if code != 0:
            err[0] = code
            err[2] = p
            state[4] = PH_DONE
            state[5] = -1
            return ERROR
    while True:
        # ---- where the next event starts ----
        if mode == LINES:
            if pos >= end:
                break
            p = skip_ws(buf, pos, end, wst)
            if p < end and buf[p] == 10:  # a blank line
                count += 1
                pos = p + 1
                continue
            if p == end:
                if final:
                    pos = end
                break
            if rows + 1 >= labels.size or nnz + max_row > keys.size:
                status = FULL
                break
        else:
            if phase != PH_FIRST and phase != PH_NEXT:
                break
            p = skip_ws(buf, p, end, wst)
            c = at(buf, p, end)
            if c == 93:
                p += 1
                phase = PH_AFTER
                break
            if rows + 1 >= labels.size or nnz + max_row > keys.size:
                status = FULL
                break
            if phase == PH_NEXT:
                if c != 44:
                    err[0] = E_SYNTAX
                    err[1] = F_EVENTS
                    err[2] = p
                    state[5] = count
                    status = ERROR
                    phase = PH_DONE
                    break
                p = skip_ws(buf, p + 1, end, wst)
        # ---- one event ----
        ev_start = p
        ev_end = p
        vpos = -1  # where the value being read starts (errors quote it)
        gen += 1
        code = 0
        fcode = F_ROW
        krange = 0
        label = np.nan
        weight = 1.0
        id_start = -1
        id_len = 0
        id_esc = 0
        ts_pos = -1
        entries = 0
        row_start = nnz
        w = emit_bias(keys, fields, values, refs, kinds, hashes, row_start, hash_mask)
        distinct = hash_mask == 0  # no field seen twice, no list of two items (so far)
        numeric = False
        fseen[0] = gen  # the bias
        count0 = reg[0]
        new0 = reg[1]
        while True:  # once: ``break`` leaves the event, with ``code`` set on an error
            if at(buf, p, end) != 123:
                code = E_SYNTAX
                break
            p = skip_ws(buf, p + 1, end, wst)
            if at(buf, p, end) == 125:
                code = E_EMPTY_FEATURES
                fcode = F_FEATURES
                break
            while True:  # the event's keys
                if at(buf, p, end) != 34:
                    code = E_SYNTAX
                    break
                ks = p + 1
                q, n = read_plain(buf, ks, end)
                if q == SLOW:
                    q, n = read_string_full(buf, ks, end, cls, scratch)
                if q < 0:
                    code = E_SYNTAX
                    break
                key = keyword(buf, ks, q - 1 - ks, scratch, n, kw)
                p = skip_ws(buf, q, end, wst)
                if at(buf, p, end) != 58:
                    code = E_SYNTAX
                    break
                p = skip_ws(buf, p + 1, end, wst)
                c = at(buf, p, end)
                if key == K_FEATURES:
                    fcode = F_FEATURES
                    if c != 123:
                        code = E_TYPE
                        break
                    p = skip_ws(buf, p + 1, end, wst)
                    if at(buf, p, end) == 125:
                        p += 1
                    else:
                        while True:  # the features: "field": value
                            fcode = F_FEATURES
                            if at(buf, p, end) != 34:
                                code = E_SYNTAX
                                break
                            fs = p + 1
                            # events repeat their keys in the same order: the field of
                            # the key at this position in the last event, if it is the same
                            # (the same bytes as a plain key, then a quote: no scan needed)
                            e = entries if entries < KEY_CACHE else KEY_CACHE - 1
                            entries += 1
                            fid = -1
                            klen = kc[e, 1]
                            if klen >= 0 and same_key(buf, kc[e, 0], fs, klen, end):
                                fid = kc[e, 2]
                                q = fs + klen + 1
                                n = -1
                            else:
                                q, n = read_plain(buf, fs, end)
                                if q == SLOW:
                                    q, n = read_string_full(buf, fs, end, cls, scratch)
                                if q < 0:
                                    code = E_SYNTAX
                                    break
                                klen = q - 1 - fs
                            fcode = F_FEATURE
                            krange = pack_key(fs, klen)
                            if fid < 0:
                                if n >= 0:
                                    fseed = xxh64(scratch, 0, n, FIELD_SEED)
                                elif klen < 32:
                                    fseed = xxh64_small(buf, fs, q - 1, FIELD_SEED)
                                else:
                                    fseed = xxh64(buf, fs, q - 1, FIELD_SEED)
                                fid = find_field(fseed, lookup_keys, lookup_ids)
                                if fid < 0:
                                    if strict_fields:
                                        code = E_UNKNOWN_FIELD
                                        break
                                    if n >= 0:
                                        good = valid_field_name(scratch, 0, n)
                                    else:
                                        good = valid_field_name(buf, fs, q - 1)
                                    if not good:
                                        code = E_FIELD_NAME
                                        break
                                    fid = register_field(
                                        fseed, lookup_keys, lookup_ids, seeds, reg, names, fs,
                                        klen, 0 if n < 0 else NAME_JSON_ESCAPED)
                                    if fid < 0:
                                        code = E_TOO_MANY_FIELDS
                                        break
                                if n < 0 and fid != OVERFLOW_FIELD:
                                    kc[e, 0] = fs
                                    kc[e, 1] = klen
                                    kc[e, 2] = fid
                            # a field past the registry's capacity shares the overflow
                            # field; its keys hash (its name, the value)
                            seed = fseed if fid == OVERFLOW_FIELD else seeds[fid]
                            if fseen[fid] == gen:  # the field again: its keys may repeat
                                distinct = False
                            fseen[fid] = gen
                            fkey[fid] = krange
                            p = skip_ws(buf, q, end, wst)
                            if at(buf, p, end) != 58:
                                code = E_SYNTAX
                                break
                            p = skip_ws(buf, p + 1, end, wst)
                            c = at(buf, p, end)
                            vpos = p
                            in_list = False
                            if c == 91:  # a list of strings
                                in_list = True
                                p = skip_ws(buf, p + 1, end, wst)
                                c = at(buf, p, end)
                                if c == 93:
                                    p += 1
                                    in_list = False
                                    c = -1  # nothing to read
                            while c >= 0:  # the value, or each item of the list
                                vpos = p
                                if c == 34 or (c == 110 and not in_list):  # a token
                                    vs = p + 1
                                    raw = 0
                                    n = -1
                                    if c == 34:
                                        q, n = read_plain(buf, vs, end)
                                        if q == SLOW:
                                            q, n = read_string_full(buf, vs, end, cls, scratch)
                                        if q < 0:
                                            code = E_SYNTAX
                                            break
                                        raw = q - 1 - vs
                                        p = q
                                    else:  # null: the missing token
                                        vs = p
                                        p = literal(buf, p, end)
                                        if p < 0:
                                            code = E_SYNTAX
                                            break
                                    if raw > 0 or not drop_missing:
                                        if w - row_start >= max_row:
                                            code = E_TOO_MANY_FEATURES
                                            break
                                        if n < 0:
                                            if raw < 32:
                                                h = xxh64_small(buf, vs, vs + raw, seed)
                                            else:
                                                h = xxh64(buf, vs, vs + raw, seed)
                                            kind = raw
                                        else:
                                            h = xxh64(scratch, 0, n, seed)
                                            kind = KIND_JSON_ESCAPED - raw
                                        emit_value(keys, fields, values, refs, kinds, hashes,
                                                   row_start, w, fid, h, 1.0, vs, kind,
                                                   hash_mask, pairs)
                                        w += 1
                                elif c == 116 or c == 102:  # true, false
                                    code = E_TYPE if literal(buf, p, end) > 0 else E_SYNTAX
                                    break
                                elif in_list or c == 123:
                                    code = E_TYPE  # (the event is validated afterwards)
                                    break
                                elif c == 45 or 48 <= c <= 57:
                                    simple, v, q = json_simple_number(buf, p, end, pow10)
                                    if simple:
                                        status_n = NUM_OK
                                        p = q
                                    else:
                                        status_n, v, p = parse_number(buf, p, end, True, pow5,
                                                                      pow10)
                                    if status_n == NUM_SYNTAX:
                                        code = E_SYNTAX
                                        break
                                    if status_n == NUM_RANGE or abs(v) > MAX_ABS_VALUE:
                                        code = E_NUMBER
                                        break
                                    if v != 0.0:
                                        numeric = True
                                        if w - row_start >= max_row:
                                            code = E_TOO_MANY_FEATURES
                                            break
                                        emit_value(keys, fields, values, refs, kinds, hashes,
                                                   row_start, w, fid, numeric_hash(seed), v, 0,
                                                   KIND_NUMERIC, hash_mask, pairs)
                                        w += 1
                                else:
                                    code = E_SYNTAX
                                    break
                                if not in_list:
                                    break
                                p = skip_ws(buf, p, end, wst)
                                c = at(buf, p, end)
                                if c == 93:
                                    p += 1
                                    break
                                if c != 44:
                                    code = E_SYNTAX
                                    break
                                distinct = False  # a second item: tokens may repeat
                                p = skip_ws(buf, p + 1, end, wst)
                                c = at(buf, p, end)
                            if code != 0:
                                break
                            p = skip_ws(buf, p, end, wst)
                            c = at(buf, p, end)
                            if c == 125:
                                p += 1
                                break
                            if c != 44:
                                code = E_SYNTAX
                                break
                            p = skip_ws(buf, p + 1, end, wst)
                        if code != 0:
                            break
                elif key == K_LABEL:
                    fcode = F_LABEL
                    vpos = p
                    d = at(buf, p + 1, end)
                    if ignore_label:  # any label, even Python's NaN/Infinity
                        q = non_finite(buf, p, end)
                        p = q if q > 0 else skip_value(buf, p, end, cls, wst, scratch, stack,
                                                       pow5, pow10)
                        if p < 0:
                            code = E_SYNTAX
                            break
                    elif (c == 48 or c == 49) and not (48 <= d <= 57 or d == 46 or d == 101
                                                       or d == 69):
                        label = 1.0 if c == 49 else 0.0  # 0 or 1: no call to parse it
                        p += 1
                    elif c == 45 or 48 <= c <= 57:
                        status_n, v, p = parse_number(buf, p, end, True, pow5, pow10)
                        if status_n == NUM_SYNTAX:
                            code = E_SYNTAX
                            break
                        if status_n != NUM_OK or not (v == 0.0 or v == 1.0):
                            code = E_LABEL
                            break
                        label = 1.0 if v == 1.0 else 0.0
                    elif c == 110:
                        q = literal(buf, p, end)
                        if q < 0:
                            code = E_SYNTAX
                            break
                        label = np.nan
                        p = q
                    elif c == 116 or c == 102:  # booleans are not labels
                        code = E_LABEL if literal(buf, p, end) > 0 else E_SYNTAX
                        break
                    elif c == 34 or c == 91 or c == 123:
                        code = E_LABEL
                        break
                    else:  # not a JSON value (NaN, Infinity): the field is known
                        code = E_SYNTAX
                        break
                elif key == K_WEIGHT:
                    fcode = F_WEIGHT
                    vpos = p
                    if c == 45 or 48 <= c <= 57:
                        simple, v, q = json_simple_number(buf, p, end, pow10)
                        if simple:
                            status_n = NUM_OK
                            p = q
                        else:
                            status_n, v, p = parse_number(buf, p, end, True, pow5, pow10)
                        if status_n == NUM_SYNTAX:
                            code = E_SYNTAX
                            break
                        if status_n != NUM_OK or not 0.0 <= v <= MAX_WEIGHT:
                            code = E_WEIGHT
                            break
                        weight = v if v > 0.0 else 0.0  # no -0.0
                    elif c == 110:
                        p = literal(buf, p, end)
                        if p < 0:
                            code = E_SYNTAX
                            break
                        weight = 1.0
                    elif c == 34 or c == 91 or c == 123 or c == 116 or c == 102:
                        code = E_WEIGHT
                        break
                    else:  # not a JSON value (NaN, Infinity): the field is known
                        code = E_SYNTAX
                        break
                elif key == K_ID:
                    fcode = F_ID
                    vpos = p
                    if c == 34:
                        q, n = read_plain(buf, p + 1, end)
                        if q == SLOW:
                            q, n = read_string_full(buf, p + 1, end, cls, scratch)
                        if q < 0:
                            code = E_SYNTAX
                            break
                        id_start = p + 1
                        id_len = q - 2 - p
                        id_esc = 1 if n >= 0 else 0
                        p = q
                    elif c == 110:
                        p = literal(buf, p, end)
                        if p < 0:
                            code = E_SYNTAX
                            break
                        id_start = -1
                        id_len = 0
                    else:
                        code = E_TYPE
                        break
                else:
                    fcode = F_KEY
                    krange = pack_key(ks, q - 1 - ks)
                    vpos = p
                    if strict:
                        code = E_UNKNOWN_KEY
                        break
                    if n < 0 and q - 1 - ks == 2 and buf[ks] == 116 and buf[ks + 1] == 115:
                        ts_pos = p  # the join's "ts" (plain key): where its value starts
                    p = skip_value(buf, p, end, cls, wst, scratch, stack, pow5, pow10)
                    if p < 0:
                        code = E_SYNTAX
                        break
                fcode = F_ROW
                vpos = -1
                p = skip_ws(buf, p, end, wst)
                c = at(buf, p, end)
                if c == 125:
                    p += 1
                    break
                if c != 44:
                    code = E_SYNTAX
                    break
                p = skip_ws(buf, p + 1, end, wst)
            if code != 0:
                break
            ev_end = p
            if entries == 0:
                code = E_EMPTY_FEATURES
                fcode = F_FEATURES
                break
            if require_label and np.isnan(label):
                code = E_MISSING_LABEL
                fcode = F_LABEL
                break
            vpos = -1
            if declared > 0 and not drop_missing:
                # a declared field the event leaves out is missing, as an empty TSV column
                # (JSON producers omit empty fields)
                for f in range(1, declared + 1):
                    if fseen[f] == gen:
                        continue
                    if w - row_start >= max_row:
                        code = E_TOO_MANY_FEATURES
                        fcode = F_ROW
                        break
                    emit_value(keys, fields, values, refs, kinds, hashes, row_start, w, f,
                               xxh64(buf, 0, 0, seeds[f]), 1.0, 0, 0, hash_mask, pairs)
                    w += 1
                if code != 0:
                    break
            if pair_a.size == 0:  # finish_row's dedupe alone, without its call overhead
                if not distinct:  # (distinct fields, one value each: distinct keys)
                    if 2 * (w - row_start) > stamp.size:
                        while m < 2 * (w - row_start):
                            m *= 2
                        stamp = np.zeros(m, dtype=np.int64)
                        spos = np.zeros(m, dtype=np.int64)
                    w = _dedupe(keys, fields, values, refs, kinds, hashes, row_start,
                                row_start, w, stamp, spos, 2 * gen)
            else:
                w = finish_row_known(keys, fields, values, refs, kinds, hashes, row_start, w,
                                     max_row, pair_a, pair_b, pair_f, seeds, hash_mask, stamp,
                                     spos, gen, distinct)
                if w < 0:
                    code = E_TOO_MANY_FEATURES
                    fcode = F_ROW
                    break
            if numeric and (not distinct or pair_a.size > 0):
                # summed repeats and interaction products must be within the limit too
                for i in range(row_start, w):
                    if abs(values[i]) > MAX_ABS_VALUE:
                        code = E_NUMBER
                        if kinds[i] == KIND_PAIR:
                            fcode = F_FIELD
                            krange = fields[i]
                        else:
                            fcode = F_FEATURE
                            krange = fkey[fields[i]]
                        break
            break
        # ---- after the event ----
        if code == 0 and mode == LINES:
            ev_end = skip_ws(buf, ev_end, end, wst)
            if ev_end == end and not final:
                code = INCOMPLETE
            elif ev_end < end and buf[ev_end] != 10:
                code = E_SYNTAX
                fcode = F_ROW
        if code != 0:
            if reg[0] != count0:  # the key cache may hold fields that are rolled back
                kc[:, 1] = -1
            rollback_fields(lookup_keys, lookup_ids, seeds, reg, names, count0, new0)
            if code != E_SYNTAX and code != INCOMPLETE:
                q = skip_value(buf, ev_start, end, cls, wst, scratch, stack, pow5, pow10)
                if q >= 0 and mode == LINES:
                    q = skip_ws(buf, q, end, wst)
                    if q < end and buf[q] != 10:
                        q = -1
                if q < 0:
                    code = E_SYNTAX
                    fcode = F_ROW
                else:
                    ev_end = q
            if code == INCOMPLETE:
                break
            if mode == LINES and not final:
                eol = ev_start
                while eol < end and buf[eol] != 10:
                    eol += 1
                if eol == end:  # the line is not complete yet
                    break
            err[0] = code
            err[1] = fcode
            err[2] = pos if mode == LINES else ev_start
            err[3] = krange
            err[4] = vpos
            state[5] = count
            status = ERROR
            if mode == ARRAY:
                count += 1
                if code == E_SYNTAX:
                    phase = PH_DONE
                else:
                    p = ev_end
                    phase = PH_NEXT
            break
        nnz = w
        labels[rows] = label
        weights[rows] = weight
        lines[rows] = count
        ids[0, rows] = id_start
        ids[1, rows] = id_len
        ids[2, rows] = id_esc
        ids[3, rows] = ts_pos
        rows += 1
        indptr[rows] = nnz
        count += 1
        if mode == LINES:
            pos = min(ev_end + 1, end)
        else:
            p = ev_end
            phase = PH_NEXT
    if mode == ARRAY and phase == PH_AFTER:
        # the rest of the wrapper: more keys, then the end of the body
        phase = PH_DONE
        code = 0
        while True:
            p = skip_ws(buf, p, end, wst)
            c = at(buf, p, end)
            if c == 125:
                p = skip_ws(buf, p + 1, end, wst)
                if p != end:
                    code = E_SYNTAX
                break
            code = E_SYNTAX
            if c != 44:
                break
            p = skip_ws(buf, p + 1, end, wst)
            if at(buf, p, end) != 34:
                break
            ks = p + 1
            q, n = read_plain(buf, ks, end)
            if q == SLOW:
                q, n = read_string_full(buf, ks, end, cls, scratch)
            if q < 0:
                break
            if strict:
                code = E_UNKNOWN_KEY
                err[3] = pack_key(ks, q - 1 - ks)
                break
            state[6] += 1
            p = skip_ws(buf, q, end, wst)
            if at(buf, p, end) != 58:
                break
            p = skip_value(buf, p + 1, end, cls, wst, scratch, stack, pow5, pow10)
            if p < 0:
                p = end
                break
            code = 0
        if code != 0:
            err[0] = code
            err[1] = F_KEY if code == E_UNKNOWN_KEY else F_ROW
            err[2] = p
            state[5] = -1
            status = ERROR
    state[0] = pos if mode == LINES else p
    state[1] = rows
    state[2] = nnz
    state[3] = count
    state[4] = phase
    return status
