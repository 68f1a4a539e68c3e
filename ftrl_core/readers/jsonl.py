"""JSON lines: one event per line, and the in-memory event bodies of the HTTP service.

An event is ``{"label": 1, "features": {"site": "a.com", "price": 2.5, "tags": ["x", "y"],
"banner": null}, "weight": 1.0, "id": "ev-17"}``:

- a string is a categorical token of its field (the xxh64 of its decoded UTF-8 bytes, seeded
  by the field; escapes are decoded first, so ``"\\u00e9"`` and ``"é"`` are one token);
- ``""`` and ``null`` are the field's missing token (the hash of zero bytes, what the Criteo
  reader emits for an empty column), or nothing with ``drop_missing``;
- a number is the field's real-valued feature (``rows.numeric_hash`` of the field seed) with
  that value; 0 adds nothing; a number beyond +-``limits.MAX_ABS_VALUE`` (or one that
  overflows binary64) is E_NUMBER, and so is a row value past it after repeats of the field
  are summed or in an interaction's product (naming the field, or the interaction's);
- a list holds strings (tokens, repeats summed: ``["x", "x"]`` is x with value 2; ``""`` in
  a list is the missing token; ``[]`` adds nothing); any other item is E_TYPE, as are
  ``true``/``false`` and objects as feature values.

Decisions where the brief left a choice:

- ``label``: a JSON number equal to 0 or 1 (``0``, ``1``, and as JSON has one number type,
  ``1.0`` or ``1e0`` too: numeric producers write labels as floats); ``null`` or no label
  at all gives NaN (the row can be predicted; ``require_label`` makes it E_MISSING_LABEL).
  Anything else is E_LABEL: ``-1`` (VW's negative: in a 0|1 API it is more likely a bug
  than a convention), ``true``/``false``, strings. ``NaN`` and ``Infinity`` are not JSON
  (E_SYNTAX, reported with the field). To predict, ``ignore_label`` skips the value unread,
  whatever it is (Python's ``NaN`` included).
- ``weight``: a number from 0 to ``limits.MAX_WEIGHT`` (E_WEIGHT otherwise); ``null`` or
  absent means 1.
- ``id``: a string (its raw byte range is kept per row in ``Batch.extra``: ``id_start``
  (-1: none), ``id_len``, ``id_escaped``; ``event_ids`` decodes them); ``null`` means none;
  another type is E_TYPE.
- ``features`` absent or ``{}`` is E_EMPTY_FEATURES; not an object, E_TYPE.
- Field names: 1 to ``limits.MAX_FIELD_NAME_BYTES`` bytes, no control characters
  (E_FIELD_NAME), checked when a name is first met. Declared fields
  (``FeatureOptions.fields``, ids 1..n): one an event leaves out gets its missing token
  (nothing with ``drop_missing``), and with ``strict_fields`` an undeclared one is
  E_UNKNOWN_FIELD. Past the registry's capacity new fields share the overflow field
  (``fields.OVERFLOW_FIELD``), keyed by (name, value).
- Repeated keys are not detected: every ``features`` entry counts (a repeated field adds
  its tokens again), and the last ``label``/``weight``/``id`` wins.
- Unknown top-level keys are skipped (their values are still validated) unless
  ``options.strict``, then E_UNKNOWN_KEY names the key.
- Syntax errors (anything msgspec would reject: bad UTF-8, raw control characters, lone
  surrogates, NaN/Infinity, trailing commas, nesting deeper than 1,024) win over the other
  errors of the same event. Numbers are converted exactly (``numparse``).
- A field a bad event would have registered is not registered.

Error fields (``BadLine.field``, ``EventError.field``): ``label``, ``weight``, ``id``,
``features``, ``features.<name>``, the name of an unknown key, ``events`` (the body's
wrapper) or empty (the event as a whole); names are cut and escaped (``quoting``).
``EventError.value`` quotes the bad value when there is one.

For the HTTP service, ``parse_events`` (an NDJSON body) and ``parse_event_array`` (a body
``{"events": [...]}``) parse a whole in-memory body in one kernel call, never raise, and
report bad events by index. 1,000 Criteo events of 39 string features (560 KB) take about
1.05 ms of CPU on one core (1.3 ms with the integer columns sent as numbers; msgspec's
decoding of the same body alone: about 3.5 ms).

The parts: ``jsonkernel`` (the compiled scanner), ``jsonscan`` (strings, literals,
skipping values), ``numparse`` (exact decimal conversion), ``dynfields`` (fields registered
by kernels), ``tokenhash`` (inlined xxh64 of short tokens), ``eventbuffers`` (a body's
output arrays, recycled for predictions), ``eventresults`` (what parsing a body gives).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from ..batch import Batch
from ..fields import FieldRegistry
from .base import FeatureOptions, Outputs
from .dynfields import DynamicFieldsFormat, registry_lock
from .eventbuffers import Recycled, fresh, grow
from .eventresults import EventError, EventsResult, as_buffer, id_arrays
from .eventresults import event_ids as event_ids  # the body API is imported from here
from .jsonkernel import (
    ARRAY,
    F_EVENTS,
    F_FEATURE,
    F_FEATURES,
    F_FIELD,
    F_ID,
    F_KEY,
    F_LABEL,
    F_ROW,
    F_WEIGHT,
    ID_ROWS,
    KEY_LEN_BITS,
    KEYWORDS,
    LINES,
    PH_DONE,
    STATE_SIZE,
    scan_events,
)
from .jsonscan import string_classes, whitespace
from .numparse import POW5, POW10
from .quoting import shorten, value_text
from .rows import E_LABEL, ERROR, ERROR_MESSAGES, FULL

#: JSON events take 0|1 labels only (the readers of VW and TSV files take -1 too)
MESSAGES = {**ERROR_MESSAGES, E_LABEL: "label is not 0 or 1"}
CLASSES = string_classes()
WS_LINE = whitespace(newline=False)
WS_ANY = whitespace(newline=True)
_FIXED_NAMES = {F_ROW: "", F_LABEL: "label", F_WEIGHT: "weight", F_ID: "id",
                F_FEATURES: "features", F_EVENTS: "events"}


def key_text(buf: np.ndarray, packed: int) -> str:
    """The key an error points at (``err[3]``: start << 24 | raw length)."""
    start, length = packed >> KEY_LEN_BITS, packed & ((1 << KEY_LEN_BITS) - 1)
    raw = buf[start:start + min(length, 1024)].tobytes()
    try:
        text = str(json.loads(b'"' + raw + b'"'))
    except ValueError:
        text = raw.decode("utf-8", "backslashreplace")
    if length > 1024:
        return shorten(text, 80)[:80] + f"... ({length} bytes)"
    return shorten(text, 80)


def error_field(buf: np.ndarray, err: np.ndarray, registry: FieldRegistry) -> str:
    """Readable name of the field of a kernel error."""
    code = int(err[1])
    if code == F_KEY:
        return key_text(buf, int(err[3]))
    if code == F_FEATURE:
        return "features." + key_text(buf, int(err[3]))
    if code == F_FIELD:  # an interaction: a field of the registry, never rolled back
        return "features." + registry.name(int(err[3]))
    return _FIXED_NAMES.get(code, "")


class JsonlFormat(DynamicFieldsFormat):
    """One JSON event per line (see the module docstring)."""

    name = "jsonl"
    messages = MESSAGES

    def __init__(self, registry: FieldRegistry, options: FeatureOptions,
                 recycle: bool = False) -> None:
        """``recycle``: in-memory bodies reuse one set of output arrays (see
        ``eventbuffers.Recycled``: each batch is overwritten by the next parse)."""
        super().__init__(registry, options)
        declared = len(options.fields)
        if tuple(registry.names[1:declared + 1]) != options.fields:
            raise ValueError("the field registry does not start with the declared fields")
        self._opts = np.array([options.drop_missing, options.max_row_features, options.strict,
                               0, declared, options.strict_fields, 0], dtype=np.int64)
        # the kernel's options by (require_label, ignore_label) (read-only to it: shared
        # between calls)
        self._opts_by_mode: dict[tuple[bool, bool], np.ndarray] = {}
        for require in (False, True):
            for ignore in (False, True):
                opts = self._opts.copy()
                opts[3], opts[6] = require, ignore
                self._opts_by_mode[(require, ignore)] = opts
        self.hash_mask = options.hash_mask
        self._ids = np.zeros((ID_ROWS, 1), dtype=np.int64)
        self._err_field = ""
        self.recycled = Recycled() if recycle else None
        #: the kernel's arguments for recycled outputs (see scan_body)
        self._bound: tuple[Any, ...] | None = None
        #: held while a kernel may register fields: one lock per registry, shared by the
        #: formats that use it (the file reader's thread is alone and does not take it)
        self.lock = registry_lock(registry)

    def body_outputs(self, end: int) -> tuple[Outputs, np.ndarray]:
        """Outputs and id arrays for an in-memory body of ``end`` bytes (recycled ones if
        the format recycles): room for every row it can hold, and a whole row more."""
        rows_cap = end // 16 + 2  # an event takes at least 20 bytes: rarely grown
        nnz_cap = end // 3 + rows_cap + self.options.max_row_features + 64
        if self.recycled is None:
            return fresh(rows_cap, nnz_cap)
        return self.recycled.take(rows_cap, nnz_cap)

    def scan_body(self, buf: np.ndarray, array: bool, require_label: bool, out: Outputs,
                  ids: np.ndarray, ignore_label: bool = False) -> int:
        """One kernel call over an in-memory body, on from ``out.state``; the fields it
        registered are adopted. Returns OK, FULL or ERROR. The caller holds ``lock``."""
        pairs = self.registry.pair_arrays()
        bound = self._bound
        mode = (array, require_label, ignore_label)
        if self.recycled is None:  # fresh outputs each body: nothing to keep
            args = self._arguments(mode, out, ids, pairs)
        elif bound is not None and bound[0] is out and bound[1] is ids \
                and bound[2] is pairs and bound[3] == mode:
            args = bound[4]
        else:
            args = self._arguments(mode, out, ids, pairs)
            self._bound = (out, ids, pairs, mode, args)
        args[1] = buf
        args[2] = buf.size
        self.begin()
        try:
            status = int(scan_events(*args))
        finally:
            args[1] = None  # the body is not kept
        self.adopt_names(buf)
        return status

    def _arguments(self, mode: tuple[bool, bool, bool], out: Outputs, ids: np.ndarray,
                   pairs: tuple[np.ndarray, np.ndarray, np.ndarray]) -> list[Any]:
        """The kernel's arguments, the body's two left empty. ``scan_body`` keeps them while
        the outputs, the interaction pairs and the mode (array, require_label,
        ignore_label) stay the same (recycled outputs: collecting them anew took a tenth of
        a one-event prediction's Python)."""
        reg = self.registry
        array, require_label, ignore_label = mode
        return [ARRAY if array else LINES, None, 0, True,
                self._opts_by_mode[(require_label, ignore_label)],
                CLASSES, WS_ANY if array else WS_LINE, KEYWORDS, POW5, POW10, reg.seeds,
                reg.lookup_keys, reg.lookup_ids, self._reg, self._names, self.hash_mask,
                *pairs, out.indptr, out.keys, out.fields, out.values, out.refs, out.kinds,
                out.labels, out.weights, out.lines, ids, out.err, out.state]

    def parse(self, buf: np.ndarray, pos: int, end: int, final: bool, out: Outputs) -> int:
        self.begin()
        self._ids = np.empty((ID_ROWS, out.labels.size), dtype=np.int64)
        reg = self.registry
        pa, pb, pf = reg.pair_arrays()
        state = np.zeros(STATE_SIZE, dtype=np.int64)
        state[:4] = out.state[:4]
        state[0] = pos
        status = int(scan_events(
            LINES, buf, end, final, self._opts, CLASSES, WS_LINE, KEYWORDS, POW5, POW10,
            reg.seeds, reg.lookup_keys, reg.lookup_ids, self._reg, self._names,
            self.hash_mask, pa, pb, pf, out.indptr, out.keys, out.fields, out.values,
            out.refs, out.kinds, out.labels, out.weights, out.lines, self._ids, out.err,
            state))
        out.state[:] = state[:4]
        return status

    def after_parse(self, buf: np.ndarray, out: Outputs) -> None:
        self.adopt_names(buf)
        out.extra = id_arrays(self._ids)
        if out.err[0]:
            self._err_field = error_field(buf, out.err, self.registry)

    def field_name(self, column: int) -> str:
        # the kernel's error field code; the text was resolved in after_parse
        return self._err_field


def _events(body: bytes | bytearray | memoryview | np.ndarray, fmt: JsonlFormat,
            require_label: bool, array: bool, ignore_label: bool = False) -> EventsResult:
    buf = as_buffer(body)
    end = int(buf.size)
    out, ids = fmt.body_outputs(end)
    reg = fmt.registry
    errors: list[EventError] = []
    with fmt.lock:
        while True:
            status = fmt.scan_body(buf, array, require_label, out, ids, ignore_label)
            if status == FULL:
                out, ids = grow(out, ids)
                continue
            if status != ERROR:
                break
            code = int(out.err[0])
            index = int(out.state[5])
            errors.append(EventError(index, error_field(buf, out.err, reg),
                                     MESSAGES.get(code, f"error {code}"), code,
                                     value_text(buf, int(out.err[4]))))
            out.err[:] = 0
            out.err[4] = -1
            if array:
                if out.state[4] == PH_DONE:
                    break
            else:  # go on after the bad line
                nl = buf[int(out.state[0]):].tobytes().find(b"\n")
                out.state[0] = end if nl < 0 else int(out.state[0]) + nl + 1
                out.state[3] += 1
    rows = int(out.state[1])
    nnz = int(out.state[2])
    lines = out.lines[:rows]
    batch = Batch(out.indptr[: rows + 1], out.keys[:nnz], out.fields[:nnz], out.values[:nnz],
                  out.labels[:rows], out.weights[:rows], out.refs[:nnz], out.kinds[:nnz], buf,
                  None if array else lines + 1,
                  {"id_start": ids[0, :rows], "id_len": ids[1, :rows],
                   "id_escaped": ids[2, :rows], "ts_start": ids[3, :rows],
                   "event_index": lines})
    return EventsResult(batch, errors)


def parse_events(body: bytes | bytearray | memoryview | np.ndarray, fmt: JsonlFormat, *,
                 require_label: bool) -> EventsResult:
    """Parse an NDJSON body (one event per line) without raising: bad lines are skipped
    and reported (``EventError.index`` is the 0-based line). Blank lines are skipped.
    ``require_label``: an event without a label is an error (E_MISSING_LABEL)."""
    return _events(body, fmt, require_label, array=False)


def parse_event_array(body: bytes | bytearray | memoryview | np.ndarray, fmt: JsonlFormat,
                      *, require_label: bool, ignore_label: bool = False) -> EventsResult:
    """Parse a body ``{"events": [event, ...]}`` without raising; errors carry the event's
    position in the list. A bad event is skipped when it is valid JSON; after a syntax error
    nothing more of the body can be read (it is reported, with the events before it kept).
    Other keys of the body are ignored (E_UNKNOWN_KEY with ``strict``). ``ignore_label``
    (predictions): labels are skipped, whatever their value."""
    return _events(body, fmt, require_label, array=True, ignore_label=ignore_label)
