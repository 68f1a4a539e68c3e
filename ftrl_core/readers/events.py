"""File rows as HTTP event bodies: the bytes of ``{"events": [...]}`` straight from a file.

``ctr replay`` and ``ctr predict --url`` send a file to the service, on the same two cores
as the server, so the conversion must cost far less than the server's learning. For Criteo
TSV and Avazu CSV a compiled kernel walks the raw bytes of a chunk and writes the JSON body
directly: no Python object per row or token.

Each row becomes ``{"label":1,"features":{"I1":"3","I2":"",...}}``:

- fields in column order, named as the readers name them (Criteo: ``criteo.FIELDS``, so the
  server registers them as fields 1..39 like ``ctr train`` does; Avazu: the header's names
  minus ``id`` and ``click``); every column is present and an empty one is ``""``, which the
  server turns into the same missing token as the file readers;
- values are JSON strings (categorical tokens; Criteo integer columns too, as the reader
  treats them); ``"`` and ``\\`` are escaped, control bytes become ``\\u00XX``; bytes that
  are not UTF-8 cannot travel in JSON and make the line bad;
- the label as ``0``/``1`` (``-1`` reads as 0, as in the readers); predict bodies carry none.

Lines the file readers refuse (wrong column count, a bad label, a non-integer in a Criteo
integer column) are refused here too, so a replay learns exactly the rows ``ctr train``
learns. JSON lines and VW text are handled in ``eventlines``; ``eventsource`` picks the
reader for a file.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .._jit import kernel
from .criteo import FIELDS as CRITEO_FIELDS
from .dynfields import utf8_len
from .rows import E_COLUMNS, E_INTEGER, E_LABEL, E_MISSING_LABEL, ERROR_MESSAGES
from .source import InputError

BODY_PREFIX = b'{"events":['
BODY_SUFFIX = b"]}"

#: kernel status codes
NEED_INPUT = 0
BODY_FULL = 1
BAD_LINE = 2
NO_SPACE = 3

E_UTF8 = 101
MESSAGES = {**ERROR_MESSAGES, E_UTF8: "is not valid UTF-8 (JSON cannot carry it)",
            E_MISSING_LABEL: "label is missing (training needs one)"}

#: byte classes
C_SEP = 1
C_NEWLINE = 2
C_CARE = 3


def byte_classes(sep: int) -> np.ndarray:
    cls = np.zeros(256, dtype=np.uint8)
    cls[:32] = C_CARE
    cls[128:] = C_CARE
    cls[[34, 92]] = C_CARE
    cls[10] = C_NEWLINE
    cls[sep] = C_SEP
    return cls


#: column roles in ``col_field``
SKIP = -1
LABEL = -2


@dataclass
class EventBatch:
    """One request body of events and, per event, its label (NaN: none) and file line;
    ``spans[i]`` is the byte range of event i in ``body``."""

    body: bytes
    labels: np.ndarray
    lines: np.ndarray
    spans: np.ndarray

    @property
    def rows(self) -> int:
        return int(self.labels.size)

    def without(self, drop: Sequence[int]) -> EventBatch:
        """The same body without the events at indices ``drop``."""
        gone = set(drop)
        keep = [i for i in range(self.rows) if i not in gone]
        parts = [self.body[int(self.spans[i, 0]):int(self.spans[i, 1])] for i in keep]
        body = BODY_PREFIX + b",".join(parts) + BODY_SUFFIX
        spans = np.empty((len(keep), 2), dtype=np.int64)
        at = len(BODY_PREFIX)
        for j, part in enumerate(parts):
            spans[j] = (at, at + len(part))
            at += len(part) + 1
        return EventBatch(body, self.labels[keep], self.lines[keep], spans)


@kernel
def delimited_events(buf, pos, end, final, classes, label_col, short_rows, col_field,
                     int_cols, names, name_off, label_mode, max_rows, row_budget, out, labels,
                     lines, spans, starts, err, state):
    """Append the complete lines of ``buf[pos:end]`` to the body in ``out`` as events.

    ``classes[byte]``: C_SEP, C_NEWLINE, C_CARE (escaped or checked: control bytes, quote,
    backslash, non-ASCII) or 0. ``col_field[c]``: output field of column c, SKIP or LABEL;
    ``short_rows``: a row may lack the label column (Criteo's test layout); ``int_cols[c]``:
    the column must hold an integer; ``names[name_off[f]:name_off[f+1]]``: the bytes
    ``"name":"`` of field f, then ``"label":`` and ``"features":{``. ``label_mode``: 1
    writes labels and requires them, 0 writes none. ``state`` (in/out): pos, rows, out
    position, line number at pos. Returns NEED_INPUT, BODY_FULL (``max_rows`` rows),
    NO_SPACE or BAD_LINE (``err``: code, column, line offset; the line is not written).
    """
    ncols = col_field.size
    nf = name_off.size - 3  # the last two names are the keys "label": and "features":{
    rows = state[1]
    o = state[2]
    line = state[3]
    status = NEED_INPUT
    while pos < end:
        if rows >= max_rows:
            status = BODY_FULL
            break
        # one pass: the separators, the end of the line, and whether a byte needs care
        ncol = 1
        starts[0] = pos
        plain = True
        eol = pos
        while eol < end:
            k = classes[buf[eol]]
            if k != 0:
                if k == C_SEP:
                    if ncol < ncols:
                        starts[ncol] = eol + 1
                    ncol += 1
                elif k == C_NEWLINE:
                    break
                else:
                    plain = False
            eol += 1
        if eol == end and not final:
            break
        line_end = eol
        if line_end > pos and buf[line_end - 1] == 13:
            line_end -= 1
        if line_end == pos:  # blank line
            pos = eol + 1
            line += 1
            continue
        if o + 6 * (line_end - pos) + row_budget > out.size:
            status = NO_SPACE
            break
        code = 0
        bad_col = -1
        has_label = label_col >= 0
        if ncol == ncols - 1 and has_label and short_rows:
            has_label = False
        elif ncol != ncols:
            code = E_COLUMNS
            bad_col = ncol
        if code == 0:
            starts[ncol] = line_end + 1
            if not has_label and label_mode == 1:
                code = E_MISSING_LABEL
                bad_col = label_col
        label = np.nan
        if code == 0 and has_label:
            a = starts[label_col]
            n = starts[label_col + 1] - 1 - a
            if n == 1 and buf[a] == 48:
                label = 0.0
            elif n == 1 and buf[a] == 49:
                label = 1.0
            elif n == 2 and buf[a] == 45 and buf[a + 1] == 49:
                label = 0.0
            else:
                code = E_LABEL
                bad_col = label_col
        row_o = o
        if code == 0:
            if rows > 0:
                out[o] = 44  # ,
                o += 1
            spans[rows, 0] = o
            out[o] = 123  # {
            o += 1
            if label_mode == 1:
                for k in range(name_off[nf], name_off[nf + 1]):  # "label":
                    out[o] = names[k]
                    o += 1
                out[o] = 49 if label == 1.0 else 48
                out[o + 1] = 44
                o += 2
            for k in range(name_off[nf + 1], name_off[nf + 2]):  # "features":{
                out[o] = names[k]
                o += 1
            first = True
            for c in range(ncol):
                lc = c if has_label or label_col < 0 or c < label_col else c + 1
                f = col_field[lc]
                if f < 0:
                    continue
                a = starts[c]
                b = starts[c + 1] - 1
                if int_cols[lc] != 0 and b > a:
                    j = a + 1 if buf[a] == 45 else a
                    ok = j < b
                    while j < b:
                        if buf[j] < 48 or buf[j] > 57:
                            ok = False
                            break
                        j += 1
                    if not ok:
                        code = E_INTEGER
                        bad_col = lc
                        break
                if not first:
                    out[o] = 44
                    o += 1
                first = False
                nb = name_off[f]
                for k in range(name_off[f + 1] - nb):
                    out[o + k] = names[nb + k]
                o += name_off[f + 1] - nb
                if plain:  # the common case: a straight copy
                    for k in range(b - a):
                        out[o + k] = buf[a + k]
                    o += b - a
                    out[o] = 34
                    o += 1
                    continue
                j = a
                while j < b:
                    ch = buf[j]
                    if ch == 34 or ch == 92:  # " and \
                        out[o] = 92
                        out[o + 1] = ch
                        o += 2
                        j += 1
                    elif ch < 32:
                        out[o] = 92
                        out[o + 1] = 117  # u
                        out[o + 2] = 48
                        out[o + 3] = 48
                        out[o + 4] = 48 + (ch >> 4)
                        low = ch & 15
                        out[o + 5] = 48 + low if low < 10 else 87 + low
                        o += 6
                        j += 1
                    elif ch < 128:
                        out[o] = ch
                        o += 1
                        j += 1
                    else:
                        n = utf8_len(buf, j, b)
                        if n == 0:
                            code = E_UTF8
                            bad_col = lc
                            break
                        for k in range(n):
                            out[o + k] = buf[j + k]
                        o += n
                        j += n
                if code != 0:
                    break
                out[o] = 34
                o += 1
        if code != 0:
            err[0] = code
            err[1] = bad_col
            err[2] = pos
            o = row_o
            status = BAD_LINE
            break
        out[o] = 125
        out[o + 1] = 125
        o += 2
        spans[rows, 1] = o
        labels[rows] = label
        lines[rows] = line
        rows += 1
        line += 1
        pos = eol + 1
    state[0] = min(pos, end)
    state[1] = rows
    state[2] = o
    state[3] = line
    return status


@dataclass(frozen=True)
class Layout:
    """The columns of a delimited file: separator, roles, field names."""

    classes: np.ndarray
    col_field: np.ndarray
    int_cols: np.ndarray
    names: np.ndarray
    name_off: np.ndarray
    label_col: int
    short_rows: bool
    column_names: tuple[str, ...]

    @classmethod
    def build(cls, sep: str, columns: Sequence[str], roles: Sequence[int],
              int_cols: Sequence[bool], short_rows: bool = False) -> Layout:
        import json

        fields = [c for c, r in zip(columns, roles, strict=True) if r >= 0]
        encoded = [json.dumps(f, ensure_ascii=False).encode() + b':"' for f in fields]
        encoded += [b'"label":', b'"features":{']
        off = np.zeros(len(encoded) + 1, dtype=np.int64)
        off[1:] = np.cumsum([len(e) for e in encoded])
        label = [i for i, r in enumerate(roles) if r == LABEL]
        names = np.frombuffer(b"".join(encoded), np.uint8).copy()
        return cls(byte_classes(ord(sep)), np.asarray(roles, np.int64),
                   np.asarray(int_cols, np.int64), names, off, label[0] if label else -1,
                   short_rows, tuple(columns))

    @property
    def row_budget(self) -> int:
        """Bytes of an event beyond 6x its line: label, names, quotes, commas, braces."""
        return 40 + int(self.name_off[-1]) + 2 * self.col_field.size

    def column_name(self, col: int) -> str:
        return self.column_names[col] if 0 <= col < len(self.column_names) else ""


def criteo_layout() -> Layout:
    roles = [LABEL, *range(len(CRITEO_FIELDS))]
    ints = [False] + [name.startswith("I") for name in CRITEO_FIELDS]
    return Layout.build("\t", ["label", *CRITEO_FIELDS], roles, ints, short_rows=True)


def avazu_layout(header: bytes, source: str) -> Layout:
    """The columns named by the header, as the ``avazu`` reader takes them."""
    text = header.decode("utf-8-sig", "replace").rstrip("\r\n")
    columns = [c.strip() for c in text.split(",")]
    if len(columns) < 2 or any(not c for c in columns):
        raise InputError(f"{source}: the header {text[:80]!r} is not a list of column names")
    if len(set(columns)) != len(columns):
        raise InputError(f"{source}: the header repeats a column name: {text[:80]!r}")
    roles: list[int] = []
    for c in columns:
        roles.append(LABEL if c == "click" else SKIP if c == "id" else
                     sum(1 for r in roles if r >= 0))
    return Layout.build(",", columns, roles, [False] * len(columns))
