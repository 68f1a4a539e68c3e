"""The bodies of ``/v1/impressions`` and ``/v1/feedback``, checked at the boundary.

The features of an impression are parsed by the learner's compiled scanner, like
``/v1/train``'s (``ftrl_core.readers.jsonl``, which keeps each event's ``id``); the join's
own members (``ts`` of an impression; ``id``, ``ts``, ``label`` of a feedback event) are
read here with msgspec. Bad ones are ``EventError``s, reported as the scanner's are: a 422
naming the event, the field and the value.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Annotated, Any, Literal

import msgspec
import numpy as np

from ftrl_core.batch import Batch
from ftrl_core.readers.eventtimes import event_times
from ftrl_core.readers.jsonl import EventError

from ..errors import Problem
from .ids import MAX_ID_BYTES

#: timestamps accepted: seconds since the epoch, up to the year 5138
MAX_TS = 1e11
#: how far ahead of the service's clock (the request's arrival) a ``ts`` may be. Event time
#: closes impressions: one ``ts`` far in the future would move the watermark past every
#: pending window and close them all as negatives, with their clicks still to come. Against
#: the wall clock, not the watermark: after a pause in traffic longer than the window the
#: next events are legitimately that far ahead of the watermark. A day allows for clocks
#: badly set and time zones mistaken, not for a year or a timestamp in milliseconds.
MAX_AHEAD_SECONDS = 86400.0

#: the scanner's codes are not ours: these errors carry code 0
_CODE = 0


class _Stamp(msgspec.Struct):
    ts: Any = None


class _StampedBody(msgspec.Struct):
    events: list[_Stamp]


class _Feedback(msgspec.Struct):
    id: Any = None
    ts: Any = None
    label: Any = 1


class _FeedbackBody(msgspec.Struct):
    events: list[_Feedback]


class _ValidFeedback(msgspec.Struct):
    """A feedback event as it must be, checked by msgspec as it decodes (an id's length in
    bytes is checked after); any other body is decoded again as ``_Feedback`` and checked
    event by event, to name each problem."""

    id: Annotated[str, msgspec.Meta(min_length=1)]
    ts: Annotated[float, msgspec.Meta(ge=0, le=MAX_TS)] | None = None
    label: Literal[0, 1] = 1


class _ValidFeedbackBody(msgspec.Struct):
    events: list[_ValidFeedback]


def _quote(value: Any) -> str:
    text = msgspec.json.encode(value).decode()
    return text if len(text) <= 80 else text[:77] + "..."


def check_ts(i: int, value: Any, errors: list[EventError]) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value) or not 0 <= value <= MAX_TS:
        errors.append(EventError(i, "ts", f"ts must be seconds since the epoch, a number "
                                 f"from 0 to {MAX_TS:g}", _CODE, _quote(value)))
        return None
    return float(value)


def check_not_ahead(times: list[float | None], now: float, errors: list[EventError]
                    ) -> None:
    """Refuse each ``ts`` more than ``MAX_AHEAD_SECONDS`` ahead of ``now``."""
    limit = now + MAX_AHEAD_SECONDS
    for i, t in enumerate(times):
        if t is not None and t > limit:
            errors.append(EventError(i, "ts", f"ts is {t - now:.0f} s ahead of the service's "
                                     f"clock ({now:.3f}); at most {MAX_AHEAD_SECONDS:g} s "
                                     "ahead is accepted (seconds since the epoch, not "
                                     "milliseconds)", _CODE, _quote(t)))


def check_ids(ids: Sequence[str | None], errors: list[EventError], required: bool = True
              ) -> None:
    """``check_id`` of each id (None is allowed when not ``required``)."""
    # ids of at most 32 characters are at most 128 UTF-8 bytes: the usual case, checked at
    # once
    if None not in ids and "" not in ids and max(map(len, ids), default=0) <= 32:  # type: ignore[arg-type]
        return
    for i, value in enumerate(ids):
        if required or value is not None:
            check_id(i, value, errors)


def check_id(i: int, value: Any, errors: list[EventError]) -> str | None:
    if value is None:
        errors.append(EventError(i, "id", "id is required (a string, unique per "
                                 "impression)", _CODE, None))
        return None
    if not isinstance(value, str) or not value:
        errors.append(EventError(i, "id", "id must be a non-empty string", _CODE,
                                 _quote(value)))
        return None
    if len(value.encode()) > MAX_ID_BYTES:
        errors.append(EventError(i, "id", f"id is longer than {MAX_ID_BYTES} bytes", _CODE,
                                 _quote(value)))
        return None
    return value


def impression_times(body: bytes | bytearray, count: int, errors: list[EventError],
                     batch: Batch | None = None) -> list[float | None]:
    """Each impression's ``ts`` (None: absent or null). The scanner has accepted the body's
    syntax already and found where each ``ts`` is (``batch``, its parse): the values are
    read there in one compiled pass; a key spelled with escapes, or a value that is not a
    number in range (reported here), are read by msgspec."""
    # timed by arrival: no second decode (a key spelled with escapes is decoded, though)
    # a backslash first: one memchr; CPython's search for the two bytes took 0.5 ms a
    # 600 KB body (it tested every position)
    escapes = b"\\" in body and b"\\u" in body
    if b'"ts"' not in body and not escapes:
        return [None] * count
    starts = None if batch is None or escapes else batch.extra.get("ts_start")
    if isinstance(starts, np.ndarray) and batch is not None and batch.buf is not None:
        found = event_times(batch.buf, starts, 0.0, MAX_TS)
        if found is not None:
            return [None if t != t else t for t in found.tolist()]
    try:
        events = msgspec.json.decode(body, type=_StampedBody).events
    except msgspec.DecodeError:  # the scanner's errors are reported instead
        return [None] * count
    times = [e.ts for e in events]
    if all(type(t) is float and 0 <= t <= MAX_TS for t in times):  # NaN fails the range
        return times
    return [check_ts(i, t, errors) for i, t in enumerate(times)]


def feedback_events(body: bytes | bytearray, errors: list[EventError]
                    ) -> tuple[list[str], list[float | None], list[int]]:
    """(ids, ts, labels) of a feedback body; problems go to ``errors`` (index -1: the body),
    malformed JSON is a 400 problem."""
    try:  # the usual body, valid: checked by msgspec (a Python check an event cost more)
        valid = msgspec.json.decode(body, type=_ValidFeedbackBody).events
    except (msgspec.ValidationError, msgspec.DecodeError):
        pass  # decoded again below, to name the problems
    else:
        # only an id's length in bytes is left to check: the same errors, in the same
        # order, as the event-by-event check below would give
        given = [e.id for e in valid]
        check_ids(given, errors)
        return given, [e.ts for e in valid], [e.label for e in valid]
    try:
        events = msgspec.json.decode(body, type=_FeedbackBody).events
    except msgspec.ValidationError as exc:
        errors.append(EventError(-1, "events", f"the body must be {{\"events\": [{{\"id\": "
                                 f"...}}, ...]}}: {exc}", _CODE, None))
        return [], [], []
    except msgspec.DecodeError as exc:  # a 400, as the scanner's syntax errors are
        raise Problem(400, "malformed-json", f"malformed JSON: {exc}; nothing was joined"
                      ) from None
    ids: list[str] = []
    times: list[float | None] = []
    labels: list[int] = []
    for i, e in enumerate(events):
        id_ = check_id(i, e.id, errors)
        t = check_ts(i, e.ts, errors)
        label = e.label
        if isinstance(label, bool) or label not in (0, 1):
            errors.append(EventError(i, "label", "label must be 1 (a click) or 0 (closes the "
                                     "impression as a negative)", _CODE, _quote(label)))
            label = 1
        ids.append(id_ or "")
        times.append(t)
        labels.append(int(label))
    return ids, times, labels
