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

- ``label``: 0, 1 or -1 (-1 means 0, as in the Criteo and VW readers) in any JSON spelling
  of those numbers (``1.0``, ``1e0``), or ``true``/``false``; ``null`` or no label at all
  gives NaN (the row can be predicted; ``require_label`` makes it E_MISSING_LABEL).
  Anything else is E_LABEL.
- ``weight``: a number from 0 to ``limits.MAX_WEIGHT`` (E_WEIGHT otherwise); ``null`` or
  absent means 1.
- ``id``: a string (its raw byte range is kept per row in ``Batch.extra``: ``id_start``
  (-1: none), ``id_len``, ``id_escaped``; ``event_ids`` decodes them); ``null`` means none;
  another type is E_TYPE.
- ``features`` absent or ``{}`` is E_EMPTY_FEATURES; not an object, E_TYPE.
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
wrapper) or empty (the event as a whole).

For the HTTP service, ``parse_events`` (an NDJSON body) and ``parse_event_array`` (a body
``{"events": [...]}``) parse a whole in-memory body in one kernel call, never raise, and
report bad events by index. 1,000 Criteo events of 39 string features (560 KB) take about
1.05 ms of CPU on one core (1.3 ms with the integer columns sent as numbers; msgspec's
decoding of the same body alone: about 3.5 ms).

The parts: ``jsonkernel`` (the compiled scanner), ``jsonscan`` (strings, literals,
skipping values), ``numparse`` (exact decimal conversion), ``dynfields`` (fields registered
by kernels), ``tokenhash`` (inlined xxh64 of short tokens).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from ..batch import Batch
from ..fields import FieldRegistry
from .base import FeatureOptions, Outputs
from .dynfields import DynamicFieldsFormat, registry_lock
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
    KEY_LEN_BITS,
    KEYWORDS,
    LINES,
    PH_DONE,
    STATE_SIZE,
    scan_events,
)
from .jsonscan import string_classes, whitespace
from .numparse import POW5, POW10
from .rows import ERROR, ERROR_MESSAGES, FULL

CLASSES = string_classes()
WS_LINE = whitespace(newline=False)
WS_ANY = whitespace(newline=True)
_FIXED_NAMES = {F_ROW: "", F_LABEL: "label", F_WEIGHT: "weight", F_ID: "id",
                F_FEATURES: "features", F_EVENTS: "events"}


def key_text(buf: np.ndarray, packed: int) -> str:
    """The key an error points at (``err[3]``: start << 24 | raw length)."""
    start, length = packed >> KEY_LEN_BITS, packed & ((1 << KEY_LEN_BITS) - 1)
    raw = buf[start:start + length].tobytes()
    try:
        return str(json.loads(b'"' + raw + b'"'))
    except ValueError:
        return raw.decode("utf-8", "replace")


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

    def __init__(self, registry: FieldRegistry, options: FeatureOptions) -> None:
        super().__init__(registry, options)
        self._opts = np.array([options.drop_missing, options.max_row_features, options.strict,
                               0], dtype=np.int64)
        self._ids = np.zeros((3, 1), dtype=np.int64)
        self._err_field = ""
        #: held while a kernel may register fields: one lock per registry, shared by the
        #: formats that use it (the file reader's thread is alone and does not take it)
        self.lock = registry_lock(registry)

    def options_array(self, require_label: bool) -> np.ndarray:
        opts = self._opts.copy()
        opts[3] = require_label
        return opts

    def parse(self, buf: np.ndarray, pos: int, end: int, final: bool, out: Outputs) -> int:
        self.begin()
        self._ids = np.empty((3, out.labels.size), dtype=np.int64)
        reg = self.registry
        pa, pb, pf = reg.pair_arrays()
        state = np.zeros(STATE_SIZE, dtype=np.int64)
        state[:4] = out.state[:4]
        state[0] = pos
        status = int(scan_events(
            LINES, buf, end, final, self._opts, CLASSES, WS_LINE, KEYWORDS, POW5, POW10,
            reg.seeds, reg.lookup_keys, reg.lookup_ids, self._reg, self._names,
            self.options.hash_mask, pa, pb, pf, out.indptr, out.keys, out.fields, out.values,
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


def id_arrays(ids: np.ndarray) -> dict[str, np.ndarray]:
    return {"id_start": ids[0], "id_len": ids[1], "id_escaped": ids[2]}


def event_ids(batch: Batch) -> list[str | None]:
    """The ``id`` of each row of a JSON batch (None where the event had none)."""
    starts = batch.extra["id_start"]
    lens = batch.extra["id_len"]
    escaped = batch.extra["id_escaped"]
    assert isinstance(starts, np.ndarray) and isinstance(lens, np.ndarray)
    assert isinstance(escaped, np.ndarray) and batch.buf is not None
    raw = batch.buf
    out: list[str | None] = []
    for s, n, e in zip(starts.tolist(), lens.tolist(), escaped.tolist(), strict=True):
        if s < 0:
            out.append(None)
            continue
        text = raw[s:s + n].tobytes()
        out.append(json.loads(b'"' + text + b'"') if e else text.decode("utf-8"))
    return out


@dataclass
class EventError:
    """A bad event of a body: its index (0-based line or array position; -1: the body
    itself), the field and the message; ``code`` is the ``rows.E_*`` code."""

    index: int
    field: str
    message: str
    code: int


@dataclass
class EventsResult:
    """The good events of a body as one batch (``extra["event_index"]`` maps rows back to
    events), and the bad ones."""

    batch: Batch
    errors: list[EventError]

    @property
    def ok(self) -> bool:
        return not self.errors


def _as_buffer(body: bytes | bytearray | memoryview | np.ndarray) -> np.ndarray:
    if isinstance(body, np.ndarray):
        arr = np.ascontiguousarray(body).reshape(-1).view(np.uint8)
    else:
        arr = np.frombuffer(body, dtype=np.uint8)
    # kernels are compiled for writable arrays: one type, one compiled version
    return arr if arr.flags.writeable else arr.copy()


def _grow(out: Outputs, ids: np.ndarray) -> tuple[Outputs, np.ndarray]:
    """The same outputs with twice the room where the kernel ran out of it."""
    rows, used = int(out.state[1]), int(out.state[2])
    rows_cap = out.labels.size * (2 if rows + 1 >= out.labels.size else 1)
    new = Outputs.allocate(rows_cap, 2 * out.keys.size)
    new.indptr[: rows + 1] = out.indptr[: rows + 1]
    for name in ("keys", "fields", "values", "refs", "kinds"):
        getattr(new, name)[:used] = getattr(out, name)[:used]
    for name in ("labels", "weights", "lines"):
        getattr(new, name)[:rows] = getattr(out, name)[:rows]
    new_ids = np.empty((3, rows_cap), dtype=np.int64)
    new_ids[:, :rows] = ids[:, :rows]
    new.err, new.state = out.err, out.state
    return new, new_ids


def _events(body: bytes | bytearray | memoryview | np.ndarray, fmt: JsonlFormat,
            require_label: bool, array: bool) -> EventsResult:
    buf = _as_buffer(body)
    end = int(buf.size)
    max_row = fmt.options.max_row_features
    rows_cap = end // 16 + 2  # an event takes at least 20 bytes: rarely grown
    out = Outputs.allocate(rows_cap, end // 3 + rows_cap + max_row + 64)
    out.state = np.zeros(STATE_SIZE, dtype=np.int64)
    ids = np.empty((3, rows_cap), dtype=np.int64)
    opts = fmt.options_array(require_label)
    reg = fmt.registry
    errors: list[EventError] = []
    with fmt.lock:
        pa, pb, pf = reg.pair_arrays()
        while True:
            fmt.begin()
            status = scan_events(
                ARRAY if array else LINES, buf, end, True, opts, CLASSES,
                WS_ANY if array else WS_LINE, KEYWORDS, POW5, POW10, reg.seeds,
                reg.lookup_keys, reg.lookup_ids, fmt._reg, fmt._names, fmt.options.hash_mask,
                pa, pb, pf, out.indptr, out.keys, out.fields, out.values, out.refs, out.kinds,
                out.labels, out.weights, out.lines, ids, out.err, out.state)
            fmt.adopt_names(buf)
            if status == FULL:
                out, ids = _grow(out, ids)
                continue
            if status != ERROR:
                break
            code = int(out.err[0])
            index = int(out.state[5])
            errors.append(EventError(index, error_field(buf, out.err, reg),
                                     ERROR_MESSAGES.get(code, f"error {code}"), code))
            out.err[:] = 0
            if array:
                if out.state[4] == PH_DONE:
                    break
            else:  # go on after the bad line
                nl = buf[int(out.state[0]):].tobytes().find(b"\n")
                out.state[0] = end if nl < 0 else int(out.state[0]) + nl + 1
                out.state[3] += 1
    rows = int(out.state[1])
    batch = out.batch(buf, 1)
    batch.extra = {**id_arrays(ids[:, :rows]), "event_index": out.lines[:rows]}
    if array:
        batch.lines = None
    return EventsResult(batch, errors)


def parse_events(body: bytes | bytearray | memoryview | np.ndarray, fmt: JsonlFormat, *,
                 require_label: bool) -> EventsResult:
    """Parse an NDJSON body (one event per line) without raising: bad lines are skipped
    and reported (``EventError.index`` is the 0-based line). Blank lines are skipped.
    ``require_label``: an event without a label is an error (E_MISSING_LABEL)."""
    return _events(body, fmt, require_label, array=False)


def parse_event_array(body: bytes | bytearray | memoryview | np.ndarray, fmt: JsonlFormat,
                      *, require_label: bool) -> EventsResult:
    """Parse a body ``{"events": [event, ...]}`` without raising; errors carry the event's
    position in the list. A bad event is skipped when it is valid JSON; after a syntax error
    nothing more of the body can be read (it is reported, with the events before it kept).
    Other keys of the body are ignored (E_UNKNOWN_KEY with ``strict``)."""
    return _events(body, fmt, require_label, array=True)
