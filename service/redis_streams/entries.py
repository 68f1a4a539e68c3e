"""Stream entries as events: the ``event`` field of each entry is one JSON event (the format
of ``POST /v1/train``'s events and of NDJSON streams); a batch of entries becomes one NDJSON
piece for ``LearnerService.learn_lines``, line i being entry i.

An entry that cannot be a line of that piece is refused before parsing: no ``event`` field,
an empty event, or an event spread over several lines that is not valid JSON (a valid one is
put on one line: its newlines can only be whitespace between tokens). Each entry gets a
dedupe key: ``e:<id>`` for an event with a string ``id``, ``s:<entry id>`` otherwise (that
still recognises the same entry delivered twice, not the same event sent twice).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import msgspec

from ftrl_core.readers.jsonl import EventError

from ..events import line_detail

EVENT_FIELD = b"event"
#: longest bad value quoted in a dead letter's reason
MAX_QUOTED = 80


class _WithId(msgspec.Struct):
    """Decoding into this reads only ``id`` (msgspec skips the other keys without building
    them): about a microsecond per event."""

    id: str | None = None


_ID_DECODER = msgspec.json.Decoder(_WithId)


@dataclass(slots=True)
class Entry:
    """One stream entry: its id, its fields, the event line (None if refused, with the
    reason), its dedupe key and its position in the batch read."""

    entry_id: bytes
    fields: dict[bytes, bytes]
    event: bytes | None
    reason: str | None
    key: bytes
    pos: int


def prepare(entry_id: bytes, fields: dict[bytes, bytes], pos: int) -> Entry:
    key = b"s:" + entry_id
    raw = fields.get(EVENT_FIELD)
    if raw is None:
        names = ", ".join(sorted(f.decode("utf-8", "replace") for f in fields))
        return Entry(entry_id, fields, None, f"the entry has no 'event' field (its fields: "
                     f"{names})", key, pos)
    if not raw.strip():
        return Entry(entry_id, fields, None, "event: the event is empty", key, pos)
    event_id = None
    try:
        event_id = _ID_DECODER.decode(raw).id
    except RecursionError:  # nested too deep for msgspec: the parser says so, by line
        pass
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        if b"\n" in raw or b"\r" in raw:  # cannot be one line; the parser won't see it
            return Entry(entry_id, fields, None, f"event: malformed JSON: {exc}", key, pos)
    else:
        if b"\n" in raw or b"\r" in raw:
            raw = raw.replace(b"\n", b" ").replace(b"\r", b" ")
    if event_id is not None:
        key = b"e:" + event_id.encode()
    return Entry(entry_id, fields, raw, None, key, pos)


def ndjson(entries: list[Entry]) -> bytes:
    """The events of ``entries`` as NDJSON, line i = entry i (every event is one line)."""
    return b"\n".join(e.event for e in entries if e.event is not None) + b"\n"


def reason(event: bytes, err: EventError) -> str:
    """Why the parser refused ``event``: the field, what is wrong, and the value."""
    detail = line_detail(event, err)
    if not err.field:
        return f"event: {detail}"
    value = err.value if err.value is not None else _value_at(event, err.field)
    quoted = "" if value is None else f" (got {value})"
    return f"{err.field}: {detail}{quoted}"


def _value_at(event: bytes, field: str) -> str | None:
    """The JSON text of the value at ``field`` (``label``, ``features.<name>``, a top-level
    key), or None when the event does not decode (Python's json reads NaN and Infinity)."""
    try:
        obj: Any = json.loads(event)
    except (ValueError, RecursionError):
        return None
    path = [field]
    if field.startswith("features.") and isinstance(obj, dict) \
            and isinstance(obj.get("features"), dict) and field not in obj:
        path = ["features", field.removeprefix("features.")]
    for part in path:
        if not isinstance(obj, dict) or part not in obj:
            return None
        obj = obj[part]
    text = json.dumps(obj)
    return text if len(text) <= MAX_QUOTED else text[:MAX_QUOTED] + "..."
