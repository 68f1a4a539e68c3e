"""Event errors: the compiled scanner's, and the problems they make.

``ftrl_core.readers.jsonl`` reports each bad event with its index, field and a message;
anything that is not valid JSON to it is one "syntax error". Here, on the error path only,
the body is checked again to tell apart:

- malformed JSON (400, with the byte, line and column msgspec stops at),
- ``NaN``/``Infinity`` literals, which the contract counts as invalid numbers (422, with the
  event and its field),
- valid JSON of the wrong shape (422: no ``events`` list, an event that is not an object).

Range limits (importance weights up to ``MAX_WEIGHT``, feature values, interaction products
and summed repeats included, within +-``MAX_ABS_VALUE``) are the readers' own
(``ftrl_core.limits``): the scanner reports them as E_WEIGHT (field ``weight``) and E_NUMBER
(``features.<name>``) like any other bad event, for training and predictions alike.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec
import numpy as np

from ftrl_core.readers.jsonl import EventError
from ftrl_core.readers.jsonscan import MAX_DEPTH, too_deep_at
from ftrl_core.readers.quoting import value_text
from ftrl_core.readers.rows import E_SYNTAX

from .errors import Problem

#: errors listed in one problem (the count of all of them is in ``error_count``)
MAX_LISTED_ERRORS = 1000


_BYTE = re.compile(r"\(byte (\d+)\)")
_NON_FINITE = (b"NaN", b"Infinity")


class _Skip(msgspec.Struct):
    """Decoding into a field-less struct checks the syntax without building objects."""


def syntax_error(body: bytes | bytearray) -> tuple[str, int] | None:
    """(message, byte offset or -1) of the first JSON syntax error in ``body``, or None.

    msgspec recurses once per nesting level and stops at Python's recursion limit (about a
    thousand levels, less the caller's stack) with a RecursionError, which says neither
    where nor why: the position is then found here, as the compiled scanner's depth limit
    (``MAX_DEPTH``) reports it."""
    try:
        msgspec.json.decode(body, type=_Skip)
    except RecursionError:
        pos = int(too_deep_at(np.frombuffer(body, dtype=np.uint8), MAX_DEPTH))
        if pos < 0:  # msgspec's limit is below ours: the real error may be further on
            return f"nested too deeply to check (the limit is {MAX_DEPTH} levels)", -1
        return f"nested deeper than {MAX_DEPTH} levels", pos
    except msgspec.ValidationError:
        pass  # valid JSON, another shape
    except msgspec.DecodeError as exc:
        text = str(exc).removeprefix("JSON is malformed: ")
        if text == "Input data was truncated":
            return "the JSON ends too early", len(body)
        m = _BYTE.search(text)
        pos = int(m.group(1)) if m else -1
        return _BYTE.sub("", text).strip(), pos
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as exc:
        return "invalid UTF-8", exc.start
    return None


def where(body: bytes | bytearray, pos: int) -> str:
    if pos < 0:
        return ""
    line = body.count(b"\n", 0, pos) + 1
    column = pos - (body.rfind(b"\n", 0, pos) + 1) + 1
    return f" at byte {pos} (line {line}, column {column})"


def _non_finite_at(body: bytes | bytearray, pos: int) -> bool:
    return pos >= 0 and body.startswith(_NON_FINITE, pos)


def _non_finite_text(body: bytes | bytearray, pos: int) -> str | None:
    """The NaN or Infinity at ``pos`` (msgspec points after a minus sign), quoted."""
    return value_text(body, pos - 1 if pos > 0 and body[pos - 1] == 45 else pos)


def _shape_detail(err: EventError) -> str:
    if err.index < 0:
        if err.field == "events":
            return 'the body must be a JSON object with an "events" list'
        return 'the body must be a JSON object {"events": [...]}'
    if not err.field:
        return "an event must be a JSON object"
    return f"{err.field} holds an invalid JSON value (lone surrogate or nesting too deep)"


def _item(err: EventError, detail: str | None = None) -> dict[str, Any]:
    item = {"index": err.index if err.index >= 0 else None, "field": err.field,
            "detail": detail or err.message}
    if err.value is not None:
        item["value"] = err.value
    return item


def _got(item: dict[str, Any]) -> str:
    return f" (got {item['value']})" if "value" in item else ""


def body_problem(body: bytes | bytearray, errors: list[EventError], what: str) -> Problem:
    """The problem for a ``{"events": [...]}`` body the scanner found bad (``what``: the
    consequence, e.g. "nothing was learned")."""
    items = []
    for err in errors:
        if err.code != E_SYNTAX:
            items.append(_item(err))
            continue
        found = syntax_error(body)
        if found is None:
            items.append(_item(err, _shape_detail(err)))
            continue
        message, pos = found
        if _non_finite_at(body, pos):
            err.value = _non_finite_text(body, pos)
            items.append(_item(err, "value is not a finite number (NaN and Infinity are not"
                                    " JSON numbers)"))
            continue
        in_event = f" (in event {err.index}, {err.field or 'the event'})" \
            if err.index >= 0 and err.field != "events" else ""
        return Problem(400, "malformed-json",
                       f"malformed JSON{where(body, pos)}: {message}{in_event}; {what}",
                       position=pos if pos >= 0 else None)
    shown = items[:MAX_LISTED_ERRORS]
    first = shown[0]
    at = f"event {first['index']}" if first["index"] is not None else "the body"
    fld = f" field {first['field']}" if first["field"] else ""
    detail = (f"{len(items)} invalid event(s), first {at}{fld}: {first['detail']}"
              f"{_got(first)}; {what}"
              if first["index"] is not None else f"{first['detail']}; {what}")
    return Problem(422, "invalid-events", detail, errors=shown, error_count=len(items))


def line_detail(line: bytes, err: EventError) -> str:
    """A readable message for a bad NDJSON line (a non-finite number sets ``err.value``)."""
    if err.code != E_SYNTAX:
        return err.message
    found = syntax_error(line)
    if found is None:
        return "an event must be a JSON object" if not err.field else \
            f"{err.field} holds an invalid JSON value"
    message, pos = found
    if _non_finite_at(line, pos):
        err.value = _non_finite_text(line, pos)
        return "value is not a finite number (NaN and Infinity are not JSON numbers)"
    at = f" at column {pos + 1}" if pos >= 0 else ""
    return f"malformed JSON{at}: {message}"


def line_error(number: int, line: bytes, err: EventError) -> dict[str, Any]:
    """The report of a bad stream line: its number, field, what is wrong and the value."""
    try:
        detail = line_detail(line, err)
    except Exception:  # describing a bad line must never fail a stream
        detail = err.message
    item: dict[str, Any] = {"line": number, "field": err.field, "detail": detail}
    if err.value is not None:
        item["value"] = err.value
    return item
